"""The pace of handling lost backend connections: a storm of them is handled over several reactor turns."""

from __future__ import annotations

from collections import deque
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Lost backend legs handled in one reactor turn (about 50 us each: the socket closed, Autobahn's closing, the
#: session's move begun).
LOSSES_PER_TURN = 128


class PutAside(Protocol):
    """What the pacer hands its turn to: a backend leg whose connection was lost (a
    :class:`~rubrisproxy.websocket._legs.BackendLeg`), its loss not handled yet."""

    def settle_loss(self) -> None:
        """Handle the loss now, as its connection's ``connectionLost`` would have (nothing if it already was)."""


class LossPacer:
    """Spreads the handling of many backend legs' lost connections over reactor turns, in the order they were lost.

    When a server dies, the kernel makes every connection to it readable at once, and the reactor's poll hands
    them all over in one turn: thousands of legs losing their connection there, each handled at once (Autobahn's
    closing, the session's move begun: its replay, its give-up timer, its place in the
    :class:`~rubrisproxy.websocket._pacing.DialPacer`), would hold the reactor, and so every session on the
    other servers, for as long as all of them take. Up to :data:`LOSSES_PER_TURN` losses in a turn are handled at
    once, as if there were no pacer; past that, each leg is put aside (by its session: see
    :meth:`~rubrisproxy.websocket._legs.BackendLeg.lose`) and waits in a queue; a call on the next turn
    (``callLater(0)``: the reactor serves what is ready in between) handles the next batch. Anything else that
    reaches a session whose leg waits has the loss handled first (its session settles it), so the session sees
    its events in the order they happened.
    """

    __slots__ = ("_waiting", "_handled", "_turn", "_clock")

    def __init__(self) -> None:
        self._waiting: deque[PutAside] = deque()
        self._handled = 0  # losses handled in this reactor turn
        self._turn: IDelayedCall | None = None  # the call that starts the next turn's batch
        self._clock: IReactorTime | None = None

    @property
    def waiting(self) -> int:
        """Legs put aside, their loss not handled yet (those settled meanwhile among them until their turn)."""
        return len(self._waiting)

    def put_aside(self, leg: PutAside, clock: IReactorTime) -> bool:
        """Whether ``leg``'s loss waits for a later turn (then the pacer settles it); False: handle it now
        (``clock``: the proxy's, which every session shares)."""
        self._clock = clock
        if self._turn is None:
            self._turn = clock.callLater(0, self._new_turn)  # so that this turn's count starts again from 0
        if not self._waiting and self._handled < LOSSES_PER_TURN:
            self._handled += 1
            return False
        self._waiting.append(leg)
        return True

    def _new_turn(self) -> None:
        self._turn = None
        self._handled = 0
        waiting = self._waiting
        while waiting and self._handled < LOSSES_PER_TURN:
            self._handled += 1
            waiting.popleft().settle_loss()
        if (waiting or self._handled) and self._turn is None and self._clock is not None:
            self._turn = self._clock.callLater(0, self._new_turn)
