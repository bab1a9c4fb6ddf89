"""Accepting connections while the process is out of file descriptors: pause, retry later, say so now and then."""

from __future__ import annotations

import errno
import os
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._compat import guard_accepts

#: The first pause after accept(2) runs out of descriptors; each pause in a row doubles it, up to MAX_PAUSE.
FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0
#: At most one line per this many seconds says that accepting is paused.
LOG_INTERVAL = 10.0


class _State(Enum):
    ACCEPTING = "accepting"
    PAUSED = "paused"
    CLOSED = "closed"


class AcceptBackoff:
    """Stops a listening port from accepting when accept(2) fails for want of descriptors, and starts it again
    after a pause that doubles while the failures go on; one log line per :data:`LOG_INTERVAL` reports it.

    Twisted's own handling logs a line on every reactor turn while the backlog stays readable.
    """

    log = Logger()

    def __init__(self, port: Any, clock: IReactorTime, label: str) -> None:
        self._port = port
        self._clock = clock
        self._label = label
        self._state = _State.ACCEPTING
        self._pause = 0.0  # the last pause; 0 once a connection is accepted again
        self._resume: IDelayedCall | None = None
        self._logged_at: float | None = None
        self._unreported = 0  # pauses since the last line

    @property
    def paused(self) -> bool:
        return self._state is _State.PAUSED

    def exhausted(self, error: int) -> None:
        """accept(2) failed with ``error`` (EMFILE, ENFILE, ENOBUFS, ENOMEM): stop accepting for a while."""
        if self._state is not _State.ACCEPTING:
            return
        self._state = _State.PAUSED
        self._port.stopReading()
        self._pause = min(max(self._pause * 2, FIRST_PAUSE), MAX_PAUSE)
        self._resume = self._clock.callLater(self._pause, self._retry)
        self._unreported += 1
        if self._may_report():
            self.log.warn(
                "{label}: accept failed with {error} ({why}): accepting paused for {pause:g}s "
                "({count} pauses since the last report; at most one report every {interval:g}s)",
                label=self._label, error=errno.errorcode.get(error, str(error)), why=os.strerror(error),
                pause=self._pause, count=self._unreported, interval=LOG_INTERVAL,
            )
            self._unreported = 0

    def accepted(self) -> None:
        """A connection was accepted: the next failure starts from the shortest pause again."""
        if self._pause:
            self._pause = 0.0
            if self._may_report():
                self.log.info("{label}: accepting connections again ({count} pauses since the last report)",
                              label=self._label, count=self._unreported)
                self._unreported = 0

    def _may_report(self) -> bool:
        """Whether a line may be logged now (one per :data:`LOG_INTERVAL`, whatever it says)."""
        now = self._clock.seconds()
        if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
            return False
        self._logged_at = now
        return True

    def _retry(self) -> None:
        self._resume = None
        if self._state is _State.PAUSED:
            self._state = _State.ACCEPTING
            self._port.startReading()

    def closed(self) -> None:
        """The port's socket is closing: no retry is left behind."""
        self._state = _State.CLOSED
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None


def back_off_when_exhausted(port: Any, clock: IReactorTime, label: str) -> AcceptBackoff | None:
    """Give a listening TCP, TLS or UNIX port an :class:`AcceptBackoff`; None for a port that is none of them."""
    backoff = AcceptBackoff(port, clock, label)
    if not guard_accepts(port, backoff.exhausted, backoff.accepted, backoff.closed):
        return None
    return backoff
