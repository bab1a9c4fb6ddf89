"""A backend: its servers, how a request gets one, and the queue when all are full."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger

from ..config import BackendConfig, ServerConfig, WebSocketConfig
from ..counters import Histogram
from ..http import Headers, spellings
from ..settings import LiveSettings
from ..sharing import Kind, StateTransport
from ._actions import ServerActions
from ._balance import IBalancer, balancer_for
from ._engineio import EngineIOStickiness, is_engineio
from ._login import Login
from ._queue import Queued, Waiter, WaitQueue
from ._server import USABILITY, Server
from ._shared import ShareAs, stick_store
from ._sidprefix import SidPrefix
from ._sticky import CookieStickiness, ExpiringStore, TableStickiness, key_for, learned_key


class WebSocketPieces(Protocol):
    """A backend's WebSocket pieces, built above it (``websocket.BackendWebSocket``): the user's hooks, and its
    session legs' factories."""

    hooks: tuple[Any, ...]

    def leg_factories(self) -> Any: ...


#: Builds a backend's WebSocket pieces from its configuration, given those it had (:data:`NO_WEBSOCKET` at first).
WebSocketBuilder = Callable[[BackendConfig, WebSocketPieces], WebSocketPieces]


class _NoWebSocket:
    """The WebSocket pieces of a backend built without a :data:`WebSocketBuilder`: no hooks, no session mode."""

    hooks: tuple[Any, ...] = ()

    def leg_factories(self) -> Any:
        raise RuntimeError("this backend was built without WebSocket support")


NO_WEBSOCKET: WebSocketPieces = _NoWebSocket()


QUEUED = object()
#: Every frontend drops a client's session header under its default name (and its other spellings).
_DEFAULT_SESSION_HEADER = spellings((WebSocketConfig().session_header.encode(),))
#: How long an Engine.IO sid stays known after its last request (a live session polls or pings far sooner).
ENGINEIO_EXPIRE = 300.0
#: How many polling sessions' records (:class:`~rubrisproxy.backend._engineio.PolledSession`) are kept at once.
POLLED_SESSIONS = 10_000
"""What :meth:`Backend.assign` returns when the request waits for a free server."""
#: What :meth:`Backend.assign` returns, when asked, for a request of an Engine.IO session whose server is gone.
SESSION_GONE = object()
#: What :meth:`Backend.assign` returns for a client's request whose sid it is asking the cluster about: the request
#: hears ``looked_up()`` once answered, and is assigned again.
LOOKING = object()


