"""Wire a :class:`ProxyConfig` into running services: frontends, backends, pool, demo origin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from .accepting import back_off_when_exhausted
from .accesslog import AccessLog, NullAccessLog
from .admin import RunningProxy, admin_site
from .backend import Backend, HealthChecker, Server
from .clients import ClientRegistry
from .config import (
    DEMO_ADMIN_LISTEN,
    BackendConfig,
    CommandLine,
    ConfigError,
    FrontendConfig,
    ListenerTLSConfig,
    ProxyConfig,
    build_objects,
    loopback_only,
)
from .demo import DemoAdminService, DemoService
from .frontend import (
    ClientConnection,
    ForwardProxy,
    Frontend,
    PeerSettings,
    connection_factory,
    drain,
    protocol_class,
)
from .lifecycle import HANDLER_INTERFACES, LifecycleHandlers
from .logoutput import FileOutput
from .origin import ConnectionPool, OriginConnector
from .reload import Reloader, ReloadOnHangup
from .routing import Router
from .startup import StartupReport
from .tls import Listener, ServerTLS, build_contexts, listeners
from .websocket import ResumeBudget

#: Access-log lines held before they are written out (besides once a second).
ACCESS_LOG_BATCH = 256

#: Listen backlog for TCP and TLS listeners that do not set one: Twisted's default (50) drops
#: connections when many clients arrive at once, as they do after a deploy.
DEFAULT_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=DEFAULT_BACKLOG`` added to a TCP or TLS endpoint that sets none."""
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


