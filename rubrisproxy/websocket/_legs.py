"""The two Autobahn legs of a session-mode WebSocket, and the factories they are built from.

:class:`ClientLeg` is a server protocol on the client's connection; :class:`BackendLeg`
a client protocol on a backend connection. Both report to their session (see
``_session.py``); both trim Autobahn's per-message path of what the proxy does not use.

Each leg is a WebSocket endpoint of its own: it answers its peer's pings at once,
and its own auto-pings (Autobahn's, on the proxy's clock) find a peer that died or
hangs.
"""

from __future__ import annotations

from types import FunctionType
from typing import TYPE_CHECKING, Any, Literal

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
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from .._compat import (
    LazyFuture,
    LazyUtf8Validator,
    close_ended,
    compresses,
    connect_open,
    connection_lost,
    defer_autobahn_debug,
    inbound_window_bits,
    message_compressed,
    open_at_once,
    pause_auto_ping,
    prime_inflater,
    rearm_pong_timeout,
    resume_auto_ping,
    slim_open_leg,
    tcp_buffered,
    unsent,
    use_batched_timer,
)
from ..config import WebSocketConfig
from ..flow import ReadGate
from ..lifecycle import Termination
from ._fin import close_or_cut, linger
from ._framepath import FramePath
from ._handshake import accept_key
from ._outbox import Outbox
from ._timers import BucketTimer
from ._window import InflateWindow

if TYPE_CHECKING:
    from ..origin import OriginConnection
    from ._session import WebSocketSession

_CLOSE_OPCODE = 8
_RFC6455 = 13  # the Sec-WebSocket-Version of every client handshake a leg answers (check_upgrade)
#: Why a client leg's reading is paused once it broke the protocol, until its close frame's linger reads again.
FAILED = "failed"
#: The loss of a backend leg put aside at its end of stream (see BackendLeg.ended).
_END_OF_STREAM = Failure(ConnectionDone())
#: Unsent bytes to a peer beyond which its pings are not answered at once (Twisted's own buffer size).
_PONG_BACKLOG = 64 << 10
#: How often a pong owed to such a peer is tried again.
_PONG_RETRY = 0.2


class LegFactories:
    """The Autobahn factories of one backend's session-mode legs, configured from its ``[websocket]`` table."""

    def __init__(self, config: WebSocketConfig, clock: IReactorTime) -> None:
        limits: dict[str, Any] = dict(
            maxFramePayloadSize=config.max_frame_size,
            maxMessagePayloadSize=config.max_message_size,
            autoFragmentSize=config.auto_fragment_size,
            # A leg is handed a whole handshake (the client's, or the backend's 101) and answers it at once: no timer
            # (open-handshake-timeout bounds the wait for the 101, on the HTTP path).
            openHandshakeTimeout=0,
            closeHandshakeTimeout=config.close_handshake_timeout,
            failByDrop=False,  # a protocol error is answered with its close code (1002, 1007, 1009)
            echoCloseCodeReason=True,  # a close is answered with its own code and reason (RFC 6455 5.5.1)
        )
        self.server = WebSocketServerFactory(server=None)  # the backend's own Server header is passed on
        self.server.protocol = ClientLeg
        self.server.setProtocolOptions(
            # Origins were checked on the HTTP path (check_upgrade): the leg allows any, as Autobahn's factory
            # does until setProtocolOptions turns its null-origin default off (pages from file:// send "null").
            allowNullOrigin=True,
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
            perMessageCompressionAccept=_accept_deflate_response if config.compression else _refuse_extensions,
            **limits,
        )
        defer_autobahn_debug()
        #: Every leg's Autobahn timers (handshakes, pings), on the proxy's clock.
        self.timer = BucketTimer(clock)
        for factory in (self.server, self.client):
            factory.noisy = False
            use_batched_timer(factory, self.timer)
        #: The fast-path frames of every leg, held while a read is relayed.
        self.outbox = Outbox()
        self.client_leg: type[ClientLeg] = _configured(ClientLeg, self.server, self.timer, self.outbox)
        self.backend_leg: type[BackendLeg] = _configured(BackendLeg, self.client, self.timer, self.outbox)
        #: The Sec-WebSocket-Extensions value the proxy offers a backend.
        self.offers = ", ".join(offer.get_extension_string() for offer in self.client.perMessageCompressionOffers).encode()


