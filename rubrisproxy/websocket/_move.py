"""A session's move to another server: one dial at a time, backing off, until one takes it or it gives up."""

from __future__ import annotations

from enum import Enum
from random import uniform
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..http import NONE

if TYPE_CHECKING:
    from ..backend import Backend, Server
    from ..http import ResponseHead
    from ..origin import OriginConnection
    from ._moving import SessionMoving
    from ._resume import BackendDial
    from ._resumption import Resumption

#: The log of its moves (one Logger, not one per line: the class attribute's makes one at each read).
_log = Logger(namespace="rubrisproxy.websocket._move.SessionMove")

#: Backoff between attempts to open a new backend leg; each wait is drawn from its upper half (jitter), so that
#: the thousands of sessions a dead server left do not all try again in the same instant.
_FIRST_RETRY, _LAST_RETRY = 0.05, 2.0
#: A new backend leg lost within this of the move that opened it did not really take the session: the next move
#: carries on that one's backoff and resume-timeout (see :class:`~rubrisproxy.websocket._resumption.Resumption`).
SETTLED = 2.0
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013


class MoveState(Enum):
    """Where a :class:`SessionMove` is: waiting for its turn to dial, dialling, backing off, or ended."""

    WAITING = "waiting"  # for the proxy's DialPacer to let it dial
    DIALLING = "dialling"  # a dial (or the new leg it opened) is under way
    BACKING_OFF = "backing off"  # until its next attempt
    ENDED = "ended"


