"""What an exchange needs of the client side it answers: a client connection, or an HTTP/2 stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..websocket import ClientSide

if TYPE_CHECKING:
    from ..flow import ProducerSlot, ReadGate
    from ..http import RequestHead
    from ..lifecycle import ConnectionEnd, Termination
    from ..origin import OriginConnection
    from ._context import Frontend
    from ._exchange_ending import ExchangeEnding


class Abortable(Protocol):
    def abortConnection(self) -> None: ...  # noqa: N802 (Twisted's name)


class UpgradedClient(ClientSide, Protocol):
    """The client side a WebSocket takes over."""

    upgraded_at: tuple[int, int]  # bytes_in and bytes_out where the WebSocket began

    def move_record(self, opened: bool, unsent: bytes) -> dict[str, Any]:
        """Its connection's life so far, for a live upgrade (see ``frontend._moving``)."""

    def websocket_left(self) -> None:
        """The WebSocket has ended and been logged: nothing of it is called any more (what it refers to may go)."""


class ExchangeClient(Protocol):
    """The client side of an :class:`~rubrisproxy.frontend.Exchange`: a
    :class:`~rubrisproxy.frontend.ClientConnection` (HTTP/1.1), or an
    :class:`~rubrisproxy.frontend._h2stream.H2Stream` (one HTTP/2 stream, which carries one request)."""

    frontend: Frontend
    gate: ReadGate  # pauses the request body's reading
    download: ProducerSlot  # the response's consumer: an origin's gate is its producer while a body flows
    pinned: OriginConnection | None  # the server connection connection-oriented auth bound it to

    @property
    def transport(self) -> Abortable: ...

    @property
    def proxied(self) -> bool:
        """From a proxy: its clients are known by what each request carries."""

    @property
    def secure(self) -> bool:
        """Over TLS."""

    @property
    def trusted(self) -> bool:
        """Its peer is a trusted proxy."""

    def write(self, data: bytes) -> None:
        """Send response bytes: an HTTP/1.1 response, as it would go on an HTTP/1.1 connection."""

    def client_of(self, head: RequestHead) -> str: ...

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes: ...

    def ends_with(self, exchange: ExchangeEnding) -> bool:
        """Whether nothing follows ``exchange`` on it (its response says Connection: close)."""

    def exchange_done(self, exchange: ExchangeEnding, keep_alive: bool, now: float, relayed: bool) -> None: ...

    def client_stalled(self, stalled: bool) -> None: ...

    def unpin(self) -> None: ...

    def end(self, reason: ConnectionEnd) -> None: ...

    def upgraded(self) -> UpgradedClient:
        """What a WebSocket upgrade takes over."""

    def websocket_ended(self, termination: Termination) -> None: ...
