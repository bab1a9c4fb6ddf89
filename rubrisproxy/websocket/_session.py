"""Session mode: the proxy terminates the client's WebSocket and opens its own to the backend,
and keeps the client's WebSocket open while the backend side moves to another server.

Two Autobahn protocols share one :class:`WebSocketSession`: a server protocol on the
client's connection (:class:`ClientLeg`) and a client protocol on the backend's
(:class:`BackendLeg`). The first backend handshake goes out on the proxy's HTTP
path (so balancing, retries and a refusal passed back as it is all apply); its 101
is handed to the backend leg to check and open on, and only then is the client's
handshake answered, with the backend's subprotocol and headers.

A session outlives its backend legs. When the backend connection is lost, closes
with a retryable code, or its server goes down or is drained, the session holds
what the client sends, opens a new backend leg (``BackendDial``, then a new
``BackendLeg``) with the same handshake, and sends the held messages first.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..deadline import Deadline
from ..http import HTTPError, ResponseHead
from ..lifecycle import Termination
from ._eioresume import EngineIOResume, NewLeg
from ._hooks import ISessionView, Message
from ._legpair import LegPair
from ._legs import BackendLeg, ClientLeg
from ._move import TRY_AGAIN_LATER
from ._resumption import Resumption

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..backend import Backend, Server
    from ..origin import OriginConnection
    from ._handoff import UpgradeHandoff

#: Close codes an endpoint may put on the wire (RFC 6455 7.4.1, as Autobahn and browsers accept them).
_SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
#: Sent to a client whose backend went away without a close and could not be replaced. 1014 (bad
#: gateway) would say it better, but clients built on Autobahn, among others, refuse it.
BACKEND_LOST = 1011
GOING_AWAY = 1001


class _State(Enum):
    """Where a :class:`WebSocketSession` is (its ``_state``), changed by the session only.

    ``OPENING`` until the client's handshake is answered, then ``OPEN``. A move starts in
    ``MOVING`` when the old backend leg is asked to close (its server leaving, a resume close code)
    and goes on to ``RESUMING`` once that leg is gone; a backend connection lost while ``OPEN`` goes
    straight to ``RESUMING``. ``RESUMING`` returns to ``OPEN`` when a new backend leg opens. Any of
    them ends in ``CLOSING`` (a close from either side, a failure, drain, idle timeout, a move given up).
    """

    OPENING = "opening"  # the client's handshake is not answered yet
    OPEN = "open"  # relaying
    MOVING = "moving"  # the old backend leg is closing; client messages are held
    RESUMING = "resuming"  # no backend leg: a new one is being opened; client messages are held
    CLOSING = "closing"  # the session ends: nothing more moves


# Read through module names: a member read through its Enum class costs a descriptor call.
_OPENING, _OPEN, _MOVING, _RESUMING, _CLOSING = (
    _State.OPENING, _State.OPEN, _State.MOVING, _State.RESUMING, _State.CLOSING
)

@implementer(ISessionView)
class WebSocketSession:
    """A client's WebSocket in session mode: its legs, the hooks between them, and how it moves and ends.

    Messages are relayed whole, in order, text as text and binary as binary. Each
    side's transport is the other's streaming producer, so a slow reader pauses
    the other side. Closes are relayed with their codes. What it needs to move (its handshake, held
    and replayed messages, the move in progress) is its :class:`~rubrisproxy.websocket._resumption.Resumption`;
    when it moves is decided here, in its ``_state`` (see :class:`_State` and the module docstring).
    """

    log = Logger()

    __slots__ = (
        "session_id", "client", "_handoff", "_client", "_legs", "_backend", "_config", "_hooks",
        "_idle_limit", "_deadline", "_state", "_termination", "_client_done", "_backend_done", "_resumption", "messages_in", "messages_out",
        "__weakref__",
    )

    def __init__(self, handoff: UpgradeHandoff, origin: OriginConnection, backend: Backend, handshake: bytes) -> None:
        config = backend.websocket
        self.session_id = handoff.session_id
        self.client = handoff.client_address
        self._handoff = handoff
        self._client = handoff.client
        self._backend = backend
        self._config = config
        self._hooks = backend.websocket_hooks
        self._idle_limit = handoff.timeouts.tunnel
        self._deadline = Deadline(handoff.clock, self._idle)
        self._state = _OPENING
        self._legs = LegPair(self, handoff, origin, backend.leg_factories())
        self._termination: Termination | None = None
        self._client_done = self._backend_done = False
        self.messages_in = self.messages_out = 0
        engineio = EngineIOResume.for_session(self, config, handoff.head.target, backend.engineio, self.server)
        if engineio is not None:
            self._hooks = (engineio, *self._hooks)  # first: it sees what the client and the server sent, as they are
        self._resumption = Resumption(handoff, backend, handshake, engineio)

    @property
    def server(self) -> str | None:
        server = self._handoff.server
        return server.name if server is not None else None

    @property
    def buffered_bytes(self) -> int:
        return self._resumption.held.size

    @property
    def resumes(self) -> int:
        return self._resumption.resumes

    def describe(self) -> dict[str, object]:
        """The session as the admin API shows it."""
        return {
            "id": self.session_id, "client": self.client, "server": self.server, "state": self._state.value,
            "age": round(self._handoff.age(), 3),
            "buffered_bytes": self._resumption.held.size, "resumes": self._resumption.resumes,
            "messages_in": self.messages_in, "messages_out": self.messages_out,
        }

    # Opening

    def start(self, head: ResponseHead, from_origin: bytes) -> None:
        """Open the first backend leg on its 101, then answer the client (see the module docstring)."""
        self._legs.keep_headers(head)
        self._handoff.websockets.add(self)
        self._open_backend_leg(self._legs.origin, head, self._handoff.websocket_key or b"", from_origin)

    def _open_backend_leg(self, origin: OriginConnection, head: ResponseHead, key: bytes, rest: bytes) -> None:
        self._backend_done = False
        leg = self._legs.open_backend(origin, head, key, list(self._resumption.offered))
        if rest and leg is self._legs.backend and not self._backend_done:  # not failed on the 101
            leg.dataReceived(rest)

    def backend_opened(self, leg: BackendLeg) -> None:
        if self._legs.client is None:
            self._legs.open_client(leg)
        else:
            self._resumed(leg)

    def accept_client(self) -> tuple[str | None, dict[str, list[str]]]:
        """The answer to the client's handshake: the backend's subprotocol and headers."""
        return self._legs.answer()

    def client_opened(self) -> None:
        self._state = _OPEN
        self._deadline.set(self._idle_limit)
        self._watch_server()

    def _watch_server(self) -> None:
        """Be told when the session's server leaves; if it left while the session was joining it, move now."""
        server = self._handoff.server
        if server is None:
            return
        server.watchers.add(self)
        if server.draining or not server.up:
            self.server_leaving(server, "it is draining" if server.draining else "it is down")

    # Messages

    def from_client(self, payload: bytes, binary: bool) -> None:
        self._deadline.set(self._idle_limit)
        message = Message(payload, binary)
        if self._hooks:
            hooked = self._hooked(message, from_client=True)
            if hooked is None:
                return
            message = hooked
        self.send_to_backend(message)

    def from_backend(self, payload: bytes, binary: bool) -> None:
        self._deadline.set(self._idle_limit)
        message = Message(payload, binary)
        if self._hooks:
            hooked = self._hooked(message, from_client=False)
            if hooked is None:
                return
            message = hooked
        self.send_to_client(message)

    def _hooked(self, message: Message, from_client: bool) -> Message | None:
        """``message`` as the hooks leave it, in order; None if one dropped it."""
        for hook in self._hooks:
            changed = hook.client_message(self, message) if from_client else hook.backend_message(self, message)
            if changed is None:
                return None
            message = changed
        return message

    def send_to_backend(self, message: Message) -> None:
        state = self._state
        if state is _OPEN:
            leg = self._legs.backend
            if leg is not None and leg.state == leg.STATE_OPEN:
                self._send(leg, message)
                return
        if state is _MOVING or state is _RESUMING or state is _OPEN:
            self._hold(message)
        elif self._termination is Termination.RESUME_FAILED:
            self._backend.messages_lost += 1  # sent before the client saw its close: lost with the held ones

    def _send(self, leg: BackendLeg, message: Message) -> None:
        self.messages_in += 1
        recent = self._resumption.recent
        if recent is not None:
            recent.append((self._handoff.clock.seconds(), message))
        leg.sendMessage(message.payload, message.binary)

    def send_to_client(self, message: Message) -> None:
        leg = self._legs.client
        if leg is not None and leg.state == leg.STATE_OPEN:
            self.messages_out += 1
            leg.sendMessage(message.payload, message.binary)

    def _hold(self, message: Message) -> None:
        if self._state is _CLOSING:
            return
        refused = self._resumption.held.hold(message)
        if refused is not None:
            self.give_up(refused[0], TRY_AGAIN_LATER, refused[1])

    # Moving to another server

    @property
    def _may_move(self) -> bool:
        leg = self._legs.client
        return (
            self._config.resume and (self._state is _OPEN or self._state is _MOVING)
            and leg is not None and leg.state == leg.STATE_OPEN and leg.held is None
        )

    def server_leaving(self, server: Server, why: str) -> None:
        """The server is down or draining: close its leg (1001), relay what it still sends, then move."""
        if self._state is not _OPEN or not self._may_move or self._handoff.server is not server:
            return
        self._state = _MOVING
        self._resumption.begin(self, f"{server.name} {why}")
        _close(self._legs.backend, GOING_AWAY, b"server " + why.encode())

    def _begin_resume(self, crashed: bool) -> None:
        server = self._handoff.server
        if server is not None:
            server.watchers.discard(self)
        self._handoff.release_server()  # the next server's slot must not wait behind this one
        self._state = _RESUMING
        started = self._handoff.clock.seconds()
        self._legs.backend = None
        self._client.download.detach()
        if crashed and self._resumption.recent:
            # At least once: what was sent to the lost server lately goes to the next one too.
            for message in self._resumption.replayed():
                self._hold(message)
                if self._state is _CLOSING:
                    return  # the replay did not fit in the session's buffer: the client has been told
        self._resumption.search(server, started)

    # What its move calls

    @property
    def clock(self) -> IReactorTime:
        return self._handoff.clock

    @property
    def resuming(self) -> bool:
        """Whether it is looking for a server to move to."""
        return self._state is _RESUMING

    @property
    def holding(self) -> bool:
        """Whether what the client sends now is held."""
        return self._state is _MOVING or self._state is _RESUMING

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
            _close(leg, GOING_AWAY, b"subprotocol mismatch")
            return
        if not self._resumption.rejoin(leg):
            self.rejoined(leg)

    def rejoined(self, leg: NewLeg) -> None:
        """The new backend leg is ready (for a Socket.IO session, rejoined): send what is held, and relay."""
        assert leg is self._legs.backend
        held = self._resumption.resumed()
        self._state = _OPEN
        self._legs.wire()
        for message in held:
            self._send(leg, message)
        self._watch_server()

    def rejoin_failed(self, leg: NewLeg, why: str) -> None:
        """The new server did not take the client's Engine.IO session: close its leg and try another."""
        backend = self._legs.backend
        if leg is not backend or self._state is not _RESUMING:
            return
        self._attempt_failed(why)
        _close(backend, GOING_AWAY, b"session not taken")

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
        if self._state is _CLOSING:
            return
        self._state = _CLOSING
        lost = self._resumption.failed(kind)
        self._ending(Termination.RESUME_FAILED)
        self.log.warn("session {id} could not move: {why}; closing the client ({code}); {lost} held messages lost",
                      id=self.session_id, code=code, why=why, lost=lost)
        _close(self._legs.client, code, why.encode())
        _close(self._legs.backend, GOING_AWAY, b"session closed")

    # Closing

    @property
    def backend_open(self) -> bool:
        return self._legs.backend_open

    def client_closing(self, code: int | None, reason: bytes | None) -> None:
        """The client sent a close: pass it on to the backend."""
        self._ending(Termination.CLIENT_CLOSE)
        self._stop_moving()
        _close(self._legs.backend, code, reason)

    def client_failed(self, code: int, reason: str) -> None:
        """The client broke the protocol or a limit: close the backend, then fail the client with ``code``."""
        self._ending(Termination.PROTOCOL_ERROR)
        self._stop_moving()
        self.log.info("session {id}: the client broke the WebSocket protocol ({code}): {reason}",
                      id=self.session_id, code=code, reason=reason)
        _close(self._legs.backend, GOING_AWAY, b"client protocol error")

    def backend_answered_close(self, leg: BackendLeg, code: int | None, reason: bytes | None) -> None:
        """The backend answered a close the proxy sent it: the client's own close or failure can be answered."""
        if leg is self._legs.backend and self._legs.client is not None and self._state is not _MOVING:
            self._legs.client.answer_held(*_sendable(code, reason))

    def backend_closing(self, leg: BackendLeg, code: int | None, reason: bytes | None) -> None:
        """The backend sent a close: move the session if the code says so, else pass it on to the client."""
        if leg is not self._legs.backend:
            return
        client_leg = self._legs.client
        if client_leg is not None and client_leg.held is not None:
            client_leg.answer_held(*_sendable(code, reason))  # both closed at once: the client's close is answered
            return
        if code in self._config.resume_codes and self._may_move:
            self._state = _MOVING
            self._resumption.begin(self, f"it closed with {code}")
            return
        self._ending(Termination.SERVER_CLOSE)
        self._state = _CLOSING
        _close(self._legs.client, code, reason)

    def client_closed(self, termination: Termination) -> None:
        self._ending(termination)
        self._client_done = True
        self._stop_moving()
        _close(self._legs.backend, GOING_AWAY, b"client went away")
        self._maybe_end()

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
        if self._state is _RESUMING:
            # The new server's 101 passed our checks but not Autobahn's (an extension, say), or it closed while a
            # Socket.IO session rejoined on it: try another.
            self._attempt_failed(f"its WebSocket ended before the session was on it: {leg.wasNotCleanReason}")
            return
        if self._may_move and self._legs.client.held is None:
            crashed = self._state is _OPEN
            if crashed:
                self._resumption.begin(self, f"connection lost: {leg.wasNotCleanReason or 'closed'}")
            self._begin_resume(crashed)
            return
        self._ending(termination)
        client_leg = self._legs.client
        if client_leg.held is not None:
            client_leg.answer_held()
        elif self._state is not _CLOSING:
            _close(client_leg, BACKEND_LOST, b"backend connection lost")
        self._maybe_end()

    def _stop_moving(self) -> None:
        """The client is closing: a move in progress is abandoned."""
        state = self._state
        if state is _MOVING or state is _RESUMING:
            self._resumption.cancel()
            self._resumption.drop_held()
            if state is _RESUMING and self._legs.backend is None:
                self._backend_done = True  # no backend leg: a new one rejoining a Socket.IO session ends by itself
        self._state = _CLOSING

    def drain(self, code: int = GOING_AWAY) -> None:
        self._ending(Termination.SHUTDOWN)
        self._stop_moving()
        _close(self._legs.client, code, b"proxy restarting" if code == 1012 else b"proxy shutting down")
        _close(self._legs.backend, GOING_AWAY, b"proxy shutting down")

    def abort(self) -> None:
        self._stop_moving()
        self._legs.abort()

    def _idle(self) -> None:
        self._ending(Termination.IDLE_TIMEOUT)
        self._stop_moving()
        _close(self._legs.client, GOING_AWAY, b"idle timeout")
        _close(self._legs.backend, GOING_AWAY, b"idle timeout")

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
        self._deadline.stop()
        self._legs.unwire()
        for hook in self._hooks:
            hook.session_closed(self)
        self._handoff.ended(self._termination or Termination.OK)

    # The client connection's events go to the client leg

    def client_data(self, data: bytes) -> None:
        leg = self._legs.client
        assert leg is not None  # the session is the client connection's relay from the client leg's opening on
        leg.dataReceived(data)

    def client_fin(self) -> None:
        self._client.transport.loseConnection()

    def client_lost(self, reason: Failure) -> None:
        leg = self._legs.client
        assert leg is not None
        leg.connectionLost(reason)


def _close(leg: ClientLeg | BackendLeg | None, code: int | None, reason: bytes | None) -> None:
    """Start a leg's closing handshake with ``code`` (one that may go on the wire), unless it is already closing."""
    if leg is None or leg.state != leg.STATE_OPEN:
        return
    leg.sendCloseFrame(*_sendable(code, reason))


def _sendable(code: int | None, reason: bytes | None) -> tuple[int | None, bytes | None]:
    """A received close's code and reason as they may be sent on: codes that may not go on the wire become 1000."""
    if code is None:
        return None, None
    if code not in _SENDABLE and not 3000 <= code <= 4999:
        code = 1000
    return code, reason[:123] if reason else None
