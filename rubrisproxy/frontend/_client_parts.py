"""What the parts of a client connection share: its attributes, and the methods each part calls on the others.

:class:`~rubrisproxy.frontend.ClientConnection` is put together from parts, each a trait (``mypy_extensions.trait``):
where mypyc compiles them, the connection is one native class, its attributes read at fixed offsets from each
part's compiled methods; as Python, the traits are plain mixins. Each part derives from :class:`ClientParts`, which
declares the connection's attributes once and stands in for what the parts call on each other. Being every
part's base, it comes last in the connection's method order, so the part that defines a method is the one that
runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mypy_extensions import mypyc_attr, trait

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITCPTransport
    from twisted.logger import Logger

    from ..deadline import Deadline
    from ..flow import ProducerSlot, ReadGate, WriteWatch
    from ..http import HTTPError, RequestParser
    from ..lifecycle import ConnectionEnd, LifecycleHandlers, Termination
    from ..origin import OriginConnection
    from ..ratelimit import Entry
    from ..transfer import Carrier
    from ..websocket import Relay
    from ._context import Frontend
    from ._exchange import Exchange
    from ._lingering import Linger
    from ._phase import Phase
    from ._timeouts import Wait


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # a user's connection class derives from the parts
class ClientParts:
    """The attributes of a client connection and the methods its parts call on each other (each defined by one
    part, or by the connection itself)."""

    log: ClassVar[Logger]
    transport: ITCPTransport  # set by makeConnection before any other event
    connected: bool
    factory: Any  # the frontend's factory, where one built it
    frontend: Frontend
    handlers: LifecycleHandlers  # those it opened with hear of its end, whatever a reload changes
    proxied: bool  # a proxy speaking for clients, not the client itself
    trusted: bool  # a trusted proxy (a ProxiedConnection's may be)
    client_address: str
    secure: bool  # its transport provides ISSLTransport (read as it opened)
    _phase: Phase
    current: Exchange | None
    _queued: list[Exchange] | tuple[()]  # pipelined requests, oldest first
    _receiving: Exchange | None
    last_request: Exchange | None  # the request after which it closes (max-reads, max-writes)
    _limit_end: ConnectionEnd | None  # which limit made it the last
    _held_error: HTTPError | None
    _unparsed: bytes  # what the parser left when PIPELINE_DEPTH requests were waiting
    _advancing: bool  # in the loop that starts waiting requests
    _after_upgrade: bytes
    _ignored: int  # bytes read that no answered request uses: a close with any lingers
    parser: RequestParser
    gate: ReadGate
    download: ProducerSlot
    _output: WriteWatch
    _direct: bool
    _forwarding: bytes
    _deadline: Deadline
    _waiting: Wait | None
    _close_timer: Deadline | None
    _delivered: int  # bytes the client had taken when its timeout was last armed
    _linger: Linger | None
    relay: Relay | None  # what the connection became after an upgrade
    pinned: OriginConnection | None  # the server connection connection-oriented auth bound to it
    end_reason: ConnectionEnd | None
    limits_held: list[Entry] | None  # what the frontend's connection limits count it with, until it closes
    adopted: bool  # taken over from another process in a live upgrade (see frontend._moving)
    _carrier: Carrier | None  # a live upgrade's, while it waits to move
    opened_at: float
    ready_at: float
    requests: int
    responses: int
    bytes_in: int
    bytes_out: int
    upgraded_at: tuple[int, int]  # bytes_in and bytes_out where the upgraded protocol began

    def dataReceived(self, data: bytes) -> None:
        raise NotImplementedError

    def _to(self, phase: Phase) -> None:
        raise NotImplementedError

    def _parse(self, data: bytes) -> bool:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def drain(self) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        raise NotImplementedError

    def _wait(self, waiting: Wait | None) -> None:
        raise NotImplementedError

    def note_end(self, reason: ConnectionEnd) -> None:
        raise NotImplementedError

    def end(self, reason: ConnectionEnd) -> None:
        raise NotImplementedError

    def client_finished(self) -> None:
        raise NotImplementedError

    def _answer_error(self, error: HTTPError, termination: Termination | None = None) -> None:
        raise NotImplementedError

    def _move_if_idle(self) -> None:
        raise NotImplementedError

    def moved_away(self) -> None:
        raise NotImplementedError

    # mypyc builds no code that sets a float or tuple attribute from a trait's method: the parts set those through
    # the connection's class.

    def _set_ready_at(self, now: float) -> None:
        raise NotImplementedError

    def _set_opened_at(self, when: float) -> None:
        raise NotImplementedError

    def _set_upgraded_at(self, counts: tuple[int, int]) -> None:
        raise NotImplementedError