class SessionMove:
    """One move of a session's backend side, from the reason it moves until a new backend leg opens.

    Made when the session starts to move (its server leaving, a resume close code, a lost backend
    connection); :meth:`search` then dials the backend's servers one at a time (a
    :class:`~rubrisproxy.websocket.BackendDial`, whose owner it is), backing off between attempts; each
    dial starts when the proxy's :class:`~rubrisproxy.websocket._pacing.DialPacer` gives the move its turn.
    A server that failed in this move is not tried again until every one has had a go, one that
    refused the session never; the server the session left is tried last. The session gives up
    after ``resume-timeout``, or at once when every usable server has refused it.
    """

    __slots__ = ("_session", "_dialer", "_backend", "reason", "moved_from", "started", "_dial", "_retry", "_give_up_call",
                 "_backoff", "_tried", "_refused", "_refusal", "state", "dials", "relapses")

    def __init__(self, session: SessionMoving, dialer: Resumption, backend: Backend, reason: str,
                 relapses: int = 0) -> None:
        self._session = session
        self._dialer = dialer  # makes each attempt's dial
        self._backend = backend
        self.reason = reason  # why the session moves, as the log says it
        self.moved_from: Server | None = None  # the server it left
        self.started = 0.0  # when its old backend leg ended
        self._dial: BackendDial | None = None
        self._retry: IDelayedCall | None = None
        self._give_up_call: IDelayedCall | None = None
        #: Moves before it in a row whose new leg was lost at once (within SETTLED): it backs off before its first dial.
        self.relapses = relapses
        self._backoff = min(_FIRST_RETRY * 2 ** (relapses - 1), _LAST_RETRY) if relapses else _FIRST_RETRY
        self._tried: frozenset[Server] = NONE
        self._refused: frozenset[Server] = NONE  # servers that answered this move with a final refusal
        self._refusal = ""  # the last of them, as the log and the client's close reason say it
        self.state = MoveState.WAITING
        self.dials = 0  # dials made

    @property
    def client(self) -> str:
        """The session's client (a :class:`~rubrisproxy.websocket.BackendDial` balances by it)."""
        return self._session.client

    def search(self, moved_from: Server | None, started: float, resume_timeout: float, timer: IReactorTime) -> None:
        """Start dialling, the old backend leg having ended at ``started``; give up ``resume_timeout`` later on
        ``timer`` (a batched one: a dead server's thousands of moves leave no reactor call each)."""
        self.moved_from = moved_from
        self.started = started
        self._give_up_call = timer.callLater(resume_timeout, self._timed_out)
        if self.relapses:
            self._back_off()  # its last server took the session and lost it at once: not straight back
        else:
            self._dialer.pace(self)

    def hurry(self) -> None:
        """The session holds a message its client sent: if it waits for its turn, it dials among the first."""
        if self.state is MoveState.WAITING:
            self._dialer.hurry(self)

    def _retry_now(self) -> None:
        self._retry = None
        if self._session.resuming:
            self.state = MoveState.WAITING
            self._dialer.pace(self)

    def go(self) -> bool:
        """Its turn came (the pacer's): dial the next server; False if the move is over."""
        session = self._session
        if self.state is not MoveState.WAITING or not session.resuming:
            return False
        if not self.dials:
            moved_from = self.moved_from
            _log.info("session {id}: moving off {server} ({why}); holding client messages",
                      id=session.session_id, server=moved_from.name if moved_from else "-", why=self.reason)
        self.state = MoveState.DIALLING
        self.dials += 1
        backend = self._backend
        tried = self._tried | self._refused
        avoid = self._avoided()
        if not backend.usable(avoid):
            avoid = tried  # the server it left may be back
        if not backend.usable(avoid):
            self._tried = NONE  # every server had a go: start over, but not with those that refused the session
            avoid = self._refused
        self._dial = self._dialer.dial(self, avoid)
        self._dial.start()
        return True

    def _dial_ended(self) -> None:
        self._dial = None
        self._dialer.dial_ended()  # its place in the pacer goes to the next move

    def dial_failed(self, dial: BackendDial, why: str, final: bool) -> None:
        if dial is not self._dial:
            return
        self._dial_ended()
        self.attempt_failed(dial.server, why, final)

    def attempt_failed(self, server: Server | None, why: str, final: bool) -> None:
        """An attempt on ``server`` failed (``final``: it refused the session): try again later, or give up."""
        session = self._session
        if server is not None:
            self._tried = self._tried | {server}
            if final:
                self._refused = self._refused | {server}
                self._refusal = f"{server.name} refused it: {why}"
        if self._refused and not self._may_still_take():
            session.give_up("refused", SERVICE_RESTART, f"{self._refusal}; no other server can take it")
            return
        delay = self._back_off()
        _log.info("session {id}: {server} did not take over: {why}; next try in {delay:.3g}s",
                  id=session.session_id, server=server.name if server else "no server", why=why, delay=delay)

    def _back_off(self) -> float:
        """Wait before the next attempt (a random wait in the upper half of the backoff, which then doubles)."""
        delay = uniform(self._backoff / 2, self._backoff)
        self.state = MoveState.BACKING_OFF
        self._retry = self._session.clock.callLater(delay, self._retry_now)
        self._backoff = min(self._backoff * 2, _LAST_RETRY)
        return delay

    def _may_still_take(self) -> bool:
        """Whether a usable server has neither refused the session nor failed it yet in this move.

        Called once a server refused the session: when none is left, the client is closed at once
        (1012, so it reconnects) rather than left waiting for ``resume-timeout``. The server the
        session left counts as failed: it is not waited for.
        """
        return bool(self._backend.usable(self._avoided()))

    def _avoided(self) -> frozenset[Server]:
        """The servers this move does not try: those tried or refused, and the one the session left."""
        left = {self.moved_from} if self.moved_from is not None else NONE
        return self._tried | self._refused | left

    def dial_succeeded(self, dial: BackendDial, origin: OriginConnection, head: ResponseHead, rest: bytes) -> None:
        self._dial = None
        server = dial.server
        assert server is not None
        if not self._session.resuming:
            origin.transport.abortConnection()
            self._backend.release(server)
        else:
            self._session.took_over(server, origin, head, dial.key, rest)
        # Its place in the pacer given back once the session is on its new leg: the last move of a storm lets the
        # garbage collector run again (see DialPacer), which it then does after that session's answer, not before.
        self._dialer.dial_ended()

    def _timed_out(self) -> None:
        self._give_up_call = None
        self._session.give_up("timeout", TRY_AGAIN_LATER, "no server took the session within resume-timeout")

    def cancel(self) -> None:
        """Stop: no more dials, no give-up timer."""
        self.state = MoveState.ENDED
        for call in (self._retry, self._give_up_call):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._give_up_call = None
        if self._dial is not None:
            self._dial.cancel()
            self._dial_ended()
