"""What a client connection hands itself over to after a 101 (an origin connection's: ``origin.OriginRelay``)."""

from __future__ import annotations

from typing import Protocol

from twisted.python.failure import Failure


class Relay(Protocol):
    """A client connection's events, once a WebSocket owns it (a tunnel or a session)."""

    def client_data(self, data: bytes) -> None: ...

    def client_fin(self) -> None:
        """The client half-closed (TCP FIN)."""

    def client_lost(self, reason: Failure) -> None: ...

    def drain(self, code: int = 1001) -> None:
        """Close soon, cleanly (graceful shutdown), a WebSocket with ``code`` where it can say one."""

    def abort(self) -> None:
        """Cut every connection now."""
