"""One HTTP/2 stream, in the role of the client connection of one :class:`~rubrisproxy.frontend.Exchange`."""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from ..deadline import Deadline
from ..flow import ProducerSlot, ReadGate
from ..http import HTTPError, RequestHead
from ..lifecycle import ConnectionEnd, Termination
from ._h2head import response_head
from ._h2transport import StreamTransport

if TYPE_CHECKING:
    from ..origin import OriginConnection
    from ..websocket import Relay
    from ._context import Frontend
    from ._exchange import Exchange
    from ._exchange_ending import ExchangeEnding
    from ._h2connection import H2Connection

#: Response bytes a stream holds beyond what its windows and the client's socket take before it pauses its
#: origin's reads; under the low mark they resume. A stream's memory is bounded by these, not by the response.
HIGH_WATER = 65536
LOW_WATER = 16384


class StreamPhase(Enum):
    """Where an :class:`H2Stream`'s response is."""

    HEAD = "head"  # the exchange has not written its response head yet
    BODY = "body"  # HEADERS sent: what the exchange writes goes out in DATA frames, as the windows allow
    ENDING = "ending"  # the exchange is done (or its WebSocket closed): END_STREAM follows what is still held
    HALF_CLOSING = "half-closing"  # its WebSocket half-closed: END_STREAM follows, the client may still send
    CLOSED = "closed"  # END_STREAM or RST_STREAM sent, or reset by the client: nothing more is sent


_HEAD, _BODY, _ENDING, _HALF_CLOSING, _CLOSED = (
    StreamPhase.HEAD, StreamPhase.BODY, StreamPhase.ENDING, StreamPhase.HALF_CLOSING, StreamPhase.CLOSED,
)


