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
``BackendLeg``) with the same handshake, and sends the held messages first: that is its base
:class:`~rubrisproxy.websocket._moving.SessionMoving`; how it ends, its bottom base
:class:`~rubrisproxy.websocket._ending.SessionEnding`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..deadline import Deadline
from ..lifecycle import Termination
from ._adopting import SessionAdopting
from ._eioresume import EngineIOResume
from ._ending import MOVING, OPEN, OPENING, RESUMING
from ._hooks import ISessionView, Message
from ._legpair import LegPair
from ._resumption import Resumption

if TYPE_CHECKING:
    from ..backend import Backend
    from ..http import ResponseHead
    from ..origin import OriginConnection
    from ._handoff import UpgradeHandoff
    from ._legs import BackendLeg, ClientLeg


@implementer(ISessionView)
class WebSocketSession(SessionAdopting):
    """A client's WebSocket in session mode: its opening, its legs, the hooks between them, and its messages.

    Messages are relayed whole, in order, text as text and binary as binary. Each
    side's transport is the other's streaming producer, so a slow reader pauses
    the other side. When and how it moves to another server is its base
    :class:`~rubrisproxy.websocket._moving.SessionMoving`; how it ends (closes relayed with their codes, drain,
    idle timeout), :class:`~rubrisproxy.websocket._ending.SessionEnding`; its move to another rubrisproxy process in
    an upgrade, :class:`~rubrisproxy.websocket._carry.SessionCarrying` and its making again in the new process,
    :class:`~rubrisproxy.websocket._adopting.SessionAdopting`; its state is a
    :class:`~rubrisproxy.websocket._ending.SessionState`.
    """

    log = Logger()

    __slots__ = (
        "session_id", "client", "_handoff", "_client", "_legs", "_backend", "_config", "_hooks", "_idle_limit",
        "_deadline", "_resumption", "__weakref__",
    )

    def __init__(self, handoff: UpgradeHandoff, origin: OriginConnection | None, backend: Backend,
                 handshake: bytes) -> None:
        """``origin``: the connection the backend answered the first handshake on (None: a session carried from
        another process, made again by :meth:`adopt`)."""
        config = backend.websocket
        self.session_id = handoff.session_id
        self.client = handoff.client_address
        self._handoff = handoff
        self._client = handoff.client
        self._backend = backend
        self._config = config
        self._hooks = backend.websocket_hooks
        self._idle_limit = handoff.timeouts.tunnel
        self._deadline = Deadline(handoff.idle_clock, self._idle)
        self._state = OPENING
        self._legs = LegPair(self, handoff, origin, backend.leg_factories())
        self._termination = None
        self._client_done = self._backend_done = False
        self.messages_in = self.messages_out = 0
        self._carrier = self._carry_wait = self._carrying = None
        self._unsent = (b"", b"")
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
        origin = self._legs.origin
        assert origin is not None
        self._open_backend_leg(origin, head, self._handoff.websocket_key or b"", from_origin)

    def backend_opened(self, leg: BackendLeg) -> None:
        if self._legs.client is None:
            self._legs.open_client(leg)
        else:
            self._resumed(leg)

    def accept_client(self) -> tuple[str | None, dict[str, list[str]]]:
        """The answer to the client's handshake: the backend's subprotocol and headers."""
        return self._legs.answer()

    def client_opened(self) -> None:
        self._state = OPEN
        self._deadline.set(self._idle_limit)
        self._watch_server()

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

    def backend_passage(self) -> BackendLeg | None:
        """The backend leg the client's messages may be passed to as the frames they came in: open, with nothing to
        see them on the way (no hook, no replay) and nothing to hold them. None: each goes by :meth:`from_client`."""
        if self._hooks or self._state is not OPEN or self._resumption.recent is not None:
            return None
        leg = self._legs.backend
        return leg if leg is not None and leg.state == leg.STATE_OPEN else None

    def passed_to_backend(self, count: int) -> None:
        """``count`` messages from the client were passed to :meth:`backend_passage`'s leg, as :meth:`from_client`
        would have sent them."""
        self._deadline.set(self._idle_limit)
        self.messages_in += count

    def client_passage(self) -> ClientLeg | None:
        """The client leg the backend's messages may be passed to as the frames they came in: open, with no hook to
        see them on the way. None: each goes by :meth:`from_backend`."""
        if self._hooks:
            return None
        leg = self._legs.client
        return leg if leg is not None and leg.state == leg.STATE_OPEN else None

    def passed_to_client(self, count: int) -> None:
        """``count`` messages from the backend were passed to :meth:`client_passage`'s leg, as :meth:`from_backend`
        would have sent them."""
        self._deadline.set(self._idle_limit)
        self.messages_out += count

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
        if state is OPEN:
            leg = self._legs.backend
            if leg is not None and leg.state == leg.STATE_OPEN:
                self._send(leg, message)
                return
        if state is MOVING or state is RESUMING or state is OPEN:
            self._hold(message)
        elif self._termination is Termination.RESUME_FAILED:
            self._backend.messages_lost += 1  # sent before the client saw its close: lost with the held ones

    def send_to_client(self, message: Message) -> None:
        leg = self._legs.client
        if leg is not None and leg.state == leg.STATE_OPEN:
            self.messages_out += 1
            leg.sendMessage(message.payload, message.binary)

    # The client connection's events go to the client leg

    def client_data(self, data: bytes) -> None:
        leg = self._legs.client
        assert leg is not None  # the session is the client connection's relay from the client leg's opening on
        leg.dataReceived(data)
        if self._carrier is not None:
            self.carry_read()

    def client_fin(self) -> None:
        """The client half-closed without a close frame (an abnormal end, 1006): the backend is closed (1001), and
        the client's connection once the backend's close comes, so what the backend answered to the client's last
        messages still reaches it, as through a tunnel; at once when no backend leg is open."""
        self.settle_loss()
        leg = self._legs.client
        if self._state is OPEN and self.backend_open and leg is not None and leg.hold_fin():
            self.client_half_closed()
            return
        self._client.transport.loseConnection()

    def client_lost(self, reason: Failure) -> None:
        leg = self._legs.client
        assert leg is not None
        leg.connectionLost(reason)