class ListeningService(service.Service):
    """Listens on endpoint strings with ``factory``; a port that cannot be bound ends the process, saying why.

    With ``tls``, every endpoint but ``ssl:`` ones serves TLS with those settings; an
    ``ssl:`` endpoint serves TLS with the files it names. ``key`` is where the endpoints
    are configured (``frontends.NAME``, ``admin``), for messages.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, label: str, factory: Any, endpoints: tuple[str, ...],
        tls: ListenerTLSConfig | None = None, key: str = "listen",
    ) -> None:
        self.reactor = reactor
        self.label = label
        self.factory = factory
        self.endpoints = endpoints
        self.tls = tls
        self.key = key
        self.ports: list[IListeningPort] = []
        self._ports_by: dict[str, IListeningPort] = {}  # by endpoint description
        self._shared_tls: ServerTLS | None = None  # the TLS of the endpoints under ``tls``, once one listens
        self._tls_by: dict[str, ServerTLS] = {}  # the TLS of each ssl: endpoint, by description
        self._listening_started = False
        self.setName(label.replace(" ", ":"))

    def privilegedStartService(self) -> None:
        # Bind before twistd drops privileges, as strports does.
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if not self._listening_started:
            self._listen()
        super().startService()

    def listen_on(self, endpoints: tuple[str, ...]) -> None:
        """Listen on ``endpoints`` from now on: new ones are opened, then dropped ones closed (their connections
        stay). If a new one cannot be bound, the ones just opened are closed again and nothing else changes."""
        previous, self.endpoints = self.endpoints, endpoints
        added = [e for e in endpoints if e not in previous]
        if self.running:
            try:
                self._listen(added)
            except SystemExit:
                for description in added:
                    self._close(description)
                self.endpoints = previous
                raise
        for description in previous:
            if description not in endpoints:
                self._close(description)

    def _close(self, description: str) -> None:
        self._tls_by.pop(description, None)
        port = self._ports_by.pop(description, None)
        if port is not None:
            self.ports.remove(port)
            port.stopListening()

    def use_factory(self, factory: Any) -> None:
        """Build new connections with ``factory`` from now on, on every endpoint; accepted ones stay as they are."""
        old, self.factory = self.factory, factory
        for port in self.ports:
            owner: Any = port  # what holds our factory: the port, or a factory wrapping it (TLS, PROXY)
            attribute = "factory"
            while owner is not None and getattr(owner, attribute, None) is not old:
                owner, attribute = getattr(owner, attribute, None), "wrappedFactory"
            if owner is None:
                self.log.warn("{label}: a listener keeps building connections as before", label=self.label)
            else:
                setattr(owner, attribute, factory)

    def _listen(self, endpoints: tuple[str, ...] | list[str] | None = None) -> None:
        self._listening_started = True
        for description in self.endpoints if endpoints is None else endpoints:
            failures: list[Any] = []
            try:
                plain, factory = self._factory_for(description)
                endpoint = serverFromString(self.reactor, with_backlog(plain))
            except Exception as e:  # noqa: BLE001 - checked at load, but a file an ssl: string or tls table names may have gone
                raise SystemExit(f"rubrisproxy: {self.label} cannot listen on {description}: {e}") from None
            d = endpoint.listen(factory)
            d.addCallbacks(self._listening, failures.append, callbackArgs=(description,))
            if failures:
                raise SystemExit(
                    f"rubrisproxy: {self.label} cannot listen on {description}: {failures[0].getErrorMessage()}"
                )
            d.addErrback(self._listen_failed, description)  # endpoints that answer later

    def _listeners(self) -> dict[str, Listener]:
        return dict(zip(self.endpoints, listeners(self.key, self.endpoints, self.tls)))

    def _factory_for(self, description: str) -> tuple[str, Any]:
        """The plain endpoint to listen on for ``description``, and the factory: ours, or TLS wrapping it."""
        each = self._listeners()[description]
        if each.tls is None:
            return each.endpoint, self.factory
        if each.tls is not self.tls:  # an ssl: string's own
            server_tls = self._tls_by[description] = ServerTLS(each.contexts())
        elif self._shared_tls is None:
            server_tls = self._shared_tls = ServerTLS(each.contexts())
        else:
            server_tls = self._shared_tls
        return each.endpoint, TLSMemoryBIOFactory(server_tls, False, self.factory)

    def reread_tls(self, tls: ListenerTLSConfig | None) -> Callable[[], str | None]:
        """Read the certificates of the TLS endpoints anew, ``tls`` being the new settings of those without their own;
        returns what puts them in use for new connections (and says so). Raises :class:`ConfigError`, changing
        nothing."""
        if (tls is None) != (self.tls is None):
            return lambda: f"{self.label}: turning TLS on or off takes effect at the next restart"
        shared = build_contexts(f"{self.key}.tls", tls) if tls is not None and self._shared_tls is not None else None
        by_endpoint = self._listeners()
        own = {description: by_endpoint[description].contexts() for description in self._tls_by if description in by_endpoint}

        def use() -> str | None:
            self.tls = tls
            if self._shared_tls is not None and shared is not None:
                self._shared_tls.use(shared)
            for description, contexts in own.items():
                self._tls_by[description].use(contexts)
            return f"{self.label}: certificates re-read" if shared is not None or own else None

        return use

    def _listening(self, port: IListeningPort, description: str) -> None:
        self.ports.append(port)
        self._ports_by[description] = port
        back_off_when_exhausted(port, self.reactor, f"{self.label} on {description}")
        address = port.getHost()
        self.log.info(
            "{label} listening on {description} ({host}:{port})", label=self.label, description=description,
            host=getattr(address, "host", "?"), port=getattr(address, "port", "?"),
        )

    def addresses(self) -> list[dict[str, str]]:
        """Each endpoint listened on, with the address it is bound to (a TCP port 0 shows the port chosen)."""
        bound = []
        for description, port in self._ports_by.items():
            host: Any = port.getHost()
            address = f"{host.host}:{host.port}" if hasattr(host, "port") else str(getattr(host, "name", host))
            bound.append({"endpoint": description, "address": address})
        return bound

    def _listen_failed(self, failure: Any, description: str) -> None:
        self.log.critical(
            "{label} cannot listen on {description}: {why}",
            label=self.label, description=description, why=failure.getErrorMessage(),
        )
        if self.reactor.running:
            self.reactor.stop()

    def stop_listening(self) -> defer.Deferred[Any]:
        ports, self.ports = self.ports, []
        self._ports_by.clear()
        self._tls_by.clear()
        self._shared_tls = None
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])

    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        return self.stop_listening()


class FrontendService(ListeningService):
    """Listens on a frontend's endpoints; on stop, stops accepting and drains."""

    def __init__(
        self, reactor: Any, frontend: Frontend, endpoints: tuple[str, ...], grace: float, spread: float = 0.0,
        close_code: int = 1001, protocol: type[ClientConnection] | None = None, tls: ListenerTLSConfig | None = None,
    ) -> None:
        super().__init__(reactor, f"frontend {frontend.name}", connection_factory(frontend, protocol), endpoints,
                         tls, f"frontends.{frontend.name}")
        self.frontend = frontend
        self.grace = grace
        self.spread = spread
        self.close_code = close_code

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        service.Service.stopService(self)
        yield self.stop_listening()
        frontend = self.frontend
        in_flight = sum(1 for c in frontend.connections if c.current is not None and c.relay is None)
        self.log.info(
            "frontend {name} stopped accepting; draining {count} connections ({busy} busy) and closing "
            "{websockets} WebSockets ({code}) over {spread:g}s, for up to {grace:g}s",
            name=frontend.name, count=len(frontend.connections), busy=in_flight, websockets=len(frontend.websockets),
            code=self.close_code, spread=self.spread, grace=self.grace,
        )
        yield drain(frontend, self.grace, self.spread, self.close_code)
        if frontend.clients is not None:
            frontend.clients.stop()
        self.log.info("frontend {name} stopped", name=frontend.name)


