"""rubrisproxy: a Twisted reverse/forward proxy for HTTP and long-lived WebSocket applications."""

__version__ = "0.1.0"
