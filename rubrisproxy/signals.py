"""A service that runs a method on the reactor thread when a signal arrives, and restores the old handler."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application import service


class SignalService(service.Service):
    """While running, ``signum`` calls :meth:`received` from the reactor thread (a signal handler may run at any
    point of Python code; the reactor runs it between events instead)."""

    signum: int

    def __init__(self, reactor: Any, signum: int) -> None:
        self.reactor = reactor
        self.signum = signum
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(self.signum, self._handler)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _handler(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.received)

    def received(self) -> None:
        """What the signal does."""
        raise NotImplementedError
