"""Reload in place: a new configuration applied inside the running process, connections untouched."""

from __future__ import annotations

import signal
from typing import Any, Protocol

from twisted.logger import Logger

from .builder import ProxyParts
from .checks import check_config
from .config import CommandLine, ConfigError, ProxyConfig, load_config
from .signals import SignalService

#: Settings a reload does not change (they need a restart); a change to them is reported.
RESTART_ONLY = ("pool", "access_log", "log", "admin", "cluster", "shutdown_grace", "shutdown_spread",
                "shutdown_close_code", "demo", "process")


class Reloader:
    """Re-reads the configuration file and applies it to the running proxy (:meth:`ProxyParts.apply`), as the
    proxy's start applied the first; a file that does not validate, or a certificate that cannot be read,
    changes nothing."""

    log = Logger()

    def __init__(self, parts: ProxyParts, command_line: CommandLine) -> None:
        self.parts = parts
        self.command_line = command_line

    def reload(self) -> list[str]:
        """Apply the configuration as it now reads; the changes made. Raises :class:`ConfigError`, changing nothing."""
        if not self.command_line.config_path:
            raise ConfigError("--config", "there is no configuration file to reload")
        return self.apply(check_config(load_config(self.command_line)))  # every class it names has been built once

    def apply(self, new: ProxyConfig) -> list[str]:
        """Apply ``new``, a configuration :func:`check_config` passed; the changes made (those that need a restart
        said). Raises :class:`ConfigError` (a demo), changing nothing."""
        old = self.parts.config
        if new.demo or old.demo:
            raise ConfigError("--config", "a proxy running the demo origin cannot be reloaded; restart it")
        changes = [f"{name.replace('_', '-')} changed: it takes effect at the next restart"
                   for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        changes += self.parts.apply(new)
        self.log.info("reloaded {path}: {changes}", path=self.command_line.config_path or "the configuration",
                      changes="; ".join(changes) or "nothing changed")
        return changes


class Reloads(Protocol):
    """What ``SIGHUP`` reloads with: a :class:`Reloader`, or the supervisor's, which applies in every worker."""

    def reload(self) -> object:
        """Reload; :class:`ConfigError` for a configuration that does not validate."""


class ReloadOnHangup(SignalService):
    """``SIGHUP`` reloads the configuration file; a bad file is logged and changes nothing. Without a file
    (``reloader`` is None) it is logged too: the signal's default action would end the process."""

    log = Logger()

    def __init__(self, reloader: Reloads | None, reactor: Any) -> None:
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
