"""What the proxy says when it starts: its version, its configuration file, and what that configures; and, when its
start fails, to a daemonizing twistd's parent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from . import __version__, accesslog
from ._compat import report_start_failure
from ._native import MODULES, compiled_modules
from .cluster import node_name
from .config import DEMO_ADMIN_LISTEN, BackendConfig, FrontendConfig, ProxyConfig
from .upgrade import Pidfile


def startup_lines(config: ProxyConfig, config_path: str | None) -> list[str]:
    """One line for the version and file, one per frontend, one per backend, the admin (and cluster) and log
    settings."""
    lines = [f"rubrisproxy {__version__} starting; configuration: {config_path or 'none (command-line flags only)'}"]
    lines.append(f"build: {build_line()}")
    lines += [_frontend(frontend) for frontend in config.frontends]
    lines += [_backend(backend, config.demo) for backend in config.backends.values()]
    lines.append(_admin(config))
    if config.cluster is not None:
        lines.append(f"cluster: node {node_name(config.cluster)}, sharing state through Redis at {config.cluster.redis}")
    access = config.access_log
    where = "off" if not access.enabled else "the main log" if access.path == "-" else access.path
    details = f" ({access.format}{', with connection lines' if access.connections else ''})" if access.enabled else ""
    lines.append(f"access log: {where}{details}; main log format: {config.log.format}")
    if config.process.workers > 1:
        lines.append(f"processes: a supervisor and {config.process.workers} workers, each listener bound by every"
                     " worker (SO_REUSEPORT)")
    return lines


def build_line() -> str:
    """What of the request path runs compiled (``rubrisproxy._native``, the access-log line) or as Python."""
    native = compiled_modules()
    if not native and not accesslog.COMPILED:
        return "pure Python (installed without a C compiler, or with RUBRISPROXY_PURE_PYTHON=1)"
    parts = [f"request path compiled ({len(native)} of {len(MODULES)} modules)" if native else "request path Python"]
    parts.append("access-log line compiled" if accesslog.COMPILED else "access-log line Python")
    return ", ".join(parts)


def _admin(config: ProxyConfig) -> str:
    if config.admin.listen:
        return f"admin API: {', '.join(config.admin.listen)}"
    if config.demo:  # the demo opens its own (a taken port is a warning, logged when it tries)
        return f"admin API and stats page: {DEMO_ADMIN_LISTEN} (demo mode; --admin sets another)"
    return "admin API: off"


def _frontend(frontend: FrontendConfig) -> str:
    what = "forward proxy" if frontend.forward is not None else f"backend {frontend.backend}"
    routes = f", {len(frontend.routes)} routes" if frontend.routes else ""
    tls = ", TLS" if frontend.tls is not None else ""
    return f"frontend {frontend.name}: listen {', '.join(frontend.listen)}; {what}{routes}{tls}"


def _backend(backend: BackendConfig, demo: bool) -> str:
    if backend.servers:
        servers = ", ".join(
            f"{s.name} {'https' if s.tls else 'http'}://{s.host}:{s.port}"
            + (f" weight {s.weight}" if s.weight != 1 else "") + (" backup" if s.backup else "")
            for s in backend.servers
        )
    else:
        servers = "the demo origin" if demo else "no servers"
    health = backend.health
    if health.check == "none":
        checks = "no health checks"
    else:
        checks = f"{health.check} health checks every {health.interval:g}s (rise {health.rise}, fall {health.fall}"
        if health.check != "tcp":
            checks += f", {health.method} {health.path} expecting {health.expect[0]}-{health.expect[1]}"
        checks += ")"
    login = ""
    if backend.auth is not None and backend.auth.credentials is not None:
        login = f"; logs in as {backend.auth.credentials.user} (from the {backend.auth.credentials.source})"
    return f"backend {backend.name}: {servers}; {backend.balance}; {checks}{login}"


class StartupReport(service.Service):
    """Logs :func:`startup_lines` before anything listens."""

    log = Logger()

    def __init__(self, config: ProxyConfig, config_path: str | None) -> None:
        self.lines = startup_lines(config, config_path)
        self.reported = False

    def privilegedStartService(self) -> None:
        self._report()
        super().privilegedStartService()

    def startService(self) -> None:
        self._report()  # when started without privilegedStartService
        super().startService()

    def _report(self) -> None:
        if not self.reported:
            self.reported = True
            for line in self.lines:
                self.log.info("{line}", line=line)


class StartFailureReported(service.MultiService):
    """The proxy's services under twistd. A start that ends the process with one line (``SystemExit``: a listener
    that cannot bind) removes twistd's pidfile and tells a daemonizing twistd's parent, which waits for its daemon to
    say how its start went and would otherwise wait for ever: the parent prints the line and exits 1."""

    def __init__(self, child: service.IService, twistd_options: Any) -> None:
        super().__init__()
        self.twistd_options = twistd_options
        child.setServiceParent(self)

    def privilegedStartService(self) -> None:
        self._reported(super().privilegedStartService)

    def startService(self) -> None:
        self._reported(super().startService)

    def _reported(self, start: Callable[[], None]) -> None:
        try:
            start()
        except SystemExit as e:
            Pidfile(self.twistd_options).hide()  # removed, as twistd removes it when a start raises an Exception
            # the parent prints at most 100 bytes, after "An error has occurred:"
            report_start_failure(self.twistd_options, str(e.code).removeprefix("rubrisproxy: "))
            raise
