"""When a session-mode WebSocket moves to another server, and how its new backend leg takes over.

:class:`SessionMoving` is a base of :class:`~rubrisproxy.websocket.WebSocketSession` (a base, so its methods
cost the message path nothing), on :class:`~rubrisproxy.websocket._ending.SessionEnding`. What the session
moves with (its handshake, held and replayed messages, the move in progress) is its
:class:`~rubrisproxy.websocket._resumption.Resumption`; when it moves is decided here, in its ``_state``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..http import HTTPError
from ..lifecycle import Termination
from ._ending import BACKEND_LOST, CLOSING, GOING_AWAY, MOVING, OPEN, RESUMING, SessionEnding, close, sendable
from ._move import TRY_AGAIN_LATER

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..backend import Server
    from ..config import WebSocketConfig
    from ..http import ResponseHead
    from ..origin import OriginConnection
    from ._eiorejoin import NewLeg
    from ._hooks import Message
    from ._legs import BackendLeg


class SessionMoving(SessionEnding):
    """When a session moves (its server leaving, a resume close code, its backend connection lost), what it
    holds and replays meanwhile, and the new backend leg's taking over or failing; a move given up ends it."""

    __slots__ = ("messages_in",)

    client: str
    messages_in: int  # messages sent to a backend leg
    _config: WebSocketConfig

    # Its backend legs

    def _open_backend_leg(self, origin: OriginConnection, head: ResponseHead, key: bytes, rest: bytes) -> None:
        self._backend_done = False
        leg = self._legs.open_backend(origin, head, key, list(self._resumption.offered))
        if rest and leg is self._legs.backend and not self._backend_done:  # not failed on the 101
            leg.dataReceived(rest)

    def _watch_server(self) -> None:
        """Be told when the session's server leaves; if it left while the session was joining it, move now."""
        server = self._handoff.server
        if server is None:
            return
        server.watchers.add(self)
        if server.draining or not server.up:
            self.server_leaving(server, "it is draining" if server.draining else "it is down")

    def _send(self, leg: BackendLeg, message: Message) -> None:
        self.messages_in += 1
        recent = self._resumption.recent
        if recent is not None:
            recent.append((self._handoff.clock.seconds(), message))
        leg.sendMessage(message.payload, message.binary)

    def _hold(self, message: Message) -> None:
        if self._state is CLOSING:
            return
        resumption = self._resumption
        refused = resumption.held.hold(message)
        if refused is not None:
            self.give_up(refused[0], TRY_AGAIN_LATER, refused[1])
        elif resumption.held.count == 1:
            resumption.held_first()  # its client now waits for an answer: its move goes ahead of idle ones

    # Moving to another server

    @property
    def _may_move(self) -> bool:
        leg = self._legs.client
        return (
            self._config.resume and (self._state is OPEN or self._state is MOVING)
            and leg is not None and leg.state == leg.STATE_OPEN and leg.held is None
        )

    def server_leaving(self, server: Server, why: str) -> None:
        """The server is down or draining: close its leg (1001), relay what it still sends, then move."""
        self.settle_loss()
        if self._state is not OPEN or not self._may_move or self._handoff.server is not server:
            return
        self._state = MOVING
        self._resumption.begin(self, f"{server.name} {why}")
        engineio = self._resumption.engineio
        if server.draining and engineio is not None and engineio.after_owed_acks(self._leave_drained):
            return  # its emits' acks first: a drain loses none
        close(self._legs.backend, GOING_AWAY, b"server " + why.encode())

    def _leave_drained(self) -> None:
        """The drained server answered the acks it owed (or did not in time): close its leg, then move."""
        if self._state is MOVING:
            close(self._legs.backend, GOING_AWAY, b"server it is draining")

    def _begin_resume(self, crashed: bool, lost_at: float | None) -> None:
        """The old backend leg is gone (at ``lost_at`` if its loss waited for its turn, else now): look for the next
        server, replaying what the lost one may have missed if it ``crashed``."""
        server = self._handoff.server
        if server is not None:
            server.watchers.discard(self)
        self._handoff.release_server()  # the next server's slot must not wait behind this one
        self._state = RESUMING
        started = lost_at if lost_at is not None else self._handoff.clock.seconds()
        self._legs.backend = None
        self._client.download.detach()
        if crashed and self._resumption.recent:
            # At least once: what was sent to the lost server lately goes to the next one too.
            for message in self._resumption.replayed(started):
                self._hold(message)
                if self._state is CLOSING:
                    return  # the replay did not fit in the session's buffer: the client has been told
        self._search(server, started)

    def _search(self, moved_from: Server | None, started: float) -> None:
        """Look for the next server (a session being carried to another process hands itself over instead)."""
        self._resumption.search(moved_from, started)

    # What its move calls

    @property
    def clock(self) -> IReactorTime:
        return self._handoff.clock

    @property
    def resuming(self) -> bool:
        """Whether it is looking for a server to move to."""
        return self._state is RESUMING

    @property
    def holding(self) -> bool:
        """Whether what the client sends now is held."""
        return self._state is MOVING or self._state is RESUMING

    def took_over(self, server: Server, origin: OriginConnection, head: ResponseHead, key: bytes, rest: bytes) -> None:
        """``server`` answered a dial with its 101: open the new backend leg on it."""
        self._handoff.switch_server(server)
        self._open_backend_leg(origin, head, key, rest)

    def _resumed(self, leg: BackendLeg) -> None:
        if leg.websocket_protocol_in_use != self._legs.protocol:
            self.give_up(
                "subprotocol", BACKEND_LOST,
                f"the new server chose subprotocol {leg.websocket_protocol_in_use!r}, not {self._legs.protocol!r}",
            )
            close(leg, GOING_AWAY, b"subprotocol mismatch")
            return
        if not self._resumption.rejoin(leg):
            self.rejoined(leg)

    def rejoined(self, leg: NewLeg) -> None:
        """The new backend leg is ready (for a Socket.IO session, rejoined): send what is held, and relay."""
        assert leg is self._legs.backend
        held = self._resumption.resumed()
        self._state = OPEN
        self._legs.wire()
        for message in held:
            self._send(leg, message)
        self._watch_server()
        self._settled()

    def _settled(self) -> None:
        """The session is OPEN again after a move (a move to another process waiting for that goes on)."""

    def rejoin_failed(self, leg: NewLeg, why: str) -> None:
        """The new server did not take the client's Engine.IO session: close its leg and try another."""
        backend = self._legs.backend
        if leg is not backend or self._state is not RESUMING:
            return
        self._attempt_failed(why)
        close(backend, GOING_AWAY, b"session not taken")

    def _attempt_failed(self, why: str) -> None:
        """The new backend leg will not do: the move tries another server."""
        self._legs.backend = None
        server = self._handoff.server
        self._handoff.release_server()
        move = self._resumption.move
        assert move is not None
        move.attempt_failed(server, why, final=True)

    def give_up(self, kind: str, code: int, why: str) -> None:
        """The session cannot move: close the client, saying why, and count it."""
        if self._state is CLOSING:
            return
        self._state = CLOSING
        lost = self._resumption.failed(kind)
        self._ending(Termination.RESUME_FAILED)
        self.log.warn("session {id} could not move: {why}; closing the client ({code}); {lost} held messages lost",
                      id=self.session_id, code=code, why=why, lost=lost)
        close(self._legs.client, code, why.encode())
        close(self._legs.backend, GOING_AWAY, b"session closed")

    # A backend leg's close: move, or end

    def defer_loss(self, leg: BackendLeg) -> bool:
        """Whether the loss of ``leg``'s connection waits for a later reactor turn (a storm of them: see
        :class:`~rubrisproxy.websocket._losses.LossPacer`); only an OPEN session's, which a Socket.IO one is not
        (its hook must see the move begin before the client's next message)."""
        if self._state is not OPEN or leg is not self._legs.backend or self._resumption.engineio is not None:
            return False
        handoff = self._handoff
        return handoff.resume_budget.losses.put_aside(leg, handoff.clock)

    def backend_closing(self, leg: BackendLeg, code: int | None, reason: bytes | None) -> None:
        """The backend sent a close: move the session if the code says so, else pass it on to the client."""
        if leg is not self._legs.backend:
            return
        client_leg = self._legs.client
        if client_leg is not None and client_leg.held is not None:
            client_leg.answer_held(sendable(code, reason))  # both closed at once: as the client would see it directly
            return
        if code in self._config.resume_codes and self._may_move:
            self._state = MOVING
            self._resumption.begin(self, f"it closed with {code}")
            return
        self._ending(Termination.SERVER_CLOSE)
        self._state = CLOSING
        close(self._legs.client, code, reason)

    def backend_closed(self, leg: BackendLeg, termination: Termination) -> None:
        if leg is not self._legs.backend:
            return
        self._backend_done = True
        if self._legs.client is None:
            # The 101 was not a valid answer to the proxy's handshake: the client is still on HTTP.
            self._ending(termination)
            self._handoff.websockets.discard(self)
            self._handoff.fail(
                HTTPError(502, f"backend WebSocket handshake failed: {leg.wasNotCleanReason}"), Termination.BAD_RESPONSE
            )
            self._deadline.stop()
            return
        if self._state is RESUMING:
            # The new server's 101 passed our checks but not Autobahn's (an extension, say), or it closed while a
            # Socket.IO session rejoined on it: try another.
            self._attempt_failed(f"its WebSocket ended before the session was on it: {leg.wasNotCleanReason}")
            return
        if self._may_move and self._legs.client.held is None:
            crashed = self._state is OPEN
            if crashed:
                self._resumption.begin(self, f"connection lost: {leg.wasNotCleanReason or 'closed'}")
            self._begin_resume(crashed, leg.lost_at)
            return
        self._ending(termination)
        client_leg = self._legs.client
        if client_leg.held is not None:
            client_leg.answer_held()
        elif self._state is not CLOSING:
            close(client_leg, BACKEND_LOST, b"backend connection lost")
        self._maybe_end()