class HealthService(service.Service):
    """Runs the active health checks of every backend that has them (``checkers`` by backend; reloads change it)."""

    def __init__(self, checkers: dict[str, HealthChecker]) -> None:
        self.checkers = checkers

    def startService(self) -> None:
        super().startService()
        for checker in self.checkers.values():
            checker.start()

    def stopService(self) -> None:
        super().stopService()
        for checker in self.checkers.values():
            checker.stop()


class PoolService(service.Service):
    """Closes the idle origin connections on shutdown."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def stopService(self) -> None:
        super().stopService()
        self.pool.close_idle()


class AccessLogService(service.Service):
    """Writes out the access log's lines once a second on ``clock``; on stop, what it holds, then each line at
    once (connections still draining log too); the file is closed when the reactor has shut down."""

    def __init__(self, access_log: AccessLog, clock: Any) -> None:
        self.access_log = access_log
        self.clock = clock
        self._flusher = task.LoopingCall(access_log.flush)
        self._flusher.clock = clock
        self._close_at_shutdown = hasattr(clock, "addSystemEventTrigger")  # once, at the first start

    def startService(self) -> None:
        super().startService()
        self.access_log.start()
        self._flusher.start(1.0, now=False)
        if self._close_at_shutdown:
            self._close_at_shutdown = False
            self.clock.addSystemEventTrigger("after", "shutdown", self.access_log.close)

    def stopService(self) -> None:
        super().stopService()
        if self._flusher.running:
            self._flusher.stop()
        self.access_log.stop()


@dataclass(eq=False)
class ProxyParts:
    """The running proxy's pieces, as a reload finds and changes them."""

    log = Logger()

    reactor: Any
    root: service.MultiService
    config: ProxyConfig
    connector: OriginConnector
    pool: ConnectionPool
    access_log: AccessLog
    budget: ResumeBudget
    backends: dict[str, Backend] = field(default_factory=dict)
    frontends: dict[str, FrontendService] = field(default_factory=dict)
    frontend_list: list[Frontend] = field(default_factory=list)  # what the admin API and metrics read
    checkers: dict[str, HealthChecker] = field(default_factory=dict)

    def backend_for(self, config: FrontendConfig) -> Backend:
        """A frontend's default backend; a forward proxy's is its own, with no servers of its own."""
        if config.forward is not None:
            return Backend(BackendConfig(name=f"forward:{config.name}", retries=0), self.reactor)
        return self.backends[config.backend]

    def forward_rules(self, config: FrontendConfig) -> ForwardProxy | None:
        """A forward proxy's rules, with its parents' backend."""
        if config.forward is None:
            return None
        parents = self.backends.get(config.forward.parents) if config.forward.parents else None
        reachable = [e for e in config.listen if not loopback_only(e)]
        if reachable and not config.forward.clients and not config.forward.users:
            self.log.warn(
                "frontend {name}: a forward proxy open to any client on {endpoints}; set forward.clients or "
                "forward.users-file, or listen on loopback only", name=config.name, endpoints=", ".join(reachable))
        return ForwardProxy(config.forward, self.reactor, parents)

    def add_frontend(self, config: FrontendConfig, proxy: ProxyConfig) -> FrontendService:
        default = self.backend_for(config)
        frontend = Frontend(
            name=config.name, clock=self.reactor, timeouts=proxy.timeouts, limits=proxy.limits,
            backend=default, pool=self.pool, access_log=self.access_log,
            router=Router(config.routes, self.backends, default), resume_budget=self.budget,
            forward=self.forward_rules(config),
        )
        self.connection_settings(frontend, config)
        running = FrontendService(
            self.reactor, frontend, config.listen, proxy.shutdown_grace, proxy.shutdown_spread,
            proxy.shutdown_close_code, protocol_class(config), config.tls,
        )
        self.frontends[config.name] = running
        self.frontend_list.append(frontend)
        running.setServiceParent(self.root)  # starts it, if the proxy is running
        return running

    @staticmethod
    def connection_settings(frontend: Frontend, config: FrontendConfig) -> None:
        """Give ``frontend`` its connection settings: peers, per-connection limits, lifecycle handlers."""
        frontend.peers = PeerSettings.build(
            config.peers, config.trusted_proxies, config.proxy_protocol, config.forwarded_header)
        frontend.max_reads, frontend.max_writes = config.max_reads, config.max_writes
        if frontend.handler_configs != config.handlers or not config.handlers:
            # Rebuilt only when their configuration changed: a handler's state spans reloads.
            frontend.handlers = LifecycleHandlers.of(
                build_objects(f"frontends.{config.name}.handlers", config.handlers, HANDLER_INTERFACES))
            frontend.handler_configs = config.handlers
        clients = config.clients
        if clients is None:
            if frontend.clients is not None:
                frontend.clients.stop()
            frontend.clients = None
        elif frontend.clients is None:
            frontend.clients = ClientRegistry(config.name, clients.identify, clients.expire, frontend.clock,
                                              frontend.handlers.destroyed)
        else:  # a reload: the sessions stay
            registry = frontend.clients
            registry.identify, registry.expire, registry.handlers = (
                clients.identify, clients.expire, frontend.handlers.destroyed)

    def remove_frontend(self, name: str) -> None:
        running = self.frontends.pop(name)
        self.frontend_list.remove(running.frontend)
        running.disownServiceParent()


