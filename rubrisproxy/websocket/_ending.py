"""How a session-mode WebSocket ends: its state, closes relayed from either side, drain, idle timeout, abort,
and its end counted once both legs are done.

:class:`SessionEnding` is the bottom base of :class:`~rubrisproxy.websocket.WebSocketSession` (a base, so its
methods cost the message path nothing); :class:`~rubrisproxy.websocket._moving.SessionMoving` builds on it.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from ..lifecycle import Termination

if TYPE_CHECKING:
    from twisted.logger import Logger

    from ..deadline import Deadline
    from ._handoff import ClientSide, UpgradeHandoff
    from ._legpair import LegPair
    from ._legs import BackendLeg, ClientLeg
    from ._resumption import Resumption

#: Close codes an endpoint may put on the wire (RFC 6455 7.4.1, as Autobahn and browsers accept them).
_SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
#: Sent to a client whose backend went away without a close and could not be replaced. 1014 (bad
#: gateway) would say it better, but clients built on Autobahn, among others, refuse it.
BACKEND_LOST = 1011
GOING_AWAY = 1001


class SessionState(Enum):
    """Where a :class:`~rubrisproxy.websocket.WebSocketSession` is (its ``_state``), changed by the session only.

    ``OPENING`` until the client's handshake is answered, then ``OPEN``. A move starts in
    ``MOVING`` when the old backend leg is asked to close (its server leaving, a resume close code)
    and goes on to ``RESUMING`` once that leg is gone; a backend connection lost while ``OPEN`` goes
    straight to ``RESUMING``. ``RESUMING`` returns to ``OPEN`` when a new backend leg opens. Any of
    them ends in ``CLOSING`` (a close from either side, a failure, drain, idle timeout, a move given up), or, from
    ``RESUMING``, in ``CARRIED``: another rubrisproxy process took it over (an upgrade), and it is gone from here.
    """

    OPENING = "opening"  # the client's handshake is not answered yet
    OPEN = "open"  # relaying
    MOVING = "moving"  # the old backend leg is closing; client messages are held
    RESUMING = "resuming"  # no backend leg: a new one is being opened; client messages are held
    CLOSING = "closing"  # the session ends: nothing more moves
    CARRIED = "carried"  # another process has it: nothing more moves here, and its end is not this process's


# Read through module names: a member read through its Enum class costs a descriptor call.
OPENING, OPEN, MOVING, RESUMING, CLOSING, CARRIED = (
    SessionState.OPENING, SessionState.OPEN, SessionState.MOVING, SessionState.RESUMING, SessionState.CLOSING,
    SessionState.CARRIED,
)


class SessionEnding:
    """How a session ends: the closes either side sends, drain, idle timeout and abort, each ending it with its
    :class:`~rubrisproxy.lifecycle.Termination` (the first one counts), and its end once both legs are done."""

    __slots__ = ("_state", "_termination", "_client_done", "_backend_done")

    log: Logger
    session_id: str
    _handoff: UpgradeHandoff
    _client: ClientSide
    _legs: LegPair
    _hooks: tuple[Any, ...]  # the backend's IWebSocketHook providers, after an EngineIOResume if it has one
    _deadline: Deadline
    _state: SessionState
    _termination: Termination | None
    _client_done: bool
    _backend_done: bool
    _resumption: Resumption

    @property
    def backend_open(self) -> bool:
        return self._legs.backend_open

    def settle_loss(self) -> None:
        """If the backend leg's lost connection waits for its turn (a storm of losses: see
        :class:`~rubrisproxy.websocket._losses.LossPacer`), handle it now: what comes next (the client's close, its
        connection's loss, a drain) follows it, as it would have had the loss been handled as it came."""
        if self._state is OPEN:
            leg = self._legs.backend
            if leg is not None and leg.loss_waits:
                leg.settle_loss()

    def client_closing(self, code: int | None, reason: bytes | None) -> None:
        """The client sent a close: pass it on to the backend."""
        self._ending(Termination.CLIENT_CLOSE)
        self._stop_moving()
        close(self._legs.backend, code, reason)

    def client_half_closed(self) -> None:
        """The client half-closed without a close frame, its connection held open for what the backend still sends
        (see ``WebSocketSession.client_fin``): close the backend."""
        self._ending(Termination.CLIENT_ABORT)
        self._stop_moving()
        close(self._legs.backend, GOING_AWAY, b"client went away")

    def client_failed(self, code: int, reason: str) -> None:
        """The client broke the protocol or a limit: close the backend, then fail the client with ``code``."""
        self._ending(Termination.PROTOCOL_ERROR)
        self._stop_moving()
        self.log.info("session {id}: the client broke the WebSocket protocol ({code}): {reason}",
                      id=self.session_id, code=code, reason=reason)
        close(self._legs.backend, GOING_AWAY, b"client protocol error")

    def backend_answered_close(self, leg: BackendLeg, code: int | None, reason: bytes | None) -> None:
        """The backend answered a close the proxy sent it: the client's own close (in kind, whatever the backend's
        answer said) or failure can be answered."""
        if leg is self._legs.backend and self._legs.client is not None and self._state is not MOVING:
            self._legs.client.answer_held()

    def client_closed(self, termination: Termination) -> None:
        self._ending(termination)
        self._client_done = True
        self._stop_moving()
        close(self._legs.backend, GOING_AWAY, b"client went away")
        self._maybe_end()

    def _stop_moving(self) -> None:
        """The client is closing: a move in progress is abandoned."""
        state = self._state
        if state is MOVING or state is RESUMING:
            self._resumption.cancel()
            self._resumption.drop_held()
            if state is RESUMING and self._legs.backend is None:
                self._backend_done = True  # no backend leg: a new one rejoining a Socket.IO session ends by itself
        self._state = CLOSING

    def drain(self, code: int = GOING_AWAY) -> None:
        self.settle_loss()
        self._ending(Termination.SHUTDOWN)
        self._stop_moving()
        close(self._legs.client, code, b"proxy restarting" if code == 1012 else b"proxy shutting down")
        close(self._legs.backend, GOING_AWAY, b"proxy shutting down")

    def abort(self) -> None:
        self.settle_loss()
        self._stop_moving()
        self._legs.abort()

    def _idle(self) -> None:
        self.settle_loss()
        self._ending(Termination.IDLE_TIMEOUT)
        self._stop_moving()
        close(self._legs.client, GOING_AWAY, b"idle timeout")
        close(self._legs.backend, GOING_AWAY, b"idle timeout")

    def _ending(self, termination: Termination) -> None:
        if self._termination is None:
            self._termination = termination
            self._client.websocket_ended(termination)  # the client connection's end, before its TCP close

    def _maybe_end(self) -> None:
        if not (self._client_done and self._backend_done):
            return
        self._handoff.websockets.discard(self)
        server = self._handoff.server
        if server is not None:
            server.watchers.discard(self)
        self._resumption.drop_held()
        self._deadline.disown()  # stopped; its callback, this session, let go (a cycle)
        self._legs.unwire()
        for hook in self._hooks:
            hook.session_closed(self)
        self._handoff.ended(self._termination or Termination.OK)
        self._legs.release()


def close(leg: ClientLeg | BackendLeg | None, code: int | None, reason: bytes | None) -> None:
    """Start a leg's closing handshake with ``code`` (one that may go on the wire), unless it is already closing."""
    if leg is None or leg.state != leg.STATE_OPEN:
        return
    leg.sendCloseFrame(*sendable(code, reason))


def sendable(code: int | None, reason: bytes | None) -> tuple[int | None, bytes | None]:
    """A received close's code and reason as they may be sent on: codes that may not go on the wire become 1000."""
    if code is None:
        return None, None
    if code not in _SENDABLE and not 3000 <= code <= 4999:
        code = 1000
    return code, reason[:123] if reason else None
