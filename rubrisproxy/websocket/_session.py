"""Session mode: the proxy terminates the client's WebSocket and opens its own to the backend.

Two Autobahn protocols share one :class:`WebSocketSession`: a server protocol on the
client's connection (:class:`ClientLeg`) and a client protocol on the backend's
(:class:`BackendLeg`). The backend's handshake goes out on the proxy's HTTP path
(so balancing, retries and a refusal passed back as it is all apply); its 101 is
then handed to the backend leg to check and open on, and only then is the
client's handshake answered, with the backend's subprotocol and headers.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionRequest
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config import Timeouts, WebSocketConfig
from ..deadline import Deadline
from ..http import HTTPError, ResponseHead, serialize_headers
from ..lifecycle import Termination
from ._handshake import HANDSHAKE_HEADERS
from ._hooks import ISessionView, IWebSocketHook, Message
from ._timers import BucketTimer

if TYPE_CHECKING:
    from ..frontend._connection import ClientConnection
    from ..frontend._exchange import Exchange
    from ..origin import OriginConnection

#: Close codes an endpoint may put on the wire (RFC 6455 7.4.1, as Autobahn and browsers accept them).
_SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
#: Sent to a client whose backend went away without a close. 1014 (bad gateway) would say it better,
#: but clients built on Autobahn, among others, treat it as a protocol error.
BACKEND_LOST = 1011
GOING_AWAY = 1001
_CLOSE_OPCODE = 8


class LegFactories:
    """The Autobahn factories of one backend's session-mode legs, configured from its ``[websocket]`` table."""

    def __init__(self, config: WebSocketConfig, clock: IReactorTime) -> None:
        limits: dict[str, Any] = dict(
            maxFramePayloadSize=config.max_frame_size,
            maxMessagePayloadSize=config.max_message_size,
            autoFragmentSize=config.auto_fragment_size,
            openHandshakeTimeout=config.open_handshake_timeout,
            closeHandshakeTimeout=config.close_handshake_timeout,
            failByDrop=False,  # a protocol error is answered with its close code (1002, 1007, 1009)
        )
        self.server = WebSocketServerFactory(server=None)  # the backend's own Server header is passed on
        self.server.protocol = ClientLeg
        self.server.setProtocolOptions(
            autoPingInterval=config.client_ping_interval,
            autoPingTimeout=config.client_ping_timeout,
            perMessageCompressionAccept=_accept_deflate if config.compression else _refuse_extensions,
            **limits,
        )
        self.client = WebSocketClientFactory()
        self.client.protocol = BackendLeg
        self.client.setProtocolOptions(
            autoPingInterval=config.backend_ping_interval,
            autoPingTimeout=config.backend_ping_timeout,
            perMessageCompressionOffers=[PerMessageDeflateOffer()] if config.compression else [],
            perMessageCompressionAccept=_accept_deflate_response,
            **limits,
        )
        #: Every leg's Autobahn timers (handshakes, pings), on the proxy's clock.
        self.timer = BucketTimer(clock)
        for factory in (self.server, self.client):
            factory.noisy = False
            factory._batched_timer = self.timer
        #: The Sec-WebSocket-Extensions value the proxy offers a backend.
        self.offers = ", ".join(offer.get_extension_string() for offer in self.client.perMessageCompressionOffers).encode()


def _accept_deflate(offers: list[object]) -> PerMessageDeflateOfferAccept | None:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def _refuse_extensions(offers: list[object]) -> None:
    return None


def _accept_deflate_response(response: object) -> PerMessageDeflateResponseAccept | None:
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None


class _Leg:
    """What both legs add to Autobahn: pings and pongs relayed end to end, and no timer left behind."""

    closeHandshakeTimeoutCall: Any
    session: WebSocketSession
    _answering_auto_ping = False

    def onPing(self, payload: bytes) -> None:
        # Relayed, not answered here, so a pong keeps its place among the messages.
        self.session.relay_control(self, b"ping", payload)

    def onAutoPong(self, *args: Any) -> None:
        self._answering_auto_ping = True  # the pong that follows answers this leg's own auto-ping

    def onPong(self, payload: bytes) -> None:
        if self._answering_auto_ping:
            self._answering_auto_ping = False
            return
        self.session.relay_control(self, b"pong", payload)

    # Autobahn's per-message path, without what the proxy does not use: observer
    # signals (a Deferred per message) and debug-log arguments built on every write.

    failedByMe: bool
    message_data: list[bytes] | None
    message_is_binary: bool
    send_queue: Any
    transport: Any

    def onMessageEnd(self) -> None:
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)  # type: ignore[arg-type, attr-defined]
        self.message_data = None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
        else:
            self.transport.write(data)

    def _connectionLost(self, reason: Failure) -> None:
        super()._connectionLost(reason)  # type: ignore[misc]
        if self.closeHandshakeTimeoutCall is not None:  # Autobahn leaves it to fire on a closed leg
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None