def build_service(
    config: ProxyConfig, reactor: Any = None, command_line: CommandLine | None = None
) -> service.MultiService:
    """The whole proxy as one MultiService, ready for twistd (reloadable when built from a config file)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    root = service.MultiService()
    StartupReport(config, command_line.config_path if command_line is not None else None).setServiceParent(root)
    connector = OriginConnector(reactor, config.timeouts.connect)
    parts = ProxyParts(
        reactor, root, config, connector, ConnectionPool(connector, reactor, config.pool, config.timeouts.server),
        make_access_log(config), ResumeBudget(config.limits.resume_buffer_total),
    )
    parts.backends.update(
        (name, Backend(backend_config, reactor, config.timeouts.queue)) for name, backend_config in config.backends.items()
    )
    if config.demo:
        used = [parts.backends[f.backend] for f in config.frontends if f.forward is None]
        for backend in used:
            backend.servers.clear()
        urls = tuple(_public_url(e, f.tls is not None) for f in config.frontends for e in f.listen)
        demo = DemoService(reactor, list({id(b): b for b in used}.values()), urls)
        demo.setServiceParent(root)
    for frontend_config in config.frontends:
        parts.add_frontend(frontend_config, config)
    parts.checkers.update(
        (name, HealthChecker(name, _servers_of(backend), backend.health, reactor, connector.connect))
        for name, backend in parts.backends.items()
        if backend.health.check != "none"
    )
    HealthService(parts.checkers).setServiceParent(root)
    reloader = Reloader(parts, command_line) if command_line is not None and command_line.config_path else None
    if command_line is not None:  # run by twistd: SIGHUP reloads, or is logged when there is no file to reload
        ReloadOnHangup(reloader, reactor).setServiceParent(root)
    if config.admin.listen or config.demo:
        running = RunningProxy(parts.frontend_list, parts.backends, parts.budget, parts.checkers,
                               reloader.reload if reloader is not None else None, reactor, _listening_of(parts))
        site = admin_site(running, config.admin.token, config.timeouts, reactor)
        if config.admin.listen:
            admin: Any = ListeningService(reactor, "admin", site, config.admin.listen, key="admin")
        else:  # the demo's stats page, on loopback
            admin = DemoAdminService(reactor, site, DEMO_ADMIN_LISTEN)
        admin.setServiceParent(root)
        if config.demo:
            demo.link_stats(admin)
    PoolService(parts.pool).setServiceParent(root)
    AccessLogService(parts.access_log, reactor).setServiceParent(root)
    root.parts = parts  # type: ignore[attr-defined]  # for tests and the reloader's callers
    return root


def _listening_of(parts: ProxyParts) -> Callable[[Frontend], list[dict[str, str]]]:
    def listening(frontend: Frontend) -> list[dict[str, str]]:
        running = parts.frontends.get(frontend.name)
        return running.addresses() if running is not None else []

    return listening


def _servers_of(backend: Backend) -> Callable[[], list[Server]]:
    return lambda: backend.servers


def make_access_log(config: ProxyConfig) -> AccessLog:
    """The access log the configuration asks for: off, to the twistd log, or to a file."""
    settings = config.access_log
    if not settings.enabled:
        return NullAccessLog()
    output = None if settings.path == "-" else FileOutput(settings.path)
    return AccessLog(settings.format, output, connections=settings.connections, batch=ACCESS_LOG_BATCH)


def _public_url(description: str, tls: bool = False) -> str:
    """A URL a person can open for a listen endpoint string (best effort)."""
    parts = description.split(":")
    kind = parts[0] if len(parts) > 1 else "tcp"
    port = parts[1] if len(parts) > 1 else parts[0]
    host = "127.0.0.1"
    for part in parts[2:]:
        if part.startswith("interface="):
            host = part.split("=", 1)[1] or host
    scheme = "https" if tls or kind in ("ssl", "tls") else "http"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"
