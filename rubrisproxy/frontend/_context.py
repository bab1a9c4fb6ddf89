"""What every client connection of one frontend shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from ..accesslog import AccessLog
from ..backend import Backend
from ..config import HookConfig, Http2Config, Limits, Timeouts
from ..counters import Histogram
from ..deadline import QueuedTimer
from ..lifecycle import NO_HANDLERS, LifecycleHandlers
from ..origin import ConnectionPool
from ..routing import Router
from ..settings import LiveSettings
from ..websocket import BucketTimer, ResumeBudget
from ._peers import PeerSettings

if TYPE_CHECKING:
    from ..clients import ClientRegistry
    from ..websocket import Relay
    from ._connection import ClientConnection
    from ._forward import ForwardProxy
    from ._rules import FrontendRules


@dataclass(eq=False)
class Frontend:
    """A frontend at run time: its settings, where its requests go, and its live connections."""

    name: str
    clock: IReactorTime
    settings: LiveSettings  # the proxy's: its timeouts and limits, read as they are now
    backend: Backend
    pool: ConnectionPool
    access_log: AccessLog
    # Its connection settings, from its FrontendConfig (a reload sets them again: builder's connection_settings).
    # Every field is set by __init__: an attribute added after it would slow each read of a frontend's attributes
    # (its instance dict no longer shares its keys: 1% of the request path's instructions).
    peers: PeerSettings  # local clients, or proxies speaking for clients
    max_reads: int  # requests read per connection before it is closed (0: no limit)
    max_writes: int  # responses written per connection before it is closed
    router: Router | None = None  # None: every request goes to ``backend``
    connections: set[ClientConnection] = field(default_factory=set)
    websockets: set[Relay] = field(default_factory=set)  # live tunnels and sessions
    resume_budget: ResumeBudget = field(default_factory=ResumeBudget)  # shared by all frontends in a proxy
    draining: bool = False
    accepted: int = 0
    requests: int = 0
    terminations: dict[str, int] = field(default_factory=dict)  # requests (and WebSockets) by how they ended
    bytes_in: int = 0  # bytes read from clients by connections that have ended (see traffic())
    bytes_out: int = 0  # bytes written to them
    request_seconds: Histogram = field(default_factory=Histogram)  # from the request head to the end
    #: Answers sent to clients by (status class, "origin" or "proxy"): the proxy's own refusals and errors too.
    responses: dict[tuple[str, str], int] = field(default_factory=dict)
    connection_ends: dict[str, int] = field(default_factory=dict)  # connections by how they ended
    forward: ForwardProxy | None = None  # a forward proxy's rules; None for a reverse proxy
    handlers: LifecycleHandlers = NO_HANDLERS
    handler_configs: tuple[HookConfig, ...] = ()  # what ``handlers`` were built from
    clients: ClientRegistry | None = None  # its client sessions, when it tracks them
    rules: FrontendRules | None = None  # its HTTP rules and its routes'; None: none, and no unique-id header
    http2: Http2Config = field(default_factory=Http2Config)  # HTTP/2 on its listeners (a reload sets it again)
    #: Its WebSockets' idle deadlines, batched on its clock: one reactor call per 0.2 s, not one per WebSocket.
    websocket_timer: BucketTimer = field(init=False, repr=False)
    #: Its connections' HTTP timeouts, on its clock: a queue per length, not a reactor call per connection.
    timer: QueuedTimer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.router is None:
            self.router = Router((), {}, self.backend)
        self.websocket_timer = BucketTimer(self.clock)
        self.timer = QueuedTimer(self.clock)

    @property
    def timeouts(self) -> Timeouts:
        return self.settings.current.timeouts

    @property
    def limits(self) -> Limits:
        return self.settings.current.limits

    def traffic(self) -> tuple[int, int]:
        """Bytes read from and written to its clients' sockets, heads and frames included: the ended
        connections' and the open ones' so far (summed when asked, so the relaying path only counts)."""
        bytes_in, bytes_out = self.bytes_in, self.bytes_out
        for connection in self.connections:
            bytes_in += connection.bytes_in
            bytes_out += connection.bytes_out
        return bytes_in, bytes_out