def _configured(leg: Any, factory: Any, timer: BucketTimer, outbox: Outbox) -> Any:
    """A subclass of ``leg`` carrying ``factory``'s settings (and the legs' ``timer``) as class attributes.

    Autobahn copies each of some forty settings from the factory into every protocol
    instance that does not already have it; as class attributes they cost nothing per
    connection, which matters for many idle WebSockets.
    """
    settings = {name: getattr(factory, name) for name in leg.CONFIG_ATTRS}
    # Nothing left for Autobahn to copy at each connection: its loop would only build (and pretty-print, for a
    # debug line not written) a list of the forty settings, a third of a session's handshake CPU.
    settings["CONFIG_ATTRS"] = ()
    sizes = [size for size in (factory.maxFramePayloadSize, factory.maxMessagePayloadSize) if size > 0]
    settings["_limit"] = min(sizes) if sizes else 0
    settings["_timer"] = timer
    settings["_outbox"] = outbox
    # A function as a class attribute would become a method: keep callbacks plain.
    settings = {name: staticmethod(v) if isinstance(v, FunctionType) else v for name, v in settings.items()}
    return type(leg.__name__, (leg,), settings)


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


#: Autobahn's per-connection attributes that an open leg holds at these values until something happens (an error,
#: a close, a ping): kept once, on the leg classes, not in every leg (see ``slim_open_leg``). Not those the message
#: path reads (``data``, ``current_frame``, ``inside_message``): an instance's own are faster to read.
_AT_REST: dict[str, object] = dict.fromkeys((
    "_perMessageCompress", "trackedTimings", "wasNotCleanReason", "localCloseCode", "localCloseReason",
    "remoteCloseCode", "remoteCloseReason", "serverConnectionDropTimeoutCall", "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall", "autoPingTimeoutCall", "autoPingPending", "autoPingPendingSent",
    "http_response_data", "http_status_line", "http_headers", "http_request_data", "http_request_uri",
    "http_request_params", "websocket_protocol_in_use", "_transport_details", "_valid_events", "_results",
    "_switch",
)) | dict.fromkeys((
    "triggered", "wasMaxFramePayloadSizeExceeded", "wasMaxMessagePayloadSizeExceeded", "closedByMe", "failedByMe",
    "droppedByMe", "wasClean", "wasServerConnectionDropTimeout", "wasOpenHandshakeTimeout",
    "wasCloseHandshakeTimeout", "wasServingFlashSocketPolicyFile",
), False) | {"autoPingPendingSeq": 0, "send_state": 0, "websocket_extensions_in_use": ()}


