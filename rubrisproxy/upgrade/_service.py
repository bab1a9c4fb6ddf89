"""The live upgrade wired into the proxy: its adopters, the signal that starts it, the new process's start."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from ..builder import ProxyParts
from ..frontend import ConnectionAdopter, TunnelAdopter
from ..signals import SignalService
from ..transfer import Adopters
from ._old import Upgrader


def standard_adopters(parts: ProxyParts) -> Adopters:
    """The kinds of connection this process adopts in an upgrade, each with its adopter, built from the running
    proxy's ``parts``: the one place a kind is registered."""
    adopters = Adopters()
    adopters.add(ConnectionAdopter(parts.reactor, parts.factory_of))
    adopters.add(TunnelAdopter(parts.reactor, parts.factory_of, parts.backends.get, parts.pool))
    return adopters


class UpgradeOnSignal(SignalService):
    """``SIGUSR2`` (nginx's signal for the same) starts a live upgrade; how it went is logged."""

    log = Logger()

    def __init__(self, upgrader: Upgrader, reactor: Any) -> None:
        super().__init__(reactor, signal.SIGUSR2)
        self.upgrader = upgrader

    def received(self) -> None:
        self.log.info("SIGUSR2: live upgrade")
        self.upgrader.start().addErrback(lambda failure: None)  # the upgrader logs why


class NoUpgradeOnSignal(SignalService):
    """With worker processes, ``SIGUSR2`` is logged, not acted on (its default action would end the supervisor):
    a live upgrade is not available there yet."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor, signal.SIGUSR2)

    def received(self) -> None:
        self.log.warn("SIGUSR2: a live upgrade is not available with worker processes; carrying on")


def exit_now(reactor: Any) -> Callable[[str], None]:
    """How a new process that cannot take over ends: the reactor stopped, then exit status 1 (the pidfile, which
    the old process writes back, is not removed)."""

    def exit(why: str) -> None:
        reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        reactor.stop()

    return exit
