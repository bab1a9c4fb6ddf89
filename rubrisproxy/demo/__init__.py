"""The built-in demo: what ``twistd -n rubrisproxy`` proxies to when no backend is configured.

Two origins in the process serve a page, an HTTP API and a WebSocket; the page shows a WebSocket staying
open while the origin serving it is stopped and its session moves to the other one.
"""

from ._origin import RESTART_DELAY, DemoOrigin, OriginState
from ._service import ORIGIN_NAMES, DemoAdminService, DemoService, http_url
from ._site import MAX_BODY, demo_site
from ._stream import MAX_KIB

__all__ = [
    "MAX_BODY",
    "MAX_KIB",
    "ORIGIN_NAMES",
    "RESTART_DELAY",
    "DemoAdminService",
    "DemoOrigin",
    "DemoService",
    "OriginState",
    "demo_site",
    "http_url",
]