class _Leg(FramePath):
    """What both legs add to Autobahn: pings answered at the proxy, a pong timeout that waits while
    the proxy itself is not reading from the peer, and no timer left behind."""

    session: WebSocketSession
    closeHandshakeTimeoutCall: Any  # Autobahn's, or one of _timer's
    closeHandshakeTimeout: float
    version: int
    _timer: BucketTimer  # set per backend by _configured
    #: Whether a failure's close frame is followed by a linger (see _fin.py), rather than the connection's close.
    _lingers = False
    #: Pauses reading from the peer (flow control); set when the leg is opened.
    gate: ReadGate | None = None
    _owed_pong: bytes | None = None  # the latest ping of a peer that is not reading, still to answer
    _owed_call: Any = None  # the retry of that answer
    utf8validator = LazyUtf8Validator()  # for Autobahn's parser: made if a text message needs it
    is_open = LazyFuture(resolved=True)  # Autobahn's futures: dropped once open (slim_open_leg), made again if read
    is_closed = LazyFuture(resolved=False)
    #: The last window of what the peer compressed (its context takeover), for a carry to another process;
    #: None: it compresses nothing, or without context takeover.
    _window: InflateWindow | None = None

    def opened(self) -> None:
        """What both legs do once open: drop the handshake Autobahn keeps (a long-lived WebSocket should
        not carry it) and note whether messages are compressed."""
        self.http_headers = self.http_request_data = self.http_response_data = self.http_request_uri = None
        self.http_status_line = self.http_request_params = None
        self._deflating = compresses(self)
        bits = inbound_window_bits(self)
        if bits:
            self._window = InflateWindow(1 << bits)
        slim_open_leg(self, _AT_REST)

    def inflate_window(self) -> bytes:
        """What the peer's compressor may still refer to (empty: nothing, or no context takeover)."""
        return self._window.value() if self._window is not None else b""

    def prime(self, window: bytes) -> None:
        """Go on inflating what the peer compresses from ``window`` (see :meth:`inflate_window`), carried from
        the process this leg's session came from."""
        if window and self._window is not None:
            prime_inflater(self, window)
            self._window.add(window)

    def onPing(self, payload: bytes) -> None:
        # The proxy is the peer's endpoint: answered now, not relayed, so a ping followed by a close
        # still gets its pong (RFC 6455 5.5.2) and a peer's keepalive does not depend on the other side.
        if self.state != self.STATE_OPEN:
            return
        if unsent(self.transport) <= _PONG_BACKLOG:
            self._forget_owed_pong()
            self.sendPong(payload)
            return
        # The peer is not reading what it is sent: it is owed one pong, for its latest ping (RFC 6455
        # 5.5.3 allows that), sent once it reads again, so pinging without reading costs no memory.
        self._owed_pong = payload
        if self._owed_call is None:
            self._owed_call = self._timer.call_later(_PONG_RETRY, self._pay_owed_pong)

    def _pay_owed_pong(self) -> None:
        payload, self._owed_pong, self._owed_call = self._owed_pong, None, None
        if payload is not None:
            _Leg.onPing(self, payload)  # a ping that came before any close the peer sent since

    def _forget_owed_pong(self) -> None:
        self._owed_pong = None
        if self._owed_call is not None:
            self._owed_call.cancel()
            self._owed_call = None

    def stop_pings(self) -> None:
        """No ping from this leg and no pong owed (its session is being carried to another process)."""
        pause_auto_ping(self)
        self._forget_owed_pong()

    def restart_pings(self) -> None:
        """Ping the peer again, an interval from now."""
        resume_auto_ping(self, self._timer.call_later)

    def unread(self) -> bytes:
        """What was read from the peer and not parsed yet: at a message boundary, the start of its next frame."""
        return self._tail + self.data

    def onPong(self, payload: bytes) -> None:
        pass  # Autobahn has matched it to this leg's own auto-ping, if it answers one; others end here

    def onAutoPingTimeout(self) -> None:
        gate = self.gate
        if gate is not None and gate.paused:
            # The proxy is not reading from the peer (the other side is slow): its pong may be
            # waiting unread. Judge again a timeout later, rather than drop a live peer.
            rearm_pong_timeout(self, self._timer.call_later)
            return
        super().onAutoPingTimeout()

    # Autobahn's per-message path, without what the proxy does not use: observer
    # signals (a Deferred per message) and debug-log arguments built on every write.

    def onMessageEnd(self) -> None:
        if not self.failedByMe:
            payload = b"".join(self.message_data)
            if self._window is not None and message_compressed(self):
                self._window.add(payload)
            self.onMessage(payload, self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]  # as Autobahn's own does

    def fail_connection(self, code: int, reason: str) -> None:
        # RFC 6455 7.1.7: a peer that broke the protocol gets the close frame with ``code``, then a FIN, without
        # waiting for a closing handshake it may never send; what a client still sends is read and discarded until
        # it ends its side (close_transport lingers). Autobahn (failByDrop off) would wait closeHandshakeTimeout,
        # then reset.
        state = self.state
        self.autobahn_fail_connection(code, reason)
        if state == self.STATE_OPEN and self.state == self.STATE_CLOSING:
            self.wasClean = False
            self.wasNotCleanReason = f"protocol error ({code}): {reason}"
            self.dropConnection(abort=False)
        if state != self.STATE_CLOSED and self.state == self.STATE_CLOSED:  # also an error while closing
            self._cancel_close_timeout()
            if self.closeHandshakeTimeout > 0:
                # A peer that does not end its side, or does not even read the close, is not waited for forever.
                self.closeHandshakeTimeoutCall = self._timer.call_later(
                    self.closeHandshakeTimeout, self._linger_over,
                )

    def close_transport(self, abort: bool) -> None:
        # How Autobahn's drops end the connection (see _fin.py): a client's failure lingers; a completed closing
        # handshake closes with a FIN (Autobahn, as a server, would reset on the answer to its own close); so does a
        # timeout (of a close's answer, of the server's TCP close after it, of a pong) where a FIN ends the connection
        # at once.
        transport = self.transport
        if self.failedByMe and self._lingers:
            linger(transport, self.gate)
        elif not abort or self.wasClean:
            transport.loseConnection()
        else:
            close_or_cut(transport)

    def _linger_over(self) -> None:
        """``closeHandshakeTimeout`` after a failure, and the peer has not ended its side: close now."""
        self.closeHandshakeTimeoutCall = None
        close_or_cut(self.transport)

    def _cancel_close_timeout(self) -> None:
        if self.closeHandshakeTimeoutCall is not None:  # Autobahn leaves it to fire on a closed leg
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        connection_lost(self, reason)  # Autobahn's, without building its debug lines

    def connection_gone(self, reason: Failure) -> None:
        self._forget_owed_pong()
        self._cancel_close_timeout()
        _Leg.is_closed.drop_resolved_with_leg(self)  # resolved with the leg as it closed: a cycle


