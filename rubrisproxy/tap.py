"""twistd options and service maker for ``twistd rubrisproxy``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from functools import partial
from typing import NoReturn

from twisted.application.service import IService, MultiService
from twisted.python import usage

from ._compat import cache_log_levels, lean_poll
from .checks import check_config
from .collector import settle_collector
from .config import CommandLine, ConfigError, ProxyConfig, load_config
from .logoutput import TurnBatchedOutput
from .mainlog import LoggedService, MainLogObserver, ReopenOnSignal, twistd_output
from .service import UpgradeSetup, build_service
from .startup import StartFailureReported
from .upgrade import SOCKET_ENV, Pidfile, UpgradeOnSignal, restore_stderr
from .workers import build_supervisor


class Options(usage.Options):
    """Command-line options; flags override the config file (see docs/configuration.md)."""

    synopsis = (
        "[--config FILE] [--listen ENDPOINT]... [--backend ADDRESS]... [--timeout NAME=DURATION]... "
        "[--websocket MODE] [--admin ENDPOINT]... [--access-log PATH] [--access-log-format FORMAT] "
        "[--log-format FORMAT] [--workers N|auto] [--demo]"
    )
    longdesc = (
        "A reverse proxy for HTTP and WebSocket. With no backend configured, it proxies "
        "to a built-in demo. Flags override the file: --listen replaces the "
        "listeners of the one frontend, --backend the servers of the one backend, --timeout "
        "one timeout, --websocket the mode of every backend, --admin the admin listeners."
    )
    optFlags = [
        ["demo", None, "Proxy to the built-in demo origins (the default when no backend is configured)."],
    ]
    optParameters = [
        ["config", "c", None, "TOML configuration file."],
        ["access-log", None, None, "Access log: '-' for the twistd log, a file path, or 'off'."],
        ["access-log-format", None, None, "Access log format: 'text' or 'json'."],
        ["log-format", None, None, "Main (twistd) log format: 'text' or 'json' (one object per line)."],
        ["websocket", None, None, "WebSocket mode of every backend: 'session' (the default) or 'tunnel'."],
        ["workers", None, None, "Worker processes: a number, or 'auto' for one per core (default 1: one process)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["backend"] = []
        self["timeout"] = {}
        self["admin"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on a Twisted server endpoint string, e.g. tcp:8080:interface=0.0.0.0 (repeatable; default tcp:8080:interface=127.0.0.1)."""
        self["listen"].append(endpoint)

    def opt_admin(self, endpoint: str) -> None:
        """Admin API listener, a Twisted endpoint string such as tcp:9000:interface=127.0.0.1 (repeatable)."""
        self["admin"].append(endpoint)

    def opt_backend(self, address: str) -> None:
        """Origin server: host:port, http://host:port or https://host:port (repeatable)."""
        self["backend"].append(address)

    def opt_timeout(self, assignment: str) -> None:
        """Set a timeout, NAME=DURATION: client, http-request, http-keep-alive, connect, server, queue, tunnel, client-fin, server-fin, linger, linger-idle (repeatable)."""
        name, sep, value = assignment.partition("=")
        if not sep:
            refuse(ConfigError("--timeout", f"expected NAME=DURATION, got {assignment!r}"))
        self["timeout"][name.strip()] = value.strip()

    opt_l = opt_listen
    opt_b = opt_backend

    def postOptions(self) -> None:
        command_line = CommandLine(
            config_path=self["config"],
            listen=self["listen"],
            backends=self["backend"],
            timeouts=self["timeout"],
            access_log=self["access-log"],
            access_log_format=self["access-log-format"],
            log_format=self["log-format"],
            websocket=self["websocket"],
            admin=self["admin"],
            demo=bool(self["demo"]),
            workers=self["workers"],
        )
        self.command_line = command_line
        try:
            self.proxy_config: ProxyConfig = check_config(load_config(command_line))
        except ConfigError as e:
            refuse(e)


def refuse(error: ConfigError) -> NoReturn:
    """End twistd with one line naming the key on stderr and a non-zero status: no usage text, no traceback."""
    raise SystemExit(f"rubrisproxy: configuration error: {error}")


def makeService(options: Options) -> IService:
    """Build the proxy's service tree from parsed options; under twistd, with rubrisproxy's main log
    (:mod:`rubrisproxy.mainlog`) and ``SIGUSR1`` reopening the log files; ``SIGUSR2`` or ``POST /upgrade``
    upgrade it live (:mod:`rubrisproxy.upgrade`), and when a live upgrade started it, it takes the old process's
    place. With several workers, the tree is their supervisor's (:mod:`rubrisproxy.workers`), ``SIGUSR1`` passed
    on to them."""
    restore_stderr(os.environ)  # a live upgrade's new process, started: the old process's stderr is its own again
    twistd_options = getattr(options, "parent", None)  # twistd's own options, when run by twistd
    output = twistd_output(twistd_options) if twistd_options is not None else None
    root: MultiService
    if options.proxy_config.process.workers > 1:
        root = supervised = build_supervisor(options.proxy_config, command_line=options.command_line, output=output)
        reactor = supervised.reactor
        reopeners: list[Callable[[], None]] = [partial(supervised.supervisor.signal_workers, signal.SIGUSR1)]
        UpgradeOnSignal(supervised.supervisor.rolling, reactor).setServiceParent(root)  # each worker replaced in turn
    else:
        upgrade = UpgradeSetup(pidfile=Pidfile(twistd_options) if twistd_options is not None else None,
                               successor_socket=os.environ.pop(SOCKET_ENV, None))  # set by a live upgrade's old process
        root = single = build_service(options.proxy_config, command_line=options.command_line,  # classes checked at load
                                      upgrade=upgrade)
        reactor = single.parts.reactor
        reopeners = [single.parts.access_log.reopen]
        reactor.callWhenRunning(settle_collector)  # what start built frozen, the young passes spaced out
        lean_poll(reactor)  # each I/O event in Twisted's log context, without its call layers
        cache_log_levels()  # each log event's level checked without sorting the levels again
    # A reactor turn's lines in one write: a mass move logs thousands.
    batched = TurnBatchedOutput(output, reactor) if output is not None else None
    if batched is not None:
        reopeners.append(batched.reopen)  # after the access log's: its held lines go to the old file
    ReopenOnSignal(reopeners, reactor).setServiceParent(root)
    if batched is None:  # not run by twistd
        return root
    return LoggedService(StartFailureReported(root, twistd_options),
                         MainLogObserver(batched, options.proxy_config.log.format))
