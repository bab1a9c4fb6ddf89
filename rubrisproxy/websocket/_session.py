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

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..deadline import Deadline
from ..http import HTTPError, ResponseHead, serialize_headers
from ..lifecycle import Termination
from ._handshake import HANDSHAKE_HEADERS
from ._held import HeldMessages
from ._hooks import ISessionView, Message
from ._legs import BackendLeg, ClientLeg
from ._move import TRY_AGAIN_LATER, SessionMove
from ._resume import BackendDial, DialRequest

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
    OPENING = "opening"  # the client's handshake is not answered yet
    OPEN = "open"  # relaying
    MOVING = "moving"  # the old backend leg is closing; client messages are held
    RESUMING = "resuming"  # no backend leg: a new one is being opened; client messages are held
    CLOSING = "closing"  # the session ends: nothing more moves


@implementer(ISessionView)
class WebSocketSession:
    """A client's WebSocket in session mode: its legs, the hooks between them, and how it moves and ends.

    Messages are relayed whole, in order, text as text and binary as binary. Each
    side's transport is the other's streaming producer, so a slow reader pauses
    the other side. Closes are relayed with their codes.
    """

    log = Logger()

    __slots__ = (
        "session_id", "client", "_handoff", "_client", "_origin", "_backend", "_config", "_factories", "_hooks",
        "_idle_limit", "_deadline", "_state", "_client_leg", "_backend_leg", "_client_headers",
        "_protocol", "_offered", "_template", "_termination", "_client_done", "_backend_done", "_held",
        "_recent", "_move", "resumes", "messages_in", "messages_out", "__weakref__",
    )

    def __init__(self, handoff: UpgradeHandoff, origin: OriginConnection, backend: Backend, handshake: bytes) -> None:
        config = backend.websocket
        self.session_id = handoff.session_id
        self.client = handoff.client_address
        self._handoff = handoff
        self._client = handoff.client
        self._origin = origin
        self._backend = backend
        self._config = config
        self._factories = backend.leg_factories()
        self._hooks = backend.websocket_hooks
        self._idle_limit = handoff.timeouts.tunnel
        self._deadline = Deadline(handoff.clock, self._idle)
        self._state = _State.OPENING
        self._client_leg: ClientLeg | None = None
        self._backend_leg: BackendLeg | None = None
        self._client_headers: dict[str, list[str]] = {}
        self._protocol: str | None = None
        assert handoff.upgrade is not None
        self._offered = handoff.upgrade.protocols  # the subprotocols every backend handshake offers
        # The handshake every later backend leg is opened with: a fresh key, the resume count.
        self._template = handshake.replace(handoff.websocket_key or b"", b"%KEY%")
        self._termination: Termination | None = None
        self._client_done = self._backend_done = False
        self._held = HeldMessages(config.session_buffer, handoff.resume_budget)  # waiting for a backend leg
        self._recent: deque[tuple[float, Message]] | None = (
            deque(maxlen=config.replay_messages) if config.replay_messages else None
        )
        self._move: SessionMove | None = None  # from the reason it moves until a new backend leg opens
        self.resumes = 0
        self.messages_in = self.messages_out = 0

    @property
    def server(self) -> str | None:
        server = self._handoff.server
        return server.name if server is not None else None

    @property
    def buffered_bytes(self) -> int:
        return self._held.size

    def describe(self) -> dict[str, object]:
        """The session as the admin API shows it."""
        return {
            "id": self.session_id, "client": self.client, "server": self.server, "state": self._state.value,
            "age": round(self._handoff.age(), 3),
            "buffered_bytes": self._held.size, "resumes": self.resumes,
            "messages_in": self.messages_in, "messages_out": self.messages_out,
        }

    # Opening

    def start(self, head: ResponseHead, from_origin: bytes) -> None:
        """Open the first backend leg on its 101, then answer the client (see the module docstring)."""
        for name, value in head.forward:
            if name.lower() not in HANDSHAKE_HEADERS and name.lower() != b"sec-websocket-accept":
                self._client_headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        self._handoff.websockets.add(self)
        self._open_backend_leg(self._origin, head, self._handoff.websocket_key or b"", from_origin)

    def _open_backend_leg(self, origin: OriginConnection, head: ResponseHead, key: bytes, rest: bytes) -> None:
        self._origin = origin
        self._backend_done = False
        leg = self._factories.backend_leg()
        leg.factory = self._factories.client
        self._backend_leg = leg
        switch = b"HTTP/1.1 101 Switching Protocols\r\n%s\r\n" % serialize_headers(head.headers)
        leg.attach(self, origin, switch, key, list(self._offered))
        if rest and leg is self._backend_leg and not self._backend_done:
            leg.dataReceived(rest)

    def backend_opened(self, leg: BackendLeg) -> None:
        if self._client_leg is None:
            self._open_client_leg(leg)
        else:
            self._resumed(leg)

    def _open_client_leg(self, backend_leg: BackendLeg) -> None:
        client = self._client
        leg = self._factories.client_leg()
        leg.factory = self._factories.server
        leg.session = self
        leg.gate = client.gate
        leg.meter = client
        self._client_leg = leg
        self._protocol = backend_leg.websocket_protocol_in_use
        from_client = client.take_over(self)
        leg.makeConnection(client.transport)
        self._wire_flow_control()
        leg.dataReceived(self._handoff.client_handshake() + from_client)

    def _wire_flow_control(self) -> None:
        self._client.download.attach(self._origin.gate)  # type: ignore[arg-type]
        self._origin.upload.attach(self._client.gate)

    def accept_client(self) -> tuple[str | None, dict[str, list[str]]]:
        """The answer to the client's handshake: the backend's subprotocol and headers."""
        return self._protocol, self._client_headers

    def client_opened(self) -> None:
        self._state = _State.OPEN
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
        message: Message | None = Message(payload, binary)
        if self._hooks:
            message = self._hooked(message, from_client=True)  # type: ignore[arg-type]
        if message is not None:
            self.send_to_backend(message)

    def from_backend(self, payload: bytes, binary: bool) -> None:
        self._deadline.set(self._idle_limit)
        message: Message | None = Message(payload, binary)
        if self._hooks:
            message = self._hooked(message, from_client=False)  # type: ignore[arg-type]
        if message is not None:
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
        if state is _State.OPEN:
            leg = self._backend_leg
            if leg is not None and leg.state == leg.STATE_OPEN:
                self._send(leg, message)
                return
        if state is _State.MOVING or state is _State.RESUMING or state is _State.OPEN:
            self._hold(message)
        elif self._termination is Termination.RESUME_FAILED:
            self._backend.messages_lost += 1  # sent before the client saw its close: lost with the held ones

    def _send(self, leg: BackendLeg, message: Message) -> None:
        self.messages_in += 1
        if self._recent is not None:
            self._recent.append((self._handoff.clock.seconds(), message))
        leg.sendMessage(message.payload, message.binary)

    def send_to_client(self, message: Message) -> None:
        leg = self._client_leg
        if leg is not None and leg.state == leg.STATE_OPEN:
            self.messages_out += 1
            leg.sendMessage(message.payload, message.binary)

    def _hold(self, message: Message) -> None:
        if self._state is _State.CLOSING:
            return
        refused = self._held.hold(message)
        if refused is not None:
            self.give_up(refused[0], TRY_AGAIN_LATER, refused[1])

    def _drop_held(self) -> int:
        """The held messages will reach no server: count them lost; how many."""
        lost = len(self._held.release())
        self._backend.messages_lost += lost
        return lost

    # Moving to another server

    @property
    def _may_move(self) -> bool:
        leg = self._client_leg
        return (
            self._config.resume and self._state in (_State.OPEN, _State.MOVING)
            and leg is not None and leg.state == leg.STATE_OPEN and leg.held is None
        )

    def server_leaving(self, server: Server, why: str) -> None:
        """The server is down or draining: close its leg (1001), relay what it still sends, then move."""
        if self._state is not _State.OPEN or not self._may_move or self._handoff.server is not server:
            return
        self._state = _State.MOVING
        self._move = SessionMove(self, self._backend, f"{server.name} {why}")
        _close(self._backend_leg, GOING_AWAY, b"server " + why.encode())

    def _begin_resume(self, crashed: bool) -> None:
        server = self._handoff.server
        if server is not None:
            server.watchers.discard(self)
        self._handoff.release_server()  # the next server's slot must not wait behind this one
        self._state = _State.RESUMING
        started = self._handoff.clock.seconds()
        self._backend_leg = None
        self._client.download.detach()
        if crashed and self._recent:
            self._replay_recent()
            if self._state is _State.CLOSING:
                return  # the replay did not fit in the session's buffer: the client has been told
        move = self._move
        assert move is not None  # made as the session began to move
        move.search(server, started, self._config.resume_timeout)

    def _replay_recent(self) -> None:
        """At least once: what was sent to the lost server lately goes to the next one too."""
        window = self._config.replay_window
        oldest = self._handoff.clock.seconds() - window if window else float("-inf")
        recent = self._recent
        assert recent is not None
        replay = [message for sent_at, message in recent if sent_at >= oldest]
        recent.clear()
        held = self._held.release()
        for message in replay + list(held):
            self._hold(message)
            if self._state is _State.CLOSING:
                return

    # What its move calls

    @property
    def clock(self) -> IReactorTime:
        return self._handoff.clock

    @property
    def resuming(self) -> bool:
        """Whether it is looking for a server to move to."""
        return self._state is _State.RESUMING

    def dial(self, move: SessionMove, avoid: frozenset[Server]) -> BackendDial:
        """A dial for ``move``'s next attempt, avoiding the servers in ``avoid``."""
        # The session header is the last line that can end so: a client's header that does too stays as sent.
        before, mark, after = self._template.rpartition(b"; resume=0\r\n")
        handshake = before + b"; resume=%d\r\n" % (self.resumes + 1) + after if mark else self._template
        request = DialRequest(self._handoff.head, handshake, self._offered, self._config.open_handshake_timeout)
        return BackendDial(move, request, self._backend, self._handoff.pool, avoid)

    def took_over(self, server: Server, origin: OriginConnection, head: ResponseHead, key: bytes, rest: bytes) -> None:
        """``server`` answered a dial with its 101: open the new backend leg on it."""
        self._handoff.switch_server(server)
        self._open_backend_leg(origin, head, key, rest)

    def _resumed(self, leg: BackendLeg) -> None:
        if leg.websocket_protocol_in_use != self._protocol:
            self.give_up(
                "subprotocol", BACKEND_LOST,
                f"the new server chose subprotocol {leg.websocket_protocol_in_use!r}, not {self._protocol!r}",
            )
            _close(leg, GOING_AWAY, b"subprotocol mismatch")
            return
        move = self._move
        assert move is not None
        self._cancel_move()
        self._state = _State.OPEN
        self.resumes += 1
        self._backend.resumes += 1
        self._backend.resume_seconds.observe(self._handoff.clock.seconds() - move.started)
        server = self._handoff.server
        self._wire_flow_control()
        held = self._held.release()
        for message in held:
            self._send(leg, message)
        moved_from = move.moved_from
        self.log.info(
            "session {id} resumed: {old} -> {new} in {ms:.0f} ms ({why}); {count} held messages sent, resume #{n}",
            id=self.session_id, old=moved_from.name if moved_from else "-", new=server.name if server else "-",
            ms=(self._handoff.clock.seconds() - move.started) * 1000, why=move.reason,
            count=len(held), n=self.resumes,
        )
        self._watch_server()

    def give_up(self, kind: str, code: int, why: str) -> None:
        """The session cannot move: close the client, saying why, and count it."""
        if self._state is _State.CLOSING:
            return
        self._state = _State.CLOSING
        self._cancel_move()
        lost = self._drop_held()
        failures = self._backend.resume_failures
        failures[kind] = failures.get(kind, 0) + 1
        self._ending(Termination.RESUME_FAILED)
        self.log.warn("session {id} could not move: {why}; closing the client ({code}); {lost} held messages lost",
                      id=self.session_id, code=code, why=why, lost=lost)
        _close(self._client_leg, code, why.encode())
        _close(self._backend_leg, GOING_AWAY, b"session closed")

    def _cancel_move(self) -> None:
        move, self._move = self._move, None
        if move is not None:
            move.cancel()

    # Closing

    @property
    def backend_open(self) -> bool:
        leg = self._backend_leg
        return leg is not None and leg.state == leg.STATE_OPEN

    def client_closing(self, code: int | None, reason: bytes | None) -> None:
        """The client sent a close: pass it on to the backend."""
        self._ending(Termination.CLIENT_CLOSE)
        self._stop_moving()
        _close(self._backend_leg, code, reason)

    def client_failed(self, code: int, reason: str) -> None:
        """The client broke the protocol or a limit: close the backend, then fail the client with ``code``."""
        self._ending(Termination.PROTOCOL_ERROR)
        self._stop_moving()
        self.log.info("session {id}: the client broke the WebSocket protocol ({code}): {reason}",
                      id=self.session_id, code=code, reason=reason)
        _close(self._backend_leg, GOING_AWAY, b"client protocol error")

    def backend_answered_close(self, leg: BackendLeg, code: int | None, reason: bytes | None) -> None:
        """The backend answered a close the proxy sent it: the client's own close or failure can be answered."""
        if leg is self._backend_leg and self._client_leg is not None and self._state is not _State.MOVING:
            self._client_leg.answer_held(*_sendable(code, reason))

    def backend_closing(self, leg: BackendLeg, code: int | None, reason: bytes | None) -> None:
        """The backend sent a close: move the session if the code says so, else pass it on to the client."""
        if leg is not self._backend_leg:
            return
        client_leg = self._client_leg
        if client_leg is not None and client_leg.held is not None:
            client_leg.answer_held(*_sendable(code, reason))  # both closed at once: the client's close is answered
            return
        if code in self._config.resume_codes and self._may_move:
            self._state = _State.MOVING
            self._move = SessionMove(self, self._backend, f"it closed with {code}")
            return
        self._ending(Termination.SERVER_CLOSE)
        self._state = _State.CLOSING
        _close(self._client_leg, code, reason)

    def client_closed(self, termination: Termination) -> None:
        self._ending(termination)
        self._client_done = True
        self._stop_moving()
        _close(self._backend_leg, GOING_AWAY, b"client went away")
        self._maybe_end()

    def backend_closed(self, leg: BackendLeg, termination: Termination) -> None:
        if leg is not self._backend_leg:
            return
        self._backend_done = True
        if self._client_leg is None:
            # The 101 was not a valid answer to the proxy's handshake: the client is still on HTTP.
            self._ending(termination)
            self._handoff.websockets.discard(self)
            self._handoff.fail(
                HTTPError(502, f"backend WebSocket handshake failed: {leg.wasNotCleanReason}"), Termination.BAD_RESPONSE
            )
            self._deadline.stop()
            return
        if self._state is _State.RESUMING:
            # The new server's 101 passed our checks but not Autobahn's (an extension, say): try another.
            self._backend_leg = None
            server = self._handoff.server
            self._handoff.release_server()
            move = self._move
            assert move is not None
            move.attempt_failed(server, f"its WebSocket handshake failed: {leg.wasNotCleanReason}", final=True)
            return
        if self._may_move and self._client_leg.held is None:
            crashed = self._state is _State.OPEN
            if crashed:
                self._move = SessionMove(self, self._backend, f"connection lost: {leg.wasNotCleanReason or 'closed'}")
            self._begin_resume(crashed)
            return
        self._ending(termination)
        client_leg = self._client_leg
        if client_leg.held is not None:
            client_leg.answer_held()
        elif self._state is not _State.CLOSING:
            _close(client_leg, BACKEND_LOST, b"backend connection lost")
        self._maybe_end()

    def _stop_moving(self) -> None:
        """The client is closing: a move in progress is abandoned."""
        if self._state in (_State.MOVING, _State.RESUMING):
            self._cancel_move()
            self._drop_held()
            if self._state is _State.RESUMING:
                self._backend_done = True
        self._state = _State.CLOSING

    def drain(self, code: int = GOING_AWAY) -> None:
        self._ending(Termination.SHUTDOWN)
        self._stop_moving()
        _close(self._client_leg, code, b"proxy restarting" if code == 1012 else b"proxy shutting down")
        _close(self._backend_leg, GOING_AWAY, b"proxy shutting down")

    def abort(self) -> None:
        self._stop_moving()
        self._client.transport.abortConnection()
        if self._backend_leg is not None:
            self._origin.transport.abortConnection()

    def _idle(self) -> None:
        self._ending(Termination.IDLE_TIMEOUT)
        self._stop_moving()
        _close(self._client_leg, GOING_AWAY, b"idle timeout")
        _close(self._backend_leg, GOING_AWAY, b"idle timeout")

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
        self._drop_held()
        self._deadline.stop()
        self._client.download.detach()
        self._origin.upload.detach()
        for hook in self._hooks:
            hook.session_closed(self)
        self._handoff.ended(self._termination or Termination.OK)

    # The client connection's events go to the client leg

    def client_data(self, data: bytes) -> None:
        self._client_leg.dataReceived(data)  # type: ignore[union-attr]

    def client_fin(self) -> None:
        self._client.transport.loseConnection()

    def client_lost(self, reason: Failure) -> None:
        self._client_leg.connectionLost(reason)  # type: ignore[union-attr]


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