for _name, _value in _AT_REST.items():
    setattr(_Leg, _name, _value)


class ClientLeg(_Leg, WebSocketServerProtocol):  # type: ignore[misc]  # Autobahn's own hints disagree
    """The client's WebSocket, terminated at the proxy.

    A valid close from the client, or a protocol error it commits, is first passed
    to the backend; the client's answer (its own code and reason) waits for the
    backend's close, so what the backend sent before it still reaches the client, as
    it would directly; so does the TCP close of a client that half-closed without a
    close frame. Meanwhile nothing more from the client is relayed. An invalid close
    frame is answered at once. A failure's close frame is followed by a FIN, with no
    closing handshake awaited, and what the client still sends is discarded until it
    ends its side (see ``_Leg.fail_connection``).
    """

    _masked_in = True  # a client masks what it sends; the proxy, as a server, does not
    _to_client = True
    # A backend leg's failure closes at once instead: its session moves, or closes the client, once it has ended.
    _lingers = True

    #: ("close", code, reason), ("fail", code, reason) or ("fin", None, None) (the client half-closed without a close)
    #: waiting for the backend's close; None when not closing.
    held: (tuple[Literal["close"], int, bytes | None] | tuple[Literal["fail"], int, str]
           | tuple[Literal["fin"], None, None] | None) = None
    _immediate = False
    _opcode = 0

    def onConnect(self, request: ConnectionRequest) -> Any:
        return self.session.accept_client()

    def answer_handshake(self, key: bytes) -> None:
        """Answer the client's handshake (checked by check_upgrade; sent with ``key``, no extension to negotiate) and
        open, as Autobahn's ``succeedHandshake`` does: the same 101, the backend's subprotocol and headers in it."""
        protocol, headers = self.session.accept_client()
        lines = ["HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, values in headers.items() for value in values)
        if protocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}\r\n")
        lines.append(f"Sec-WebSocket-Accept: {accept_key(key).decode()}\r\n\r\n")
        self.sendData("".join(lines).encode("utf8"))
        open_at_once(self, _RFC6455, protocol)

    def onOpen(self) -> None:
        self.opened()
        self.session.client_opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.held is None:
            self.session.from_client(payload, isBinary)

    def _passage(self) -> _Leg | None:
        return self.session.backend_passage()

    def _passed(self, count: int) -> None:
        self.session.passed_to_backend(count)

    def onPing(self, payload: bytes) -> None:
        if self.held is None:  # after its close, a client's ping is not answered (RFC 6455 5.5.2)
            super().onPing(payload)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        self.session.settle_loss()  # a backend leg's loss put aside happened first
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
            self._opcode = self.data[0] & 0x0F  # of the frame about to be parsed, for fail_connection
        return super().processData()

    def fail_connection(self, code: int, reason: str) -> None:
        self.session.settle_loss()  # a backend leg's loss put aside happened first
        frame = self.current_frame
        if (frame.opcode if frame is not None else self._opcode) == _CLOSE_OPCODE:
            self._immediate = True  # an invalid close frame: answered at once, not held for the backend
        if self.state == self.STATE_OPEN:
            if self.held is None and self.session.backend_open and not self._immediate:
                self.held = ("fail", code, reason)
                if self.gate is not None:
                    # Nothing after a protocol error is parsed, and Autobahn would hold all of it (the rest of a
                    # frame too big) until the backend's close comes: not read until the close frame's linger.
                    self.gate.pause(FAILED)
                self.session.client_failed(code, reason)
                return
            if self.held is not None and not self._immediate:
                return  # what follows a first error is not read any more: the first one is answered
            if self.held is None:
                self.session.client_failed(code, reason)  # failed now: the backend is closed meanwhile
        super().fail_connection(code, reason)

    def hold_fin(self) -> bool:
        """The client half-closed without a close frame: its connection is closed once the backend's close comes
        (:meth:`answer_held`), so what the backend still sends reaches it; False if it is closing already."""
        if self.held is not None or self.state != self.STATE_OPEN:
            return False
        self.held = ("fin", None, None)
        return True

    def answer_held(self, crossed: tuple[int | None, bytes | None] | None = None) -> None:
        """The backend has closed: answer the client's close now, with its own code and reason (RFC 6455 5.5.1: the
        proxy is its endpoint), or, when the backend's own close crossed it, with the backend's (``crossed``, as the
        client would have seen it directly); or fail the client for its protocol error, now."""
        held, self.held = self.held, None
        if held is None or self.state != self.STATE_OPEN:
            return
        if held[0] == "fail":
            super().fail_connection(held[1], held[2])
            return
        if held[0] == "fin":  # it sent no close to answer: it is told the backend's own, if that crossed its FIN
            if crossed is not None:
                self.sendCloseFrame(*crossed)
            self.dropConnection(abort=False)
            return
        code, reason = crossed if crossed is not None else held[1:]
        self.wasClean = True
        self.sendCloseFrame(code=code, reasonUtf8=reason if code is not None else None, isReply=True)
        self.dropConnection(abort=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.client_closed(_leg_termination(self, Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.settle_loss()  # a backend leg's loss put aside happened first
        super().connectionLost(reason)


class BackendLeg(_Leg, WebSocketClientProtocol):  # type: ignore[misc]
    """The proxy's own WebSocket to the backend, opened on a 101 the HTTP path already received."""

    _masked_out = True  # the proxy is the client here: what it sends is masked
    _switch: bytes | str | None = None  # see attach
    _lost: Failure | None = None  # its connection's loss, put aside until its turn (see lose)
    lost_at: float | None = None  # when that loss was put aside (None: it was not)

    def __init__(self) -> None:
        pass  # Autobahn's own waits for makeConnection: a leg opened at once (see attach) needs none of it

    def makeConnection(self, transport: Any) -> None:
        WebSocketProtocol.__init__(self)  # what Autobahn's constructor makes (its futures, events, transport details)
        super().makeConnection(transport)

    def attach(self, session: WebSocketSession, origin: OriginConnection, switch: bytes | str | None, key: bytes,
               protocols: list[str]) -> None:
        """Take over ``origin`` and open on it: its 101 answering ``key`` is ``switch`` for Autobahn to check, or,
        already checked and with no extension, only the subprotocol it chose (a str, or None): then it opens at
        once, without Autobahn's connection set-up (``connect_open``), as it would have opened."""
        self.prepare(session, origin, switch, key, protocols)
        if isinstance(switch, bytes):
            self.makeConnection(origin.transport)
            return
        connect_open(self, origin.transport, self.version, switch, no_delay=True)  # the origin's (tune_transport)
        self._deflating = False
        self.session.backend_opened(self)

    def prepare(self, session: WebSocketSession, origin: OriginConnection, switch: bytes | str | None, key: bytes,
                protocols: list[str]) -> None:
        """Take over ``origin``, to open on ``switch`` (see :meth:`attach`) once connected to a transport
        (:meth:`attach`; a leg made again in another process opens on one that writes nothing)."""
        self.session = session
        self.gate = origin.gate
        self.meter = origin.server
        self._switch = switch
        if isinstance(switch, bytes):  # for Autobahn to check it
            self._key, self._protocols = key, protocols
        origin.take_over(OriginSide(self, origin))

    def opening(self) -> tuple[bytes | str | None, bytes]:
        """What it opened on and the key it answered: what makes it again in another process. What it opened on is
        the 101 Autobahn checked, or, for a leg opened at once, the subprotocol the 101 chose (a str, or None)."""
        switch = self._switch
        return switch, self._key if isinstance(switch, bytes) else b""

    def startHandshake(self) -> None:
        # The request went out on the proxy's HTTP path, and check_switch passed its 101: open at once, unless it
        # is to negotiate an extension, which Autobahn does as if it had sent the request, with this session's
        # key and offered subprotocols.
        switch = self._switch
        if not isinstance(switch, bytes):  # kept (a short str, or None) for opening()
            open_at_once(self, self.version, switch)
            return
        self.websocket_key = self._key
        self.data = switch
        factory = self.factory
        factory.protocols = self._protocols
        try:
            self.processHandshake()
        finally:
            factory.protocols = []
        # _switch stays: a session carried to another process opens its backend leg there again on this 101
        # (only a 101 with an extension comes here: its session already keeps a compressor's state)

    def onOpen(self) -> None:
        self.opened()
        self.session.backend_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.session.from_backend(payload, isBinary)

    def _passage(self) -> _Leg | None:
        return self.session.client_passage()

    def _passed(self, count: int) -> None:
        self.session.passed_to_client(count)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        was_open = self.state == self.STATE_OPEN
        result = super().onCloseFrame(code, reasonRaw)
        if not self.failedByMe:
            if was_open:
                self.session.backend_closing(self, self.remoteCloseCode, reasonRaw)
            else:
                self.session.backend_answered_close(self, self.remoteCloseCode, reasonRaw)
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.backend_closed(self, _leg_termination(self, Termination.SERVER_CLOSE, Termination.SERVER_ABORT))

    def lose(self, reason: Failure) -> None:
        """Its connection is lost: handled now (``connectionLost``), or, in a storm of losses, on a later reactor turn
        (see :meth:`_put_aside`)."""
        if not self._put_aside(reason):
            self.connectionLost(reason)

    def ended(self) -> None:
        """The backend ended its stream, and nothing is left to send it: its connection closes (as Twisted closes one
        whose protocol takes no half-close, which reports its loss) now, or, in a storm of losses, with its loss on a
        later reactor turn (see :meth:`_put_aside`)."""
        if not self._put_aside(_END_OF_STREAM):
            close_ended(self.transport)

    def _put_aside(self, reason: Failure) -> bool:
        """Whether its loss waits for a later turn (its session decides: see
        :class:`~rubrisproxy.websocket._losses.LossPacer`). Meanwhile it reads as closing (nothing is sent to it: its
        session holds what the client sends), its pings stopped."""
        if self.state != self.STATE_OPEN or not self.session.defer_loss(self):
            return False
        self._lost = reason
        self.lost_at = self.session.clock.seconds()
        self.state = self.STATE_CLOSING
        self.stop_pings()
        return True

    @property
    def loss_waits(self) -> bool:
        """Whether its connection's loss was put aside and is not handled yet."""
        return self._lost is not None

    def settle_loss(self) -> None:
        """Handle its connection's loss now, if it was put aside and is not handled yet: a connection put aside at its
        end of stream is closed first (its loss then comes back through :meth:`lose`)."""
        reason, self._lost = self._lost, None
        if reason is None:
            return
        if self.transport.connected:
            close_ended(self.transport)
        else:
            self.connectionLost(reason)


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




class OriginSide:
    """What a backend connection reports once its leg owns it: each leg gets its own, so a session that
    moves to another server never mixes up the old connection's last events with the new one's."""

    __slots__ = ("_leg", "_origin")

    def __init__(self, leg: BackendLeg, origin: OriginConnection) -> None:
        self._leg = leg
        self._origin = origin

    def origin_data(self, data: bytes) -> None:
        self._leg.dataReceived(data)

    def origin_fin(self) -> None:
        transport = self._origin.transport
        if tcp_buffered(transport) and not unsent(transport):
            # Nothing left to send: closed without a write turn of its own (ConnectionDone, as after loseConnection),
            # so that each of a dead server's thousands of connections is handled once.
            self._leg.ended()
            return
        transport.loseConnection()

    def origin_lost(self, reason: Failure) -> None:
        leg = self._leg
        del self._leg, self._origin  # the connection refers to this: no cycle left for the collector
        leg.lose(reason)
