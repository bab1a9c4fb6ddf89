"""What lets a session move to another server: its handshake, the messages it replays and holds, its moves."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.logger import Logger

from ..engineio import without_sid
from ._held import HeldMessages
from ._move import SETTLED, SessionMove
from ._resume import BackendDial, DialRequest

if TYPE_CHECKING:
    from ..backend import Backend, Server
    from ._eiorejoin import NewLeg
    from ._eioresume import EngineIOResume
    from ._handoff import UpgradeHandoff
    from ._hooks import Message
    from ._moving import SessionMoving

#: The log of its moves (one Logger, not one per line: the class attribute's makes one at each read).
_log = Logger(namespace="rubrisproxy.websocket._resumption.Resumption")


class Resumption:
    """A session's means to move, one per session: the handshake each new backend leg is opened with (a
    fresh key, the resume count), the messages sent lately that a crash replays (``replay-messages``,
    ``replay-window``), the client's messages held while there is no backend leg, the move in progress
    (a :class:`SessionMove`) and how many moves it made. The session decides when it moves.

    A Socket.IO session has an ``engineio`` (:class:`~rubrisproxy.websocket._eioresume.EngineIOResume`): a move
    it can rejoin dials without the old Engine.IO ``sid`` and rejoins on the new leg before the held messages go.
    """

    __slots__ = ("_handoff", "_backend", "offered", "_template", "recent", "held", "move", "resumes", "engineio",
                 "_rejoins", "_resumed_at", "_relapses", "_series_started")

    def __init__(self, handoff: UpgradeHandoff, backend: Backend, handshake: bytes,
                 engineio: EngineIOResume | None = None) -> None:
        config = backend.websocket
        self._handoff = handoff
        self._backend = backend
        assert handoff.upgrade is not None
        self.offered = handoff.upgrade.protocols  # the subprotocols every backend handshake offers
        self._template = handshake.replace(handoff.websocket_key or b"", b"%KEY%")
        #: What was sent to the backend lately, with when: replayed to the next server after a crash.
        self.recent: deque[tuple[float, Message]] | None = (
            deque(maxlen=config.replay_messages) if config.replay_messages else None
        )
        self.held = HeldMessages(config.session_buffer, handoff.resume_budget)  # waiting for a backend leg
        self.move: SessionMove | None = None  # from the reason it moves until a new backend leg opens
        self.resumes = 0
        self.engineio = engineio
        self._rejoins = False  # whether the move in progress rejoins an Engine.IO session
        # A server may take the session and lose it at once, again and again (a crash on resume, a protocol error):
        # the moves in a row whose new leg lasted less than SETTLED are one series, backing off as one move does,
        # and given up resume-timeout after the first began.
        self._resumed_at = 0.0  # when the last move ended
        self._relapses = 0  # moves in a row whose new leg was lost within SETTLED
        self._series_started = 0.0  # when the first of them began

    @property
    def template(self) -> bytes:
        """The backend handshake each new backend leg is opened with, ``%KEY%`` where its key goes."""
        return self._template

    def begin(self, session: SessionMoving, reason: str) -> None:
        """The session starts to move, for ``reason`` (as the log says it)."""
        settled = not self.resumes or self._handoff.clock.seconds() - self._resumed_at >= SETTLED
        self._relapses = 0 if settled else self._relapses + 1
        self.move = SessionMove(session, self, self._backend, reason, self._relapses)
        self._rejoins = self.engineio is not None and self.engineio.moving()

    def search(self, moved_from: Server | None, started: float) -> None:
        """Dial the backend's servers, the old leg (on ``moved_from``) having ended at ``started``."""
        assert self.move is not None  # made as the session began to move
        resume_timeout = self._backend.websocket.resume_timeout
        if self.move.relapses:
            resume_timeout = max(0.0, resume_timeout - (self._handoff.clock.seconds() - self._series_started))
        else:
            self._series_started = started
        self.move.search(moved_from, started, resume_timeout, self._handoff.idle_clock)
        if self._rejoins:
            self._acks_lost(moved_from)

    def _acks_lost(self, moved_from: Server | None) -> None:
        assert self.engineio is not None
        lost = self.engineio.moved_off()
        if lost:
            self._backend.messages_lost += lost
            _log.info("session {id}: {lost} emits sent to {server} never got their ack (lost with it)",
                      id=self._handoff.session_id, lost=lost, server=moved_from.name if moved_from else "-")

    def rejoin(self, leg: NewLeg) -> bool:
        """A new backend leg opened: whether the session waits for an Engine.IO rejoin on it first."""
        return self._rejoins and self.engineio is not None and self.engineio.rejoin(leg)

    def dial(self, move: SessionMove, avoid: frozenset[Server]) -> BackendDial:
        """A dial for ``move``'s next attempt, avoiding the servers in ``avoid``."""
        template = without_sid(self._template) if self._rejoins else self._template
        # The session header is the last line that can end so: a client's header that does too stays as sent.
        before, mark, after = template.rpartition(b"; resume=0\r\n")
        handshake = before + b"; resume=%d\r\n" % (self.resumes + 1) + after if mark else template
        handoff, backend = self._handoff, self._backend
        request = DialRequest(handoff.head, handshake, self.offered, backend.websocket.open_handshake_timeout)
        return BackendDial(move, request, backend, handoff.pool, avoid)

    def pace(self, move: SessionMove) -> None:
        """Let ``move`` dial when the proxy's pacer gives it its turn (at once unless many sessions are moving; among
        the first if the session holds messages: its client waits for an answer)."""
        self._handoff.resume_budget.dials.start(move, self._handoff.clock, urgent=self.held.count > 0)

    def hurry(self, move: SessionMove) -> None:
        """``move`` waits for its turn and the session now holds a message: it dials among the first."""
        self._handoff.resume_budget.dials.hurry(move, self._handoff.clock)

    def held_first(self) -> None:
        """The session holds its first message (its client now waits for an answer): a move waiting for its turn
        dials among the first."""
        if self.move is not None:
            self.move.hurry()

    def dial_ended(self) -> None:
        """A dial its move made (on its turn) ended: answered, failed or cancelled."""
        self._handoff.resume_budget.dials.done()

    def replayed(self, lost_at: float) -> list[Message]:
        """At least once: what was sent to a server lost at ``lost_at`` within the replay window before, then what is
        held, in order; neither is kept."""
        window = self._backend.websocket.replay_window
        oldest = lost_at - window if window else float("-inf")
        recent = self.recent
        assert recent is not None
        replay = [message for sent_at, message in recent if sent_at >= oldest]
        if self._rejoins and self.engineio is not None:
            replay = [message for message in replay if self.engineio.replayable(message)]
        recent.clear()
        return replay + self.held.release()

    def drop_held(self) -> int:
        """The held messages will reach no server: count them lost; how many."""
        lost = len(self.held.release())
        self._backend.messages_lost += lost
        return lost

    def resumed(self) -> list[Message]:
        """A new backend leg opened: the move is over, counted and logged; the held messages, to send first."""
        move = self.move
        assert move is not None
        self.cancel()
        self.resumes += 1
        handoff, backend = self._handoff, self._backend
        self._resumed_at = now = handoff.clock.seconds()
        took = now - move.started
        backend.resumes += 1
        backend.resume_seconds.observe(took)
        held = self.held.release()
        moved_from, server = move.moved_from, handoff.server
        _log.info(
            "session {id} resumed: {old} -> {new} in {ms:.0f} ms ({why}); {count} held messages sent, resume #{n}",
            id=handoff.session_id, old=moved_from.name if moved_from else "-", new=server.name if server else "-",
            ms=took * 1000, why=move.reason, count=len(held), n=self.resumes,
        )
        return held

    def failed(self, kind: str) -> int:
        """The session could not move (``kind``: why, as counted): no more dials; the held messages are lost
        (how many is returned)."""
        self.cancel()
        failures = self._backend.resume_failures
        failures[kind] = failures.get(kind, 0) + 1
        return self.drop_held()

    def cancel(self) -> None:
        """No move in progress any more: its dials and timers stop."""
        move, self.move = self.move, None
        if move is not None:
            move.cancel()
            if self.engineio is not None:
                self.engineio.stop_moving()
