"""The builder: a configuration applied to the running proxy's parts. Starting is applying one to an empty proxy;
a reload applies the new one to the running proxy, open connections untouched."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from .accesslog import AccessLog, NullAccessLog
from .backend import Backend, HealthChecker, Server, SharedBackends
from .clients import ClientRegistry, SessionSharing
from .cluster import ProxyReceiver, Siblings, shared_state
from .config import BackendConfig, FrontendConfig, ProxyConfig, build_objects, loopback_only
from .frontend import ForwardProxy, Frontend, FrontendRules, PeerSettings, connection_factory, protocol_class
from .lifecycle import HANDLER_INTERFACES, LifecycleHandlers
from .listening import FrontendService, ListenFailed, Shutdown
from .logoutput import FileOutput
from .origin import ConnectionPool, OriginConnector
from .routing import Router
from .settings import LiveSettings
from .sharing import StateTransport
from .websocket import BackendWebSocket, ResumeBudget


class HealthService(service.Service):
    """Runs the active health checks of every backend that has them (``checkers``, by backend name). Not
    ``probing`` (a worker process other than the first), its checkers never probe: their verdicts come from
    the worker that does; ``judged`` hears each verdict of a probing one."""

    def __init__(self, clock: Any, connect: Callable[[Server, Protocol], Deferred[Protocol]]) -> None:
        self.clock = clock
        self.connect = connect
        self.checkers: dict[str, HealthChecker] = {}
        self.probing = True
        self.judged: Callable[[str, Server], None] | None = None

    def startService(self) -> None:
        super().startService()
        if not self.probing:
            return
        for checker in self.checkers.values():
            checker.start()

    def stopService(self) -> None:
        super().stopService()
        for checker in self.checkers.values():
            checker.stop()

    def check(self, backend: Backend) -> None:
        """(Re)start the health checks of ``backend``, as its settings now say (running ones start at once)."""
        self.stop_checking(backend.name)
        if backend.health.check == "none":
            return
        checker = HealthChecker(backend.name, _servers_of(backend), backend.health, self.clock, self.connect)
        if self.judged is not None:
            checker.judged = partial(self.judged, backend.name)
        self.checkers[backend.name] = checker
        if self.running and self.probing:
            checker.start()

    def report_to(self, judged: Callable[[str, Server], None]) -> None:
        """Tell ``judged`` the backend's name and the server after each verdict, from now on."""
        self.judged = judged
        for name, checker in self.checkers.items():
            checker.judged = partial(judged, name)

    def watch(self, name: str, server: Server) -> None:
        """Check ``server``, just added to backend ``name``, if that backend is checked."""
        checker = self.checkers.get(name)
        if checker is not None:
            checker.watch(server)

    def stop_checking(self, name: str) -> None:
        checker = self.checkers.pop(name, None)
        if checker is not None:
            checker.stop()


def _servers_of(backend: Backend) -> Callable[[], list[Server]]:
    return lambda: backend.servers


