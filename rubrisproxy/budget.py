"""Counting what may only happen so often: an HTTP/2 client's stream resets and control frames, a worker's
questions to its siblings."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class Budget:
    """At most ``limit`` events per ``window`` seconds (a fixed window, restarted at the first event past it).

    :meth:`spend` counts one; False once the window's budget is spent (the client is flooding).
    """

    __slots__ = ("_clock", "_window", "_limit", "_started", "_spent")

    def __init__(self, clock: IReactorTime, limit: int, window: float) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._started = clock.seconds()
        self._spent = 0

    def spend(self) -> bool:
        now = self._clock.seconds()
        if now - self._started >= self._window:
            self._started = now
            self._spent = 0
        self._spent += 1
        return self._spent <= self._limit