class H2Stream:
    """A stream as its exchange sees a client connection that carries one request.

    The exchange writes an HTTP/1.1 response (framed as for HTTP/1.0: no chunks); the stream sends its head
    as HEADERS and its body as DATA frames as the stream's and the connection's windows allow. What the
    windows or the client's socket do not take is held up to :data:`HIGH_WATER`, past which the origin's
    reads are paused (the origin gate is this stream's producer, through ``download``). The other way, the
    request body is acknowledged (WINDOW_UPDATE) only while ``gate`` is not paused: an origin that takes
    none of it stops the client once its window is spent. It is its own ``transport``: an exchange that
    aborts it resets the stream.
    """

    __slots__ = (
        "connection", "stream_id", "frontend", "exchange", "gate", "download", "_phase", "_request_ended",
        "_unacked", "_reading", "_held", "_held_size", "_producer", "_paused_producer", "_timer", "_sent",
        "_timed_sent", "pinned", "bytes_in", "bytes_out", "relay", "upgraded_at", "_early", "_transport",
    )

    proxied = False
    disconnecting = False  # what a ReadGate reads of its transport

    def __init__(self, connection: H2Connection, stream_id: int, ended: bool) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.frontend: Frontend = connection.frontend
        self.exchange: Exchange | None = None
        self._phase = _HEAD
        self._request_ended = ended  # END_STREAM came with its HEADERS: no body
        self._unacked = 0  # request body bytes received and not yet acknowledged
        self._reading = True  # the gate is not paused: received bytes are acknowledged at once
        self.gate = ReadGate(self)  # its transport is the stream's window
        self.download = ProducerSlot(self)  # the stream is its origin's consumer
        self._held: deque[bytes] = deque()
        self._held_size = 0
        self._producer: IPushProducer | None = None
        self._paused_producer = False
        self._timer: Deadline | None = None
        self._sent = self._timed_sent = 0
        self.pinned: OriginConnection | None = None
        self.bytes_in = self.bytes_out = 0
        self.relay: Relay | None = None  # the WebSocket that took the stream over
        self.upgraded_at = (0, 0)
        self._early = b""  # what the client sent before its WebSocket was answered
        self._transport: StreamTransport | None = None

    @property
    def transport(self) -> StreamTransport:
        """The stream as a transport (made when first asked for: by a WebSocket, or an exchange cutting it)."""
        if self._transport is None:
            self._transport = StreamTransport(self)
        return self._transport

    @property
    def open(self) -> bool:
        return self._phase is not _CLOSED

    # The request, as the connection delivers its frames

    def request(self, exchange: Exchange) -> None:
        self.exchange = exchange
        exchange.start()
        if exchange.finished:
            return
        if self._request_ended or exchange.head.upgrade:
            exchange.client_end()
        else:
            self._arm(self.frontend.timeouts.client)

    def refuse(self, error: HTTPError) -> None:
        """The request's head is refused before it becomes an exchange: answered on the stream alone."""
        self.connection.answer_error(self, error)

    def body(self, data: bytes, flow_length: int) -> None:
        self._unacked += flow_length
        self.bytes_in += len(data)
        relay = self.relay
        if relay is not None:
            relay.client_data(data)
            if self._reading:
                self._acknowledge()
            return
        exchange = self.exchange
        if exchange is not None and exchange.head.upgrade and not exchange.finished:
            self._early += data  # unacknowledged: bounded by the window
            return
        if exchange is not None and not exchange.finished:
            limit = self.frontend.limits.max_body_size
            if limit and exchange.bytes_in + len(data) > limit:
                exchange.client_failed(HTTPError(413, f"body over the {limit} byte limit"))
            else:
                exchange.client_body(data)
                if self._timer is not None and self._timer.armed:
                    self._timer.set(self.frontend.timeouts.client)
        if self._reading or self._phase is _CLOSED or exchange is None or exchange.finished:
            self._acknowledge()

    def body_end(self) -> None:
        if self._request_ended:  # with END_STREAM on its HEADERS: told at the request
            return
        self._request_ended = True
        if self.relay is not None:
            if self._phase is _CLOSED:  # both sides are done
                self._drop()
            else:
                self.relay.client_fin()
            return
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            if self._timer is not None:
                self._timer.clear()
            exchange.client_end()

    def reset(self) -> None:
        """The client reset the stream (or the connection is gone): its exchange is aborted."""
        self._phase = _CLOSED
        self._drop(lost=True)
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            exchange.client_lost()

    def _acknowledge(self) -> None:
        unacked, self._unacked = self._unacked, 0
        if unacked:
            self.connection.acknowledge(self.stream_id, unacked)

    # Its gate's transport: the request body's window

    def pauseProducing(self) -> None:
        self._reading = False

    def resumeProducing(self) -> None:
        self._reading = True
        self._acknowledge()

    # Its download's transport: the origin's reads, paused while too much is held

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer
        self._paused_producer = False
        if self._held_size > HIGH_WATER:
            self._pause_producer()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._paused_producer = False

    def _pause_producer(self) -> None:
        if self._producer is not None and not self._paused_producer:
            self._paused_producer = True
            self._producer.pauseProducing()

    # The response, as the exchange writes it

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.send(data)

    def send(self, data: bytes) -> None:
        """What :meth:`write` does, uncounted: a WebSocket leg counts what it writes itself."""
        phase = self._phase
        if phase is _HEAD:
            data = self._head(data)
            if self._phase is _HEAD:
                return
        elif phase is not _BODY:
            return
        if data:
            self._held.append(data)
            self._held_size += len(data)
            self.flush()
            if self._held_size > HIGH_WATER:
                self._pause_producer()

    def answer(self, response: bytes) -> None:
        """Send a whole response (a refusal) and end the stream."""
        self.write(response)
        if self._phase is _BODY:
            self._phase = _ENDING
            self.flush()

    def _head(self, data: bytes) -> bytes:
        """Send the response head at the start of ``data`` (and any 1xx before it); what follows it."""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                raise ValueError("an exchange wrote a response head in pieces")
            status, headers = response_head(data, end)
            data = data[end + 4:]
            if status == 101:  # a WebSocket accepted: RFC 8441 says 200
                headers = [(b":status", b"200")] + [pair for pair in headers[1:] if pair[0] != b"sec-websocket-accept"]
            self.connection.send_headers(self.stream_id, headers)
            if status >= 200 or status == 101:
                self._phase = _BODY
                return data
            if not data:
                return data

    def flush(self) -> None:
        """Send what is held as far as the windows and the client's socket allow; END_STREAM once all is sent."""
        connection = self.connection
        if self._held and connection.writable:
            sent = connection.send_data(self.stream_id, self._held)
            self._held_size -= sent
            self._sent += sent
        if self._held:
            connection.waiting(self)
        elif self._phase is _ENDING or self._phase is _HALF_CLOSING:
            self._end()
        if self._paused_producer and self._held_size <= LOW_WATER:
            self._paused_producer = False
            assert self._producer is not None
            self._producer.resumeProducing()

    def _end(self) -> None:
        half = self._phase is _HALF_CLOSING
        self._phase = _CLOSED
        exchange = self.exchange
        if (self.relay is None and exchange is not None and exchange.termination is not Termination.OK
                and exchange.response_at >= 0):
            self.connection.reset_stream(self.stream_id, ErrorCodes.INTERNAL_ERROR)  # a body cut short
        elif half:
            self.connection.end_stream(self.stream_id, False)
            if not self._request_ended:
                return  # the client may still send: the stream lasts until it ends too
        else:
            self.connection.end_stream(self.stream_id, not self._request_ended)
        self._drop()

    def close(self, whole: bool) -> None:
        """Its WebSocket closed (``whole``) or half-closed the stream: END_STREAM once what is held is sent."""
        if self._phase is _BODY or (whole and self._phase is _HALF_CLOSING):
            self._phase = _ENDING if whole else _HALF_CLOSING
            self.flush()
        elif whole and self._phase is _CLOSED and self.relay is not None and self.connection.open_stream(self):
            self.connection.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)  # half-closed: the rest is refused
            self._drop()

    def abortConnection(self) -> None:  # noqa: N802 (Twisted's name)
        """The exchange cut its response (or its WebSocket the stream): the stream is reset, the connection goes on."""
        if self._phase is not _CLOSED or (self.relay is not None and self.connection.open_stream(self)):
            self._phase = _CLOSED
            self.connection.reset_stream(self.stream_id, ErrorCodes.CANCEL)
            self._drop(lost=True)

    def _drop(self, lost: bool = False) -> None:
        self._held.clear()
        self._held_size = 0
        if self._timer is not None:
            self._timer.stop()
        self.connection.stream_closed(self)
        relay, self.relay = self.relay, None
        if relay is not None:  # as a transport tells its protocol: later, not from inside the call that closed it
            reason = Failure(ConnectionLost() if lost else ConnectionDone())
            self.frontend.clock.callLater(0, relay.client_lost, reason)

    # What a WebSocket calls, as on a client connection

    def upgraded(self) -> H2Stream:
        return self

    def take_over(self, relay: Relay) -> bytes:
        """The WebSocket ``relay`` gets the stream's DATA from here on; what came before it is returned."""
        self.relay = relay
        self.connection.client.responses += 1  # its 200
        self.upgraded_at = (self.bytes_in - len(self._early), self.bytes_out)
        if self._timer is not None:
            self._timer.stop()
        early, self._early = self._early, b""
        return early

    def websocket_ended(self, termination: Termination) -> None:
        """A stream's WebSocket ending ends nothing more than the stream."""

    # What the exchange calls, as on a client connection

    def client_of(self, head: RequestHead) -> str:
        return self.connection.client.client_of(head)

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes:
        return self.connection.client.forwarding_headers(host, head)

    def ends_with(self, exchange: ExchangeEnding) -> bool:
        return True  # a stream carries one request

    def exchange_done(self, exchange: ExchangeEnding, keep_alive: bool, now: float, relayed: bool) -> None:
        self.connection.client.responses += 1
        self.unpin()
        if self._timer is not None:
            self._timer.clear()
        if self._phase is _CLOSED:
            return
        if self._phase is _HEAD:  # ended without an answer (the client is gone)
            self.abortConnection()
            return
        self._phase = _ENDING
        self.flush()

    def client_stalled(self, stalled: bool) -> None:
        """The client stopped (or resumed) taking the response: ``timeout client`` runs meanwhile."""
        if stalled:
            self._timed_sent = self._sent
            self._arm(self.frontend.timeouts.client)
        elif self._timer is not None:
            self._timer.clear()

    def _arm(self, delay: float) -> None:
        if self._timer is None:
            self._timer = Deadline(self.frontend.clock, self._timed_out)
        self._timer.set(delay)

    def _timed_out(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.finished:
            return
        if self._sent != self._timed_sent:  # slowly, but it takes what is sent
            self._timed_sent = self._sent
            self._arm(self.frontend.timeouts.client)
            return
        exchange.client_timed_out()

    def unpin(self) -> None:
        """A stream keeps no server connection past its request (connection-oriented auth needs HTTP/1.1)."""
        pinned, self.pinned = self.pinned, None
        if pinned is not None:
            pinned.pinned_to = None
            pinned.abort()

    def end(self, reason: ConnectionEnd) -> None:
        """A lost pinned server connection ends its client: here, the stream."""
        self.abortConnection()
