"""What a WebSocket needs of the request that upgraded, declared here and provided by the client side.

A tunnel or a session is handed an :class:`UpgradeHandoff` at the backend's 101 (a forward proxy's
CONNECT tunnel too): it reads the request, the server and the settings through it, takes over the
client's connection through :attr:`UpgradeHandoff.client`, and reports its end with
:meth:`UpgradeHandoff.ended`, which counts and logs it as the request's end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime, ITCPTransport

    from ..backend import Backend, Server
    from ..config import Timeouts
    from ..flow import ProducerSlot, ReadGate
    from ..http import HTTPError, RequestHead
    from ..lifecycle import Termination
    from ..origin import ConnectionPool
    from ._handshake import Upgrade
    from ._relay import Relay
    from ._resume import ResumeBudget


class ByteMeter(Protocol):
    """What counts the bytes a session's leg writes itself (``_Leg.meter``): the client's connection (its
    ``bytes_out``) for the client leg, the server (its ``bytes_in``) for a backend leg. Plain attributes a
    leg adds to, not a method: a call per frame would cost more than the addition."""

    bytes_in: int
    bytes_out: int


class ClientSide(ByteMeter, Protocol):
    """The client's connection, as the WebSocket that takes it over sees it.

    ``bytes_in`` and ``bytes_out`` count every byte read from and written to its socket; a leg that
    writes frames itself adds what it wrote (see :class:`ByteMeter`).
    """

    @property
    def transport(self) -> ITCPTransport:
        """Its socket's (or an HTTP/2 stream as one)."""

    gate: ReadGate  # pauses the client's reads
    download: ProducerSlot  # the producer its transport pauses while its buffer is full

    def write(self, data: bytes) -> None: ...

    def take_over(self, relay: Relay) -> bytes:
        """Hand every later read, half-close and loss to ``relay``; the bytes read after the request."""

    def websocket_ended(self, termination: Termination) -> None:
        """The WebSocket ended with ``termination``: the connection's end, before its TCP close."""

    def moved_away(self) -> None:
        """The connection was carried to another process (its socket let go of already): end here uncounted."""


class UpgradeHandoff(Protocol):
    """The upgraded request: what a :class:`~rubrisproxy.websocket.Tunnel` or a
    :class:`~rubrisproxy.websocket.WebSocketSession` reads of it and tells it."""

    clock: IReactorTime
    head: RequestHead
    client_address: str
    #: The checked upgrade (None for a forward proxy's CONNECT tunnel).
    upgrade: Upgrade | None
    #: Session mode: the proxy's own key for the backend handshake, and the session's id.
    websocket_key: bytes | None
    session_id: str

    @property
    def idle_clock(self) -> IReactorTime:
        """The clock of the WebSocket's idle deadline: a batched one its frontend's WebSockets share (late by at
        most a fraction of a second), so an idle WebSocket keeps no reactor call of its own."""

    @property
    def client(self) -> ClientSide:
        """The client's connection, for the WebSocket to take over."""

    @property
    def server(self) -> Server | None:
        """The server the WebSocket is on now."""

    @property
    def backend(self) -> Backend | None: ...

    @property
    def timeouts(self) -> Timeouts: ...

    @property
    def pool(self) -> ConnectionPool: ...

    @property
    def resume_budget(self) -> ResumeBudget: ...

    @property
    def websockets(self) -> set[Relay]:
        """The frontend's live WebSockets, which drain and shutdown close."""

    def age(self) -> float:
        """Seconds since the request's head was read."""

    def client_handshake(self) -> bytes:
        """The client's upgrade request as a session's own WebSocket server reads it: its key, version, offered
        (allowed) subprotocols, extension offers and origin, as the client sent them."""

    def release_server(self) -> None:
        """The WebSocket is leaving its server: its slot there is free for others."""

    def switch_server(self, server: Server) -> None:
        """The WebSocket moved to ``server``, whose slot it already took."""

    def fail(self, error: HTTPError, termination: Termination) -> None:
        """Answer the client's request with ``error`` (the client is still on HTTP)."""

    def ended(self, termination: Termination) -> None:
        """The WebSocket has ended: free its server slot, count and log it."""

    @property
    def frontend(self) -> str:
        """The frontend's name."""

    def carried(self) -> dict[str, object]:
        """What the request's one access-log line needs, for the process a session is carried to (JSON-encodable:
        the line's fields so far, when the request began, the bytes crossed since the 101)."""

    def move_record(self) -> dict[str, Any]:
        """The request a WebSocket moving to another process came from (a live upgrade): its line, its client,
        its timings and counts, its backend and server, where its client's bytes began."""

    def moved(self) -> None:
        """The WebSocket was carried to another process (its sockets let go of already, without a shutdown), which
        counts and logs it when it ends: its server slot freed, ended here unlogged."""