class Backend(ServerActions):
    """A named group of servers that requests are balanced over.

    Only servers that are up take new requests; backup servers only when no normal
    server is up. A server at its ``maxconn`` takes no more: when every usable server
    is full, requests wait in order in the backend's queue, up to ``timeout queue``,
    and the oldest that can take a free slot does. A request that persistence (a cookie,
    a stick table, a learned Engine.IO sid) sends to a full server waits for that server
    rather than go to another, where its session is unknown; if that server stops taking
    requests meanwhile, it is balanced like any other. A learned Engine.IO sid's requests
    go to its server even while it drains, and are answered as an unknown session once it
    is down or removed (:meth:`assign`).
    """

    def __init__(
        self, config: BackendConfig, clock: IReactorTime | None = None, settings: LiveSettings | None = None,
        websocket: WebSocketBuilder | None = None, sharing: StateTransport | None = None,
    ) -> None:
        self.name = config.name
        self.sharing = sharing  # where its stick table's and learned sids' new entries go, with a cluster
        self.clock = clock
        self.settings = settings or LiveSettings()  # the proxy's: ``timeouts.queue``
        self._build_websocket = websocket
        self._websocket = NO_WEBSOCKET
        self.resumes = 0  # session-mode WebSockets moved to another server
        self.resume_failures: dict[str, int] = {}  # sessions that could not move, by reason
        self.messages_lost = 0  # client messages held by a session that ended before a server took them
        self.resume_seconds = Histogram()  # how long moves took
        self.connect_seconds = Histogram()  # how long new server connections took to open
        self.request_seconds = Histogram()  # requests routed here: from the request head to the end
        self.responses: dict[str, int] = {}  # answers to requests routed here, the proxy's own included, by class
        self.log = Logger(namespace=__name__)  # named: compiled, it has no frame for Logger to read it from
        self.table: TableStickiness | None = None
        self.config = config
        self._settings(config, None)
        self.servers: list[Server] = []
        self._queue = WaitQueue()
        self._dispatching = self._redispatch = False
        self.queued_total = 0
        self._usable: list[Server] = []
        self._usable_stamp: tuple[int, int] = (-1, -1)
        self._limited = False  # some server has a maxconn
        for server_config in config.servers:
            self.add_server(server_config)

    def _settings(self, config: BackendConfig, previous: BackendConfig | None) -> None:
        """Take ``config``'s settings (not its servers); a stick table whose settings stay is kept."""
        if self._build_websocket is not None:
            self._websocket = self._build_websocket(config, self._websocket)
        self.websocket_hooks = self._websocket.hooks
        self.retries = config.retries
        self.redispatch = config.redispatch
        self.slow_start = config.slow_start
        self.balancer: IBalancer = balancer_for(config.balance, f"backends.{config.name}.balance")
        self.passive = config.passive
        self.health = config.health
        if previous is None or previous.websocket != config.websocket:
            self.websocket = config.websocket
            # A client's copy of a session header named otherwise: dropped from requests routed here.
            self.session_drops = spellings((config.websocket.session_header.encode(),)) - _DEFAULT_SESSION_HEADER
        self.cookie = CookieStickiness(config.cookie) if config.cookie else None
        if previous is None or previous.stick != config.stick:
            self.table = None
            if config.stick is not None:
                store = stick_store(self.clock or Clock(), config.stick.expire, config.stick.size,
                                    self._share_as(Kind.STICK))
                learn = learned_key(config.stick.learn) if config.stick.learn else None
                self.table = TableStickiness(store, key_for(config.stick.on), learn)
        self.sticky = self.cookie is not None or self.table is not None
        if previous is None or previous.auth != config.auth:  # what servers asked is kept while the login stays
            self.login: Login | None = Login(config.auth) if config.auth is not None else None
        if not config.engineio_sticky:
            self.engineio: EngineIOStickiness | None = None
        elif previous is None or not previous.engineio_sticky or previous.engineio_sid_prefix != config.engineio_sid_prefix:
            # With the sid prefix, the sid names its server: learned sids are not shared.
            clock, prefixed = self.clock or Clock(), config.engineio_sid_prefix
            self.engineio = EngineIOStickiness(
                stick_store(clock, ENGINEIO_EXPIRE, 100_000, None if prefixed else self._share_as(Kind.SID)),
                ExpiringStore(clock, ENGINEIO_EXPIRE, POLLED_SESSIONS), SidPrefix(self.name) if prefixed else None,
                self._server_names)

    def _server_names(self) -> list[str]:
        return [server.name for server in self.servers]

    def _share_as(self, kind: Kind) -> ShareAs | None:
        return ShareAs(self.sharing, kind, self.name) if self.sharing is not None else None

    def reconfigure(self, config: BackendConfig) -> list[Server]:
        """Take a reloaded ``config`` in place: settings, and servers added, changed or removed.

        Servers are matched by name; one whose address changed is replaced. Removed
        servers are drained (their sessions move). Health and the stick table stay.
        Returns the servers added, for their health checks.
        """
        previous = self.config
        self._settings(config, previous)
        self.config = config
        wanted = {server.name: server for server in config.servers}
        for server in list(self.servers):
            new = wanted.get(server.name)
            if new is None or (new.host, new.port, new.tls) != (server.config.host, server.config.port, server.config.tls):
                self.remove_server(server.name)
        added: list[Server] = []
        for name, new in wanted.items():
            kept = self.server_named(name)
            if kept is None:
                added.append(self.add_server(new))
                self.log.info("server {backend}/{server} ADDED at {address}", backend=self.name, server=name,
                              address=f"{new.host}:{new.port}")
            elif new != kept.config:
                kept.config = new
                kept.set_weight(new.weight)
            if kept is not None:
                kept.slow_start = config.slow_start
                kept.set_tls(config.tls)
        self._limited = any(server.maxconn > 0 for server in self.servers)
        self._server_changed()  # a higher maxconn may take waiting requests
        return added

    def add_server(self, config: ServerConfig) -> Server:
        """Add a server (at start, or at run time); raises ValueError if the name is taken."""
        if self.server_named(config.name) is not None:
            raise ValueError(f"backend {self.name} already has a server named {config.name!r}")
        server = Server(config, self.name, clock=self.clock, slow_start=self.slow_start, tls=self.config.tls)
        server.on_change = self._server_changed  # a server that comes up or goes away may serve the queue
        self.servers.append(server)
        self._limited = self._limited or config.maxconn > 0
        return server

    def leg_factories(self) -> Any:
        """The Autobahn factories for this backend's session-mode WebSockets (``websocket.LegFactories``)."""
        return self._websocket.leg_factories()

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def sticky_server(self, waiter: Waiter) -> Server | None:
        """The server this request's cookie or stick-table entry names, if any."""
        name = None
        if self.cookie is not None:
            name = self.cookie.server_for(waiter.head)
        if name is None and self.table is not None:
            name = self.table.server_for(waiter.head, waiter.client_address_for_balancing())
        return self.server_named(name) if name is not None else None

    def sticky_response(self, headers: Headers, waiter: Waiter, server: Server) -> Headers:
        """Set or rewrite the stickiness cookie, and remember the request's key, for ``server``'s response."""
        if self.cookie is not None:
            headers = self.cookie.response_headers(headers, server.name, self.cookie.server_for(waiter.head))
        if self.table is not None:
            self.table.remember(waiter.head, waiter.client_address_for_balancing(), headers, server.name)
        return headers

    def usable(self, exclude: frozenset[Server] = frozenset()) -> list[Server]:
        """Servers that may take new requests: normal ones that are up, else backups that are up."""
        if not exclude:
            stamp = (USABILITY.value, len(self.servers))
            if stamp != self._usable_stamp:
                self._usable, self._usable_stamp = self._compute_usable(exclude), stamp
            return self._usable
        return self._compute_usable(exclude)

    def _compute_usable(self, exclude: frozenset[Server]) -> list[Server]:
        taking = [s for s in self.servers if s.up and not s.draining and s.weight > 0 and s not in exclude]
        normal = [s for s in taking if not s.backup]
        return normal or [s for s in taking if s.backup]

    def assign(
        self, waiter: Waiter, exclude: frozenset[Server] = frozenset(), gone: object = None,
    ) -> Server | object | None:
        """A server for ``waiter`` with its slot taken, :data:`QUEUED`, or None if no server can take it.

        A request of an Engine.IO session learned on a server goes to that server. ``gone``, when given, asks
        for the rules of a client's own request: it goes there while the server is up, draining or not (it
        alone knows the session), and ``gone`` is returned once the server is down, removed or excluded, the
        sid forgotten, as no other server knows it. Without ``gone`` (a session's resume), a request whose
        server cannot take it is balanced like any other.
        """
        candidates = self.usable(exclude)
        if self.engineio is not None and is_engineio(waiter.head):
            chosen = self._assign_learned(self.engineio, waiter, candidates, exclude, gone)
            if chosen is not None:
                return chosen
        if not candidates:
            return None
        if len(candidates) == 1 and not self._limited and not self.sticky and not self._queue:
            return self.take(candidates[0])  # the common single-server case, without the balancer
        free = [s for s in candidates if not s.full] if self._limited else candidates
        persisted = self.sticky_server(waiter) if self.sticky else None
        if persisted is not None and persisted in candidates:
            return self.take(persisted) if persisted in free else self._enqueue(waiter, exclude, persisted)
        if free and not (self._queue and self._queue.blocks(free, self.usable)):
            return self._take(free, waiter)
        return self._enqueue(waiter, exclude, None)

    def _assign_learned(
        self, engineio: EngineIOStickiness, waiter: Waiter, candidates: list[Server], exclude: frozenset[Server],
        gone: object,
    ) -> Server | object | None:
        """:meth:`assign` for an Engine.IO request: its learned server's slot, QUEUED or ``gone``; None to
        balance it."""
        name = engineio.server_for(waiter.head)
        if name is None:
            asked = gone is not None and engineio.shared and engineio.look_up(waiter.head, waiter.looked_up)
            return LOOKING if asked else None
        learned = self.server_named(name)
        if learned is not None and (learned in candidates or (gone is not None and learned.up and learned not in exclude)):
            return self._enqueue(waiter, exclude, learned) if learned.full else self.take(learned)
        if gone is not None:
            engineio.forget(waiter.head)
        return gone

    def session_lost(self, waiter: Waiter, server: Server) -> bool:
        """A connect to ``server`` failed for ``waiter``: True if ``waiter`` belongs to an Engine.IO session
        learned on ``server``, now forgotten (a server refusing connections has lost its sessions, and no other
        knows them)."""
        engineio = self.engineio
        if engineio is None or not is_engineio(waiter.head) or engineio.server_for(waiter.head) != server.name:
            return False
        engineio.forget(waiter.head)
        return True

    def _enqueue(self, waiter: Waiter, exclude: frozenset[Server], server: Server | None) -> object | None:
        if self.clock is None:
            return None
        timeout = self.settings.current.timeouts.queue
        self._queue.add(waiter, self.clock.callLater(timeout, self._queue_expired, waiter), exclude, server)
        self.queued_total += 1
        return QUEUED

    def report_error(self, server: Server, why: str) -> None:
        """A connection error (or a 5xx, if counted) on ``server``: enough in a row eject it for a cool-off."""
        passive = self.passive
        if not passive.errors or server.ejected:
            return
        server.consecutive_errors += 1
        if server.consecutive_errors >= passive.errors and self.clock is not None:
            server.ejected = True
            server.set_up(False)
            self.log.warn(
                "server {backend}/{server} is DOWN for {cool_off:g}s: {count} errors in a row, the last: {why}",
                backend=self.name, server=server.name, cool_off=passive.cool_off,
                count=server.consecutive_errors, why=why,
            )
            self.clock.callLater(passive.cool_off, self._readmit, server)

    def report_response(self, server: Server, status: int) -> None:
        """A response from ``server``: a 5xx is an error if they count (``passive.on_5xx``), any other answer
        ends its run of errors. (Its callers skip the call when neither applies: nothing to do.)"""
        if status >= 500 and self.passive.on_5xx:  # the server answers, badly
            self.report_error(server, f"HTTP {status}")
        elif server.consecutive_errors:
            server.consecutive_errors = 0

    def _readmit(self, server: Server) -> None:
        server.ejected = False
        server.consecutive_errors = 0
        if server in self.servers:
            server.set_up(True)
            self.log.info("server {backend}/{server} is UP after its cool-off", backend=self.name, server=server.name)

    def take(self, server: Server) -> Server:
        """Take a slot on ``server``."""
        server.take_slot()
        return server

    def release(self, server: Server) -> None:
        """``server`` finished a request: its slot goes to the oldest waiting request that can take it."""
        server.active -= 1
        self._server_changed()

    def dispatch(self) -> None:
        """Give free slots to waiting requests, oldest first: after a slot frees, or a server changes state."""
        if self._dispatching:  # a request dequeued here failed at once and released its slot
            self._redispatch = True
            return
        self._dispatching = True
        try:
            self._redispatch = True
            while self._redispatch:
                self._redispatch = False
                self._queue.unpin(self._takes_requests)
                while (found := self._queue.next(self._free_for)) is not None:
                    entry, free = found
                    entry.waiter.dequeued(self._take(free, entry.waiter))
        finally:
            self._dispatching = False

    def _takes_requests(self, server: Server) -> bool:
        return server in self.usable()

    def _free_for(self, entry: Queued) -> list[Server]:
        return [s for s in self.usable(entry.exclude) if not s.full]

    def _server_changed(self) -> None:
        if self._queue:
            self.dispatch()

    def _take(self, free: list[Server], waiter: Waiter) -> Server:
        return self.take(self.balancer.choose(free, waiter.head, waiter.client_address_for_balancing()))

    def _queue_expired(self, waiter: Waiter) -> None:
        self._queue.remove(waiter)
        if not waiter.finished:
            waiter.queue_timed_out()
