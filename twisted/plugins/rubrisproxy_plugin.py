"""twistd plugin dropin: ``twistd -n rubrisproxy``."""

from twisted.application.service import ServiceMaker

rubrisproxy = ServiceMaker(
    "rubrisproxy",
    "rubrisproxy.tap",
    "A reverse proxy for HTTP and WebSocket that keeps long-lived connections alive.",
    "rubrisproxy",
)
