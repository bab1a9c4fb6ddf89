"""What a client and an origin connection hand themselves over to after a 101."""

from __future__ import annotations

from typing import Protocol

from twisted.python.failure import Failure


class Relay(Protocol):
    """The two connections' events, once a WebSocket owns them (tunnel or session)."""

    def client_data(self, data: bytes) -> None: ...

    def client_fin(self) -> None:
        """The client half-closed (TCP FIN)."""

    def client_lost(self, reason: Failure) -> None: ...

    def origin_data(self, data: bytes) -> None: ...

    def origin_fin(self) -> None: ...

    def origin_lost(self, reason: Failure) -> None: ...

    def drain(self) -> None:
        """Close soon, cleanly (graceful shutdown)."""

    def abort(self) -> None:
        """Cut both connections now."""
