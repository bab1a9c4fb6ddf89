"""Reload in place: a new configuration applied inside the running process, connections untouched."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from .backend import Backend, HealthChecker
from .checks import check_config
from .config import CommandLine, ConfigError, ProxyConfig, load_config
from .frontend import connection_factory, protocol_class
from .routing import Router
from .signals import SignalService

if TYPE_CHECKING:
    from .service import ProxyParts

#: Settings a reload does not change (they need a restart); a change to them is reported.
RESTART_ONLY = ("pool", "access_log", "log", "admin", "shutdown_grace", "shutdown_spread", "shutdown_close_code", "demo")


class Reloader:
    """Re-reads the configuration and applies what changed, without touching open connections.

    Applied: timeouts and limits; backends added and removed; each backend's settings
    and servers (added, removed and drained, re-weighted), keeping health and stick
    tables; frontends added and removed, their routes, default backend, listen
    endpoints, connection settings and handlers, and (for connections accepted from then
    on) their peers, protocol class and TLS certificates (re-read from their files). A
    file that does not validate, or a certificate that cannot be read, changes nothing.
    """

    log = Logger()

    def __init__(self, parts: ProxyParts, command_line: CommandLine) -> None:
        self.parts = parts
        self.command_line = command_line

    def reload(self) -> list[str]:
        """Apply the configuration as it now reads; the changes made. Raises :class:`ConfigError`, changing nothing."""
        if not self.command_line.config_path:
            raise ConfigError("--config", "there is no configuration file to reload")
        new = check_config(load_config(self.command_line))  # every class it names has been built once: none fails below
        if new.demo or self.parts.config.demo:
            raise ConfigError("--config", "a proxy running the demo origin cannot be reloaded; restart it")
        added = {name: Backend(config, self.parts.reactor, new.timeouts.queue)
                 for name, config in new.backends.items() if name not in self.parts.backends}  # may fail: before any change
        certificates = {config.name: running.reread_tls(config.tls) for config in new.frontends  # may fail, likewise
                        if (running := self.parts.frontends.get(config.name)) is not None}
        changes = self._apply(new, added, certificates)
        self.parts.config = new
        self.log.info("reloaded {path}: {changes}", path=self.command_line.config_path,
                      changes="; ".join(changes) or "nothing changed")
        return changes

    def _apply(
        self, new: ProxyConfig, added: dict[str, Backend], certificates: dict[str, Callable[[], str | None]]
    ) -> list[str]:
        parts, old, changes = self.parts, self.parts.config, []
        for name in RESTART_ONLY:
            if getattr(old, name) != getattr(new, name):
                changes.append(f"{name.replace('_', '-')} changed: it takes effect at the next restart")
        if old.timeouts != new.timeouts or old.limits != new.limits:
            for frontend_service in parts.frontends.values():
                frontend_service.frontend.timeouts = new.timeouts
                frontend_service.frontend.limits = new.limits
            parts.connector.connect_timeout = new.timeouts.connect
            parts.pool.server_timeout = new.timeouts.server
            parts.budget.limit = new.limits.resume_buffer_total
            for backend in parts.backends.values():
                backend.queue_timeout = new.timeouts.queue
            changes.append("timeouts and limits")
        for name, backend in added.items():
            parts.backends[name] = backend
            self._check(backend, new)
            changes.append(f"backend {name} added")
        for name, config in new.backends.items():
            if name in added or config == old.backends.get(name):
                continue
            backend = parts.backends[name]
            for server in backend.reconfigure(config):
                checker = parts.checkers.get(name)
                if checker is not None:
                    checker.watch(server)
            previous = old.backends.get(name)
            if previous is None or config.health != previous.health:
                self._check(backend, new)
            changes.append(f"backend {name} reconfigured")
        self._frontends(new, changes, certificates)
        for name in [name for name in parts.backends if name not in new.backends]:
            backend = parts.backends.pop(name)
            for server in list(backend.servers):
                backend.remove_server(server.name)
            self._stop_checker(name)
            changes.append(f"backend {name} removed")
        return changes

    def _frontends(
        self, new: ProxyConfig, changes: list[str], certificates: dict[str, Callable[[], str | None]]
    ) -> None:
        parts, old = self.parts, self.parts.config
        old_frontends = {f.name: f for f in old.frontends}
        for name in [name for name in parts.frontends if name not in {f.name for f in new.frontends}]:
            parts.remove_frontend(name)  # first, so its endpoints are free for the frontends that take them
            changes.append(f"frontend {name} removed")
        for config in new.frontends:
            running = parts.frontends.get(config.name)
            if running is None:
                try:
                    parts.add_frontend(config, new)
                    changes.append(f"frontend {config.name} added")
                except SystemExit as e:  # its endpoint could not be bound; everything else still applies
                    self.log.error("reload: {error}", error=str(e))
                    changes.append(f"frontend {config.name} NOT listening: {e}")
                continue
            frontend = running.frontend
            default = frontend.backend if config.forward is not None else parts.backends[config.backend]
            frontend.backend = default
            frontend.router = Router(config.routes, parts.backends, default)  # also when only backends changed
            frontend.forward = parts.forward_rules(config)
            previous = old_frontends.get(config.name)
            parts.connection_settings(frontend, config)
            if previous is not None and (previous.peers, previous.protocol) != (config.peers, config.protocol):
                running.use_factory(connection_factory(frontend, protocol_class(config)))
                changes.append(f"frontend {config.name}: new connections are {config.peers}"
                               + (f" ({config.protocol})" if config.protocol else ""))
            said = certificates[config.name]()  # before listen_on: new endpoints serve the new certificates
            if said:
                changes.append(said)
            try:
                running.listen_on(config.listen)
            except SystemExit as e:
                self.log.error("reload: {error}; it keeps its listeners", error=str(e))
                changes.append(f"frontend {config.name} keeps its listeners: {e}")
            if config != old_frontends.get(config.name):
                changes.append(f"frontend {config.name} reconfigured")

    def _check(self, backend: Backend, config: ProxyConfig) -> None:
        """(Re)start the health checks of ``backend``, as its new settings say."""
        parts = self.parts
        self._stop_checker(backend.name)
        if backend.health.check == "none":
            return
        checker = HealthChecker(backend.name, _servers_of(backend), backend.health, parts.reactor, parts.connector.connect)
        parts.checkers[backend.name] = checker
        checker.start()

    def _stop_checker(self, name: str) -> None:
        checker = self.parts.checkers.pop(name, None)
        if checker is not None:
            checker.stop()


def _servers_of(backend: Backend) -> Callable[[], Any]:
    return lambda: backend.servers


class ReloadOnHangup(SignalService):
    """``SIGHUP`` reloads the configuration file; a bad file is logged and changes nothing. Without a file
    (``reloader`` is None) it is logged too: the signal's default action would end the process."""

    log = Logger()

    def __init__(self, reloader: Reloader | None, reactor: Any) -> None:
        super().__init__(reactor, signal.SIGHUP)
        self.reloader = reloader

    def received(self) -> None:
        self.reload()

    def reload(self) -> None:
        if self.reloader is None:
            self.log.warn("SIGHUP: nothing to reload, the proxy was started without --config; carrying on")
            return
        try:
            self.reloader.reload()
        except ConfigError as e:
            self.log.error("reload refused, nothing changed: {error}", error=str(e))
