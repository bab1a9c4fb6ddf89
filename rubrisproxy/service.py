"""The proxy as twistd runs it: a :class:`ProxyConfig` built into one service tree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from twisted.application import service
from twisted.internet import task

from .accesslog import AccessLog
from .admin import RunningProxy, admin_site
from .builder import ProxyParts
from .cluster import RedisTransport, Siblings, TransportService
from .config import DEMO_ADMIN_LISTEN, CommandLine, ProxyConfig
from .demo import DemoAdminService, DemoService
from .listening import ListenFailed, ListeningService, ListenSettings
from .origin import ConnectionPool
from .reload import Reloader, ReloadOnHangup
from .startup import StartupReport
from .upgrade import Pidfile, ProcessSpawner, Spawner, Successor, UpgradeOnSignal, Upgrader, exit_now, standard_adopters


class ProxyService(service.MultiService):
    """The whole proxy: its services, and its :class:`ProxyParts` (for the reloader, tap and tests). A listener
    that cannot bind as it starts ends the process with one line (twistd exits non-zero)."""

    parts: ProxyParts
    upgrader: Upgrader  # its live upgrades (docs/upgrade.md)
    successor: Successor | None = None  # started by a live upgrade: takes the old process's place as it starts

    def privilegedStartService(self) -> None:
        if self.successor is not None:
            return  # its listeners come from the old process, once the reactor runs
        try:
            super().privilegedStartService()
        except ListenFailed as e:
            raise SystemExit(f"rubrisproxy: {e}") from None

    def startService(self) -> None:
        if self.successor is not None:
            service.Service.startService(self)
            self.parts.reactor.callWhenRunning(self.successor.take_over, self._start_children)
            return
        try:
            super().startService()
        except ListenFailed as e:
            raise SystemExit(f"rubrisproxy: {e}") from None

    def stopService(self) -> Any:
        self.upgrader.close()
        return super().stopService()

    def _start_children(self) -> None:
        for child in self:
            child.startService()

    def listeners(self) -> list[ListeningService]:
        """Its listening services: the frontends', the admin's (what an upgrade hands over)."""
        return [child for child in self if isinstance(child, ListeningService)]


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


def build_service(config: ProxyConfig, reactor: Any = None, command_line: CommandLine | None = None,  # noqa: PLR0913 - a process's parts
                  report: bool = True, siblings: Siblings | None = None, upgrade: UpgradeSetup | None = None) -> ProxyService:
    """The whole proxy as one service, ready for twistd (reloadable when built from a config file): the
    configuration applied to an empty proxy, as a reload applies the next one. ``report``: the start-up lines
    (a worker process leaves them to its supervisor); ``siblings``: a worker's, it shares its state with;
    ``upgrade``: how its live upgrades start new processes, and whether it was started by one."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    root = ProxyService()
    if report:
        StartupReport(config, command_line.config_path if command_line is not None else None).setServiceParent(root)
    parts = root.parts = ProxyParts.empty(reactor, root, config, siblings)
    demo = None
    if config.demo:  # before the frontends, so the first request already has a server
        demo = DemoService(reactor, tuple(_public_url(e, f.tls is not None) for f in config.frontends for e in f.listen))
        demo.setServiceParent(root)
    parts.apply(config)
    if demo is not None:
        used = [parts.backends[f.backend] for f in config.frontends if f.forward is None]
        demo.serve(list({id(b): b for b in used}.values()))
    parts.health.setServiceParent(root)
    if parts.transport is not None:
        TransportService(parts.transport).setServiceParent(root)
    root.upgrader = _upgrades(root, reactor, upgrade or UpgradeSetup(), command_line is not None)
    reloader = Reloader(parts, command_line) if command_line is not None and command_line.config_path else None
    if command_line is not None:  # run by twistd: SIGHUP reloads, or is logged when there is no file to reload
        ReloadOnHangup(reloader, reactor).setServiceParent(root)
    if config.admin.listen or config.demo:
        running = RunningProxy(parts.frontend_list, parts.backends, parts.budget, parts.checkers,
                               reloader.reload if reloader is not None else None, reactor, parts.addresses,
                               parts.shared,
                               parts.transport.describe if isinstance(parts.transport, RedisTransport) else None,
                               upgrade=root.upgrader)
        site = admin_site(running, config.admin.token, config.timeouts, reactor)
        if config.admin.listen:
            admin: ListeningService = ListeningService(reactor, "admin", site, ListenSettings(config.admin.listen, key="admin"))
        else:  # the demo's stats page, on loopback
            admin = DemoAdminService(reactor, site, DEMO_ADMIN_LISTEN)
        admin.setServiceParent(root)
        if demo is not None:
            demo.link_stats(admin)
    PoolService(parts.pool).setServiceParent(root)
    AccessLogService(parts.access_log, reactor).setServiceParent(root)
    return root


@dataclass(frozen=True)
class UpgradeSetup:
    """How a process's live upgrades go: what starts the new process (None: a real one), what stops this one
    once it has handed over (None: the reactor), twistd's pidfile; and, in a process an upgrade started, the
    old process's hand-over socket and how this one exits if it cannot take over (None: status 1)."""

    spawner: Spawner | None = None
    stop: Callable[[], None] | None = None
    pidfile: Pidfile | None = None
    successor_socket: str | None = None
    exit: Callable[[str], None] | None = None


def _upgrades(root: ProxyService, reactor: Any, setup: UpgradeSetup, signalled: bool) -> Upgrader:
    parts = root.parts
    upgrader = Upgrader(reactor, root.listeners, partial(list, parts.frontend_list),
                        lambda: parts.config.process.upgrade_deadline, setup.spawner or ProcessSpawner(reactor),
                        setup.stop or partial(_stop_reactor, reactor), setup.pidfile)
    if signalled:
        UpgradeOnSignal(upgrader, reactor).setServiceParent(root)
    if setup.successor_socket:
        root.successor = Successor(reactor, setup.successor_socket, standard_adopters(parts), root.listeners,
                                   upgrader.took_over, setup.exit or exit_now(reactor))
    return upgrader


def _stop_reactor(reactor: Any) -> None:
    reactor.stop()


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
