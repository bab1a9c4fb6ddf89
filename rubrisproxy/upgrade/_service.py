"""The live upgrade wired into the proxy: its adopters, the signal that starts it, the new process's start."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..builder import ProxyParts
from ..frontend import ConnectionAdopter, SessionAdopter, TunnelAdopter
from ..signals import SignalService
from ..transfer import Adopters


def standard_adopters(parts: ProxyParts) -> Adopters:
    """The kinds of connection this process adopts in an upgrade, each with its adopter, built from the running
    proxy's ``parts``: the one place a kind is registered."""
    adopters = Adopters()
    adopters.add(ConnectionAdopter(parts.reactor, parts.factory_of))
    adopters.add(TunnelAdopter(parts.reactor, parts.factory_of, parts.backends.get, parts.pool))
    adopters.add(SessionAdopter(parts.reactor, parts.factory_of, parts.backends))
    return adopters


class UpgradeOnSignal(SignalService):
    """``SIGUSR2`` (nginx's signal for the same) starts a live upgrade; how it went is logged."""

    log = Logger()

    def __init__(self, upgrader: Upgrades, reactor: Any) -> None:
        super().__init__(reactor, signal.SIGUSR2)
        self.upgrader = upgrader

    def received(self) -> None:
        self.log.info("SIGUSR2: live upgrade")
        self.upgrader.start().addErrback(lambda failure: None)  # the upgrader logs why


class Upgrades(Protocol):
    """What ``SIGUSR2`` starts: a process's :class:`Upgrader`, or the supervisor's rolling upgrade of its workers."""

    def start(self) -> Deferred[dict[str, Any]]: ...


def exit_now(reactor: Any) -> Callable[[str], None]:
    """How a new process that cannot take over ends: the reactor stopped, then exit status 1 (the pidfile, which
    the old process writes back, is not removed)."""

    def exit(why: str) -> None:
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.stop()

    return exit
