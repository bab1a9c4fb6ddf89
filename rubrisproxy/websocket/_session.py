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
from autobahn.websocket.types import ConnectionRequest
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
    """What both legs add to Autobahn: a closed leg leaves no timer behind."""

    closeHandshakeTimeoutCall: Any

    def _connectionLost(self, reason: Failure) -> None:
        super()._connectionLost(reason)  # type: ignore[misc]
        if self.closeHandshakeTimeoutCall is not None:  # Autobahn leaves it to fire on a closed leg
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None


class ClientLeg(_Leg, WebSocketServerProtocol):  # type: ignore[misc]  # Autobahn's own hints disagree
    """The client's WebSocket, terminated at the proxy."""

    session: WebSocketSession

    def onConnect(self, request: ConnectionRequest) -> Any:
        return self.session.accept_client()

    def onOpen(self) -> None:
        self.session.client_opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.from_client(payload, isBinary)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        was_open = self.state == self.STATE_OPEN
        result = super().onCloseFrame(code, reasonRaw)
        if was_open and not self.failedByMe:
            self.session.client_closing(self.remoteCloseCode, reasonRaw)
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.client_closed(_leg_termination(self, Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT))


class BackendLeg(_Leg, WebSocketClientProtocol):  # type: ignore[misc]
    """The proxy's own WebSocket to the backend, opened on a 101 the HTTP path already received."""

    session: WebSocketSession

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
        if was_open and not self.failedByMe:
            self.session.backend_closing(self.remoteCloseCode, reasonRaw)
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.backend_closed(_leg_termination(self, Termination.SERVER_CLOSE, Termination.SERVER_ABORT))


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

    def client_closing(self, code: int | None, reason: bytes | None) -> None:
        """The client sent a close: pass it on to the backend."""
        self._ending(Termination.CLIENT_CLOSE)
        _close(self._backend_leg, code, reason)

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
        _close(self._client_leg, BACKEND_LOST, b"backend connection lost")
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
    if code is not None and code not in _SENDABLE and not 3000 <= code <= 4999:
        code = 1000
    leg.sendCloseFrame(code, reason[:123] if reason and code is not None else None)