@dataclass(eq=False)
class ProxyParts:
    """The running proxy's pieces, and the one place a configuration is applied to them (:meth:`apply`).

    ``settings.current`` is the configuration in force; the pool and the access log are
    built once, from the configuration the proxy starts with (changing them takes a restart).
    """

    log = Logger()

    reactor: Any
    root: service.MultiService  # where frontends' services go
    settings: LiveSettings
    pool: ConnectionPool
    access_log: AccessLog
    budget: ResumeBudget
    backends: dict[str, Backend] = field(default_factory=dict)
    frontends: dict[str, FrontendService] = field(default_factory=dict)
    frontend_list: list[Frontend] = field(default_factory=list)  # what the admin API and metrics read
    transport: StateTransport | None = None  # with a cluster: where shared state goes and comes from
    node: str = ""  # with a cluster: this proxy's name in it
    health: HealthService = field(init=False)
    shared: SharedBackends | None = field(init=False, default=None)  # with a cluster: the proxy's side of it

    def __post_init__(self) -> None:
        self.health = HealthService(self.reactor, self.pool.connector.connect)
        if self.transport is not None:
            self.shared = SharedBackends(self.backends, self.transport, self.reactor)
            self.transport.attach(ProxyReceiver(self.shared, self.frontend_list))

    @classmethod
    def empty(cls, reactor: Any, root: service.MultiService, config: ProxyConfig,
              siblings: Siblings | None = None) -> ProxyParts:
        """A proxy with nothing in it yet, its pool and access log as ``config`` says: :meth:`apply` starts it.
        Its state is shared as ``config`` says (``[cluster]``), or with its ``siblings`` (a worker's)."""
        settings = LiveSettings()
        pool = ConnectionPool(OriginConnector(reactor, settings), reactor, config.pool, settings)
        transport, node = shared_state(reactor, config, siblings)
        return cls(reactor, root, settings, pool, make_access_log(config), ResumeBudget(settings), transport=transport,
                   node=node)

    @property
    def config(self) -> ProxyConfig:
        return self.settings.current

    @property
    def checkers(self) -> dict[str, HealthChecker]:
        return self.health.checkers

    def apply(self, new: ProxyConfig) -> list[str]:
        """Make the proxy what ``new`` describes, without touching open connections; the changes made.

        Applied: timeouts and limits; backends added and removed; each backend's settings and
        servers (added, removed and drained, re-weighted), keeping health and stick tables;
        frontends added and removed, their routes, default backend, listen endpoints,
        connection settings and handlers, and (for connections accepted from then on) their
        peers, protocol class and TLS certificates (re-read from their files). What may fail
        (new backends and their hooks, certificates) is built first: a :class:`ConfigError`
        changes nothing. A frontend that cannot listen is reported in the changes.
        """
        old = self.settings.current
        added = {name: self.new_backend(config) for name, config in new.backends.items() if name not in self.backends}
        certificates = {config.name: running.reread_tls(config.tls) for config in new.frontends
                        if (running := self.frontends.get(config.name)) is not None}
        self.settings.current = new
        changes = ["timeouts and limits"] if (old.timeouts, old.limits) != (new.timeouts, new.limits) else []
        for name, backend in added.items():
            self.backends[name] = backend
            self.health.check(backend)
            changes.append(f"backend {name} added")
        for name, config in new.backends.items():
            previous = old.backends.get(name)
            if name in added or config == previous:
                continue
            backend = self.backends[name]
            for server in backend.reconfigure(config):
                self.health.watch(name, server)
            if previous is None or config.health != previous.health:
                self.health.check(backend)
            changes.append(f"backend {name} reconfigured")
        self._frontends(old, new, changes, certificates)
        for name in [name for name in self.backends if name not in new.backends]:
            backend = self.backends.pop(name)
            for server in list(backend.servers):
                backend.remove_server(server.name)
            self.health.stop_checking(name)
            changes.append(f"backend {name} removed")
        return changes

    def _frontends(
        self, old: ProxyConfig, new: ProxyConfig, changes: list[str], certificates: dict[str, Callable[[], str | None]]
    ) -> None:
        old_frontends = {f.name: f for f in old.frontends}
        for name in [name for name in self.frontends if name not in {f.name for f in new.frontends}]:
            self.remove_frontend(name)  # first, so its endpoints are free for the frontends that take them
            changes.append(f"frontend {name} removed")
        for config in new.frontends:
            running = self.frontends.get(config.name)
            if running is None:
                try:
                    self.add_frontend(config, new)
                    changes.append(f"frontend {config.name} added")
                except ListenFailed as e:  # everything else still applies
                    self.log.error("reload: {error}", error=str(e))
                    changes.append(f"frontend {config.name} NOT listening: {e}")
                continue
            frontend = running.frontend
            if config.forward is None:
                frontend.backend = self.backends[config.backend]
            frontend.router = Router(config.routes, self.backends, frontend.backend)  # also when only backends changed
            frontend.rules = FrontendRules.of(config, self.reactor, frontend.rules)  # the same routes' indexes
            frontend.forward = self.forward_rules(config)
            previous = old_frontends.get(config.name)
            self.connection_settings(frontend, config)
            if previous is not None and (previous.peers, previous.protocol) != (config.peers, config.protocol):
                running.use_factory(connection_factory(frontend, protocol_class(config)))
                changes.append(f"frontend {config.name}: new connections are {config.peers}"
                               + (f" ({config.protocol})" if config.protocol else ""))
            said = certificates[config.name]()  # before listen_on: new endpoints serve the new certificates
            if said:
                changes.append(said)
            try:
                running.listen_on(config.listen)
            except ListenFailed as e:
                self.log.error("reload: {error}; it keeps its listeners", error=str(e))
                changes.append(f"frontend {config.name} keeps its listeners: {e}")
            if config != previous:
                changes.append(f"frontend {config.name} reconfigured")

    def new_backend(self, config: BackendConfig) -> Backend:
        """A backend as ``config`` describes it, reading the proxy's settings, with its WebSocket pieces."""
        return Backend(config, self.reactor, self.settings, partial(BackendWebSocket, self.reactor), self.transport)

    def new_frontend(self, config: FrontendConfig) -> Frontend:
        """A frontend as ``config`` describes it (not listening): its default backend, routes and connection
        settings; a forward proxy's default backend is its own, with no servers of its own."""
        default = (self.new_backend(BackendConfig(name=f"forward:{config.name}", retries=0))
                   if config.forward is not None else self.backends[config.backend])
        frontend = Frontend(
            name=config.name, clock=self.reactor, settings=self.settings, backend=default, pool=self.pool,
            access_log=self.access_log, peers=peer_settings(config), max_reads=config.max_reads,
            max_writes=config.max_writes, router=Router(config.routes, self.backends, default),
            resume_budget=self.budget, forward=self.forward_rules(config),
            rules=FrontendRules.of(config, self.reactor),
        )
        self.connection_settings(frontend, config)
        return frontend

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
        """A new frontend, listening (at once, if the proxy is running: :class:`ListenFailed` if it cannot)."""
        frontend = self.new_frontend(config)
        running = FrontendService(self.reactor, frontend, config, Shutdown.of(proxy), protocol_class(config),
                                  reuse_port=proxy.process.workers > 1)
        self.frontends[config.name] = running
        self.frontend_list.append(frontend)
        try:
            running.setServiceParent(self.root)  # starts it, if the proxy is running
        except ListenFailed:
            self.remove_frontend(config.name)
            raise
        return running

    def remove_frontend(self, name: str) -> None:
        running = self.frontends.pop(name)
        self.frontend_list.remove(running.frontend)
        running.disownServiceParent()

    def factory_of(self, name: str) -> Any:
        """The factory frontend ``name`` builds its connections with (None: there is no such frontend)."""
        running = self.frontends.get(name)
        return running.factory if running is not None else None

    def addresses(self, frontend: Frontend) -> list[dict[str, str]]:
        """Where ``frontend`` listens: each endpoint and the address it is bound to."""
        running = self.frontends.get(frontend.name)
        return running.addresses() if running is not None else []

    def connection_settings(self, frontend: Frontend, config: FrontendConfig) -> None:
        """Give ``frontend`` its connection settings: peers, per-connection limits, lifecycle handlers."""
        frontend.peers = peer_settings(config)
        frontend.max_reads, frontend.max_writes = config.max_reads, config.max_writes
        frontend.http2 = config.http2
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
            frontend.clients = ClientRegistry(config.name, clients, frontend.clock, frontend.handlers.destroyed)
            if self.transport is not None:
                frontend.clients.sharing = SessionSharing(self.transport, self.node)
        else:  # a reload: the sessions stay
            frontend.clients.settings, frontend.clients.handlers = clients, frontend.handlers.destroyed


def peer_settings(config: FrontendConfig) -> PeerSettings:
    """Who a frontend's peers are, as ``config`` says."""
    return PeerSettings.build(config.peers, config.trusted_proxies, config.proxy_protocol, config.forwarded_header)


def make_access_log(config: ProxyConfig) -> AccessLog:
    """The access log the configuration asks for: off, to the twistd log, or to a file."""
    settings = config.access_log
    if not settings.enabled:
        return NullAccessLog()
    output = None if settings.path == "-" else FileOutput(settings.path)
    return AccessLog(settings.format, output, connections=settings.connections)
