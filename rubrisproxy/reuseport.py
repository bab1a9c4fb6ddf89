"""TCP listeners that share their port with the other worker processes (``SO_REUSEPORT``): each worker binds its
own socket on the same address and the kernel spreads new connections between them by a hash of their addresses."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp


class ReusePort(tcp.Port):
    """A TCP listening port bound with ``SO_REUSEPORT``."""

    def createInternetSocket(self) -> socket.socket:
        s = super().createInternetSocket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s


class ReusePortReactor:
    """``reactor`` as an endpoint sees it, but TCP listeners are bound with ``SO_REUSEPORT``. Only the listeners
    are built through it (endpoint strings are parsed against it); everything else is the reactor's own."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> tcp.Port:
        listening = ReusePort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)
