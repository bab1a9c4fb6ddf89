"""The pace of moving sessions' dials: how many are in flight at once, how many start per reactor turn."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..settings import LiveSettings


class Paced(Protocol):
    """A dial the pacer starts (a :class:`~rubrisproxy.websocket.BackendDial`)."""

    @property
    def finished(self) -> bool:
        """Whether it ended (or was cancelled): one still waiting is then dropped, not started."""

    def go(self) -> None:
        """Start now: choose a server, connect, send the handshake."""


class DialPacer:
    """Starts the dials of every moving session of the proxy, in the order they were asked for, within two limits
    (``limits.resume-dials`` in flight at once, ``limits.resume-dials-per-turn`` started per reactor turn).

    When a server with thousands of sessions dies, each of them loses its backend leg in the same reactor turn.
    Dialling them all there and then would hold the reactor for seconds: nobody else would be served. A dial
    asked for while there is room starts at once, as if there were no pacer; the others wait in a queue,
    and a call on the next turn (``callLater(0)``: the reactor serves what is ready in between) starts the next
    batch. A dial holds its place from :meth:`start` until :meth:`done`, when it got its 101 or failed.
    """

    __slots__ = ("_settings", "_waiting", "in_flight", "_started", "_turn", "_clock")

    def __init__(self, settings: LiveSettings) -> None:
        self._settings = settings
        self._waiting: deque[Paced] = deque()
        self.in_flight = 0
        self._started = 0  # dials started in this reactor turn
        self._turn: IDelayedCall | None = None  # the call that starts the next turn's batch
        self._clock: IReactorTime | None = None

    @property
    def waiting(self) -> int:
        """Dials asked for and not started yet (cancelled ones among them until their turn comes)."""
        return len(self._waiting)

    def start(self, dial: Paced, clock: IReactorTime) -> None:
        """Start ``dial`` now if the limits allow it and no other waits, else when its turn comes (``clock``: the
        proxy's, which every session shares)."""
        self._clock = clock
        limits = self._settings.current.limits
        if self._waiting or self.in_flight >= limits.resume_dials or self._started >= limits.resume_dials_per_turn:
            self._waiting.append(dial)
            self._next_turn()
            return
        self._go(dial)

    def done(self) -> None:
        """A dial started by the pacer ended: its place goes to the next one, on the next turn."""
        self.in_flight -= 1
        if self._waiting:
            self._next_turn()

    def _go(self, dial: Paced) -> None:
        self.in_flight += 1
        self._started += 1
        self._next_turn()  # so that the count of this turn's dials starts again from 0
        dial.go()

    def _next_turn(self) -> None:
        if self._turn is None and self._clock is not None:
            self._turn = self._clock.callLater(0, self._new_turn)

    def _new_turn(self) -> None:
        self._turn = None
        self._started = 0
        limits = self._settings.current.limits
        waiting = self._waiting
        while waiting and self.in_flight < limits.resume_dials and self._started < limits.resume_dials_per_turn:
            dial = waiting.popleft()
            if not dial.finished:
                self._go(dial)