class ClientLeg(_Leg, WebSocketServerProtocol):  # type: ignore[misc]  # Autobahn's own hints disagree
    """The client's WebSocket, terminated at the proxy.

    A valid close from the client, or a protocol error it commits, is first passed
    to the backend; the client's answer waits for the backend's close, so what
    the backend sent before it still reaches the client, as it would directly.
    Meanwhile nothing more from the client is relayed.
    """

    #: ("close", code, reason) or ("fail", code, reason) waiting for the backend's close; None when not closing.
    held: tuple[str, int | None, Any] | None = None
    _immediate = False
    _opcode = 0

    def onConnect(self, request: ConnectionRequest) -> Any:
        return self.session.accept_client()

    def onOpen(self) -> None:
        self.session.client_opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.held is None:
            self.session.from_client(payload, isBinary)

    def onPing(self, payload: bytes) -> None:
        if self.held is None:
            super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        if self.held is None:
            super().onPong(payload)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        if self.held is not None and self.state == self.STATE_OPEN:
            return None  # a second close, while the first waits for the backend
        if self.state != self.STATE_OPEN or not self.session.backend_open or not _valid_close(code, reasonRaw):
            # An answer to the proxy's close, or an invalid close: handled at once, as Autobahn does.
            self._immediate = True
            result = super().onCloseFrame(code, reasonRaw)
            if not self.failedByMe and self.state != self.STATE_CLOSED:
                self.session.client_closing(self.remoteCloseCode, reasonRaw)
            return result
        self.remoteCloseCode = code
        self.remoteCloseReason = reasonRaw.decode("utf8") if reasonRaw is not None else None
        self.held = ("close", code, reasonRaw)
        self.session.client_closing(code, reasonRaw)
        return None

    def processData(self) -> bool:
        if self.current_frame is None and self.data:
            self._opcode = self.data[0] & 0x0F  # of the frame about to be parsed, for _fail_connection
        return super().processData()  # type: ignore[no-any-return]

    def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
        frame = self.current_frame
        if (frame.opcode if frame is not None else self._opcode) == _CLOSE_OPCODE:
            self._immediate = True  # an invalid close frame: Autobahn drops the connection at once
        if self.state == self.STATE_OPEN and not self._immediate:
            if self.held is None and self.session.backend_open:
                self.held = ("fail", code, reason)
                self.session.client_failed(code, reason)
                return
            if self.held is not None:
                return  # what follows a first error is not read any more: the first one is answered
        super()._fail_connection(code, reason)

    def answer_held(self, code: int | None = 1000, reason: bytes | None = None) -> None:
        """The backend has closed: answer the client's close with the backend's ``code`` and ``reason``,
        or fail the client for its protocol error, now."""
        held, self.held = self.held, None
        if held is None or self.state != self.STATE_OPEN:
            return
        kind, own_code, own_reason = held
        if kind == "fail":
            super()._fail_connection(own_code, own_reason)  # type: ignore[arg-type]
            return
        self.wasClean = True
        self.sendCloseFrame(code=code, reasonUtf8=reason if code is not None else None, isReply=True)
        self.dropConnection(abort=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.client_closed(_leg_termination(self, Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT))


class BackendLeg(_Leg, WebSocketClientProtocol):  # type: ignore[misc]
    """The proxy's own WebSocket to the backend, opened on a 101 the HTTP path already received."""

    def startHandshake(self) -> None:
        # The request went out on the proxy's HTTP path: check the 101 it got.
        self.session.adopt_backend_handshake(self)

    def onOpen(self) -> None:
        self.session.backend_opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.from_backend(payload, isBinary)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        was_open = self.state == self.STATE_OPEN
        result = super().onCloseFrame(code, reasonRaw)
        if not self.failedByMe:
            if was_open:
                self.session.backend_closing(self.remoteCloseCode, reasonRaw)
            else:
                self.session.backend_answered_close(self.remoteCloseCode, reasonRaw)
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.backend_closed(_leg_termination(self, Termination.SERVER_CLOSE, Termination.SERVER_ABORT))


def _valid_close(code: int | None, reason: bytes | None) -> bool:
    """Whether a received close frame is one Autobahn would accept (RFC 6455 7.4)."""
    if code is not None and (
        code < 1000 or 1000 <= code <= 2999 and code not in WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED or code >= 5000
    ):
        return False
    if reason is None:
        return True
    valid, ended, _, _ = Utf8Validator().validate(reason)
    return bool(valid and ended)


def _leg_termination(leg: WebSocketServerProtocol | WebSocketClientProtocol, closed: Termination,
                     aborted: Termination) -> Termination:
    """Why a leg ended, from what Autobahn recorded."""
    if leg.failedByMe:
        return Termination.PROTOCOL_ERROR
    if "ping timeout" in (leg.wasNotCleanReason or ""):
        return Termination.PING_TIMEOUT
    if leg.remoteCloseCode is not None or (leg.wasClean and not leg.closedByMe):
        return closed
    return aborted


@implementer(ISessionView)
class WebSocketSession:
    """A client's WebSocket in session mode: both legs, the hooks between them, and how it ended.

    Messages are relayed whole, in order, text as text and binary as binary. Each
    side's transport is the other's streaming producer, so a slow reader pauses
    the other side. Closes are relayed with their codes; a backend that drops
    without a close gets the client a 1011.
    """

    log = Logger()

    def __init__(
        self,
        exchange: Exchange,
        client: ClientConnection,
        origin: OriginConnection,
        factories: LegFactories,
        hooks: tuple[IWebSocketHook, ...],
        timeouts: Timeouts,
    ) -> None:
        self.session_id = secrets.token_hex(8)
        self.client = client.client_address
        self._exchange = exchange
        self._client = client
        self._origin = origin
        self._factories = factories
        self._hooks = hooks
        self._idle_limit = timeouts.tunnel
        self._deadline = Deadline(exchange.clock, self._idle)
        self._client_leg: ClientLeg | None = None
        self._backend_leg: BackendLeg | None = None
        self._switch = b""
        self._client_headers: dict[str, list[str]] = {}
        self._termination: Termination | None = None
        self._client_done = self._backend_done = False
        self.messages_in = self.messages_out = 0

    @property
    def server(self) -> str | None:
        server = self._exchange.server
        return server.name if server is not None else None

    # Opening

    def start(self, head: ResponseHead, from_origin: bytes) -> None:
        """Open the backend leg on its 101, then answer the client (see the module docstring)."""
        self._switch = b"HTTP/1.1 101 Switching Protocols\r\n%s\r\n" % serialize_headers(head.headers)
        for name, value in head.forward:
            if name.lower() not in HANDSHAKE_HEADERS and name.lower() != b"sec-websocket-accept":
                self._client_headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        self._client.frontend.websockets.add(self)
        self._origin.take_over(self)
        leg = BackendLeg()
        leg.factory = self._factories.client
        leg.session = self
        self._backend_leg = leg
        leg.makeConnection(self._origin.transport)
        if from_origin and not self._backend_done:
            leg.dataReceived(from_origin)

    def adopt_backend_handshake(self, leg: BackendLeg) -> None:
        assert self._exchange.websocket_key is not None
        leg.websocket_key = self._exchange.websocket_key
        leg.data = self._switch
        factory = leg.factory
        # Autobahn checks the chosen subprotocol against its factory's list: this session's offer.
        factory.protocols = list(self._exchange.upgrade.protocols)  # type: ignore[union-attr]
        try:
            leg.processHandshake()
        finally:
            factory.protocols = []

    def backend_opened(self) -> None:
        client = self._client
        leg = ClientLeg()
        leg.factory = self._factories.server
        leg.session = self
        self._client_leg = leg
        from_client = client.take_over(self)
        leg.makeConnection(client.transport)
        client.download.attach(self._origin.gate)  # type: ignore[arg-type]
        self._origin.upload.attach(client.gate)
        leg.dataReceived(self._exchange.client_handshake() + from_client)

    def accept_client(self) -> tuple[str | None, dict[str, list[str]]]:
        """The answer to the client's handshake: the backend's subprotocol and headers."""
        protocol = self._backend_leg.websocket_protocol_in_use if self._backend_leg is not None else None
        return protocol, self._client_headers

    def client_opened(self) -> None:
        self._deadline.set(self._idle_limit)

    # Messages

    def from_client(self, payload: bytes, binary: bool) -> None:
        self._deadline.set(self._idle_limit)
        message = Message(payload, binary)
        for hook in self._hooks:
            changed = hook.client_message(self, message)
            if changed is None:
                return
            message = changed
        self.send_to_backend(message)

    def from_backend(self, payload: bytes, binary: bool) -> None:
        self._deadline.set(self._idle_limit)
        message = Message(payload, binary)
        for hook in self._hooks:
            changed = hook.backend_message(self, message)
            if changed is None:
                return
            message = changed
        self.send_to_client(message)

    def send_to_backend(self, message: Message) -> None:
        leg = self._backend_leg
        if leg is not None and leg.state == leg.STATE_OPEN:
            self.messages_in += 1
            self._exchange.bytes_in += len(message.payload)
            leg.sendMessage(message.payload, message.binary)

    def send_to_client(self, message: Message) -> None:
        leg = self._client_leg
        if leg is not None and leg.state == leg.STATE_OPEN:
            self.messages_out += 1
            self._exchange.bytes_out += len(message.payload)
            leg.sendMessage(message.payload, message.binary)

    # Closing

    @property
    def backend_open(self) -> bool:
        leg = self._backend_leg
        return leg is not None and leg.state == leg.STATE_OPEN

    def relay_control(self, leg: _Leg, kind: bytes, payload: bytes) -> None:
        """A ping or pong from one leg, sent on by the other (while it is open)."""
        other = self._backend_leg if leg is self._client_leg else self._client_leg
        if other is not None and other.state == other.STATE_OPEN:
            (other.sendPing if kind == b"ping" else other.sendPong)(payload)

    def client_closing(self, code: int | None, reason: bytes | None) -> None:
        """The client sent a close: pass it on to the backend."""
        self._ending(Termination.CLIENT_CLOSE)
        _close(self._backend_leg, code, reason)

    def client_failed(self, code: int, reason: str) -> None:
        """The client broke the protocol or a limit: close the backend, then fail the client with ``code``."""
        self._ending(Termination.PROTOCOL_ERROR)
        self.log.info("session {id}: the client broke the WebSocket protocol ({code}): {reason}",
                      id=self.session_id, code=code, reason=reason)
        _close(self._backend_leg, GOING_AWAY, b"client protocol error")

    def backend_answered_close(self, code: int | None, reason: bytes | None) -> None:
        """The backend answered a close the proxy sent it: the client's own close or failure can be answered."""
        if self._client_leg is not None:
            self._client_leg.answer_held(*_sendable(code, reason))

    def backend_closing(self, code: int | None, reason: bytes | None) -> None:
        """The backend sent a close: pass it on to the client."""
        self._ending(Termination.SERVER_CLOSE)
        _close(self._client_leg, code, reason)

    def client_closed(self, termination: Termination) -> None:
        self._ending(termination)
        self._client_done = True
        _close(self._backend_leg, GOING_AWAY, b"client went away")
        self._maybe_end()

    def backend_closed(self, termination: Termination) -> None:
        self._ending(termination)
        self._backend_done = True
        if self._client_leg is None:
            # The 101 was not a valid answer to the proxy's handshake: the client is still on HTTP.
            reason = self._backend_leg.wasNotCleanReason if self._backend_leg is not None else None
            self._client.frontend.websockets.discard(self)
            self._exchange.fail(
                HTTPError(502, f"backend WebSocket handshake failed: {reason}"), Termination.BAD_RESPONSE
            )
            self._deadline.stop()
            return
        leg = self._client_leg
        if leg.held is not None:
            leg.answer_held()
        else:
            _close(leg, BACKEND_LOST, b"backend connection lost")
        self._maybe_end()

    def drain(self) -> None:
        self._ending(Termination.SHUTDOWN)
        _close(self._client_leg, GOING_AWAY, b"proxy shutting down")
        _close(self._backend_leg, GOING_AWAY, b"proxy shutting down")

    def abort(self) -> None:
        self._client.transport.abortConnection()
        self._origin.transport.abortConnection()

    def _idle(self) -> None:
        self._ending(Termination.IDLE_TIMEOUT)
        _close(self._client_leg, GOING_AWAY, b"idle timeout")
        _close(self._backend_leg, GOING_AWAY, b"idle timeout")

    def _ending(self, termination: Termination) -> None:
        if self._termination is None:
            self._termination = termination

    def _maybe_end(self) -> None:
        if not (self._client_done and self._backend_done):
            return
        self._client.frontend.websockets.discard(self)
        self._deadline.stop()
        self._client.download.detach()
        self._origin.upload.detach()
        for hook in self._hooks:
            hook.session_closed(self)
        self._exchange.upgrade_ended(self._termination or Termination.OK)

    # Relay events: the connections' reads and losses go to the legs

    def client_data(self, data: bytes) -> None:
        self._client_leg.dataReceived(data)  # type: ignore[union-attr]

    def client_fin(self) -> None:
        self._client.transport.loseConnection()

    def client_lost(self, reason: Failure) -> None:
        self._client_leg.connectionLost(reason)  # type: ignore[union-attr]

    def origin_data(self, data: bytes) -> None:
        self._backend_leg.dataReceived(data)  # type: ignore[union-attr]

    def origin_fin(self) -> None:
        self._origin.transport.loseConnection()

    def origin_lost(self, reason: Failure) -> None:
        self._backend_leg.connectionLost(reason)  # type: ignore[union-attr]


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
