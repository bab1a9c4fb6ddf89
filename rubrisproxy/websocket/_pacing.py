"""The pace of moving sessions' dials: how many are in flight at once, how many start per reactor turn."""

from __future__ import annotations

import gc
from collections import deque
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..settings import LiveSettings


class Paced(Protocol):
    """What the pacer starts: a session's move (a :class:`~rubrisproxy.websocket._move.SessionMove`) whose next dial
    waits for its turn."""

    def go(self) -> bool:
        """Dial now; False if the dial is no longer wanted (then no :meth:`DialPacer.done` follows)."""


class DialPacer:
    """Starts the dials of every moving session of the proxy, in the order they were asked for, within two limits
    (``limits.resume-dials`` in flight at once, ``limits.resume-dials-per-turn`` started per reactor turn); those of
    sessions whose clients wait for an answer (they hold a message the client sent) first, in their own order.

    When a server with thousands of sessions dies, each of them loses its backend leg in the same reactor turn.
    Dialling them all there and then would hold the reactor for seconds: nobody else would be served. A dial
    asked for while there is room starts at once, as if there were no pacer; the others wait in a queue,
    and a call on the next turn (``callLater(0)``: the reactor serves what is ready in between) starts the next
    batch. A dial holds its place from its start until :meth:`done` (its 101, or its failure). A move whose session
    comes to hold a message while it waits is :meth:`hurry`-ed: it also joins the queue of the waiting clients, ahead
    of the others; its place in the first queue stays, its turn there finding it dialled (``go`` says so).

    While dials wait, the garbage collector's automatic passes are held off (``gc.disable``): a storm of moves
    allocates what makes it run a full collection, which over the thousands of live sessions would stop the
    proxy for as long as the whole storm's dials take; what the storm left behind is collected once it is over.
    (Not ``gc.freeze``: unfreezing would also put back what the process froze at start.)
    """

    __slots__ = ("_settings", "_waiting", "_urgent", "in_flight", "_started", "_turn", "_clock", "_frozen")

    def __init__(self, settings: LiveSettings) -> None:
        self._settings = settings
        self._waiting: deque[Paced] = deque()
        self._urgent: deque[Paced] = deque()  # moves whose clients wait for an answer: they go first
        self.in_flight = 0
        self._started = 0  # dials started in this reactor turn
        self._turn: IDelayedCall | None = None  # the call that starts the next turn's batch
        self._clock: IReactorTime | None = None
        self._frozen = False

    @property
    def waiting(self) -> int:
        """Moves waiting for their turn (those that gave up meanwhile among them until their turn comes, and a hurried
        one in both queues until both turns came)."""
        return len(self._waiting) + len(self._urgent)

    def start(self, move: Paced, clock: IReactorTime, urgent: bool = False) -> None:
        """Let ``move`` dial now if the limits allow it and no other waits, else when its turn comes (``clock``: the
        proxy's, which every session shares; ``urgent``: its client waits for an answer, its turn comes first)."""
        self._clock = clock
        limits = self._settings.current.limits
        if (self._waiting or self._urgent or self.in_flight >= limits.resume_dials
                or self._started >= limits.resume_dials_per_turn):
            (self._urgent if urgent else self._waiting).append(move)
            if not self._frozen and gc.isenabled():
                self._frozen = True
                gc.disable()
            self._next_turn()
            return
        self._go(move)

    def hurry(self, move: Paced, clock: IReactorTime) -> None:
        """``move`` waits for its turn, and its client now waits for an answer: it dials ahead of the moves whose
        clients wait for nothing."""
        self._clock = clock
        self._urgent.append(move)
        self._next_turn()

    def done(self) -> None:
        """A dial started by the pacer ended: its place goes to the next one, on the next turn."""
        self.in_flight -= 1
        if self._waiting or self._urgent:
            self._next_turn()
        elif self._frozen and not self.in_flight:
            self._frozen = False
            gc.enable()

    def _go(self, move: Paced) -> None:
        self.in_flight += 1  # first: the dial may end before go() returns
        self._started += 1
        self._next_turn()  # so that the count of this turn's dials starts again from 0
        if not move.go():
            self.in_flight -= 1
            self._started -= 1

    def _next_turn(self) -> None:
        if self._turn is None and self._clock is not None:
            self._turn = self._clock.callLater(0, self._new_turn)

    def _new_turn(self) -> None:
        self._turn = None
        self._started = 0
        limits = self._settings.current.limits
        urgent, waiting = self._urgent, self._waiting
        while (urgent or waiting) and self.in_flight < limits.resume_dials and self._started < limits.resume_dials_per_turn:
            self._go((urgent or waiting).popleft())
        if not urgent and not waiting and self._frozen and not self.in_flight:
            self._frozen = False
            gc.enable()
