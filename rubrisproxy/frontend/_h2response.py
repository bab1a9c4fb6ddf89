"""Sending one HTTP/2 stream's response: the HTTP/1.1 response an exchange writes, as HEADERS and DATA frames."""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from ..deadline import Deadline
from ._h2head import response_head
from ._h2output import Chunk

if TYPE_CHECKING:
    from ..websocket import Relay
    from ._context import Frontend
    from ._exchange import Exchange
    from ._h2connection import H2Connection

#: Response bytes a stream holds beyond what its windows and the client's socket take before it pauses its
#: origin's reads; under the low mark they resume. A stream's memory is bounded by these, not by the response.
HIGH_WATER = 65536
LOW_WATER = 16384


class StreamPhase(Enum):
    """Where an :class:`~rubrisproxy.frontend._h2stream.H2Stream`'s response is."""

    HEAD = "head"  # the exchange has not written its response head yet
    BODY = "body"  # HEADERS sent: what the exchange writes goes out in DATA frames, as the windows allow
    ENDING = "ending"  # the exchange is done (or its WebSocket closed): END_STREAM follows what is still held
    HALF_CLOSING = "half-closing"  # its WebSocket half-closed: END_STREAM follows, the client may still send
    CUTTING = "cutting"  # the exchange broke its response off: RST_STREAM follows what is still held
    CLOSED = "closed"  # END_STREAM or RST_STREAM sent, or reset by the client: nothing more is sent


_HEAD, _BODY, _ENDING, _HALF_CLOSING, _CUTTING, _CLOSED = (
    StreamPhase.HEAD, StreamPhase.BODY, StreamPhase.ENDING, StreamPhase.HALF_CLOSING, StreamPhase.CUTTING,
    StreamPhase.CLOSED,
)


class StreamResponse:
    """The part of :class:`~rubrisproxy.frontend._h2stream.H2Stream` that sends its response.

    The exchange writes an HTTP/1.1 response (framed as for HTTP/1.0: no chunks); its head goes out as
    HEADERS (a 101 as the 200 of RFC 8441) and its body as DATA frames as the stream's and the connection's
    windows allow. What the windows or the client's socket do not take is held up to :data:`HIGH_WATER`,
    past which the origin's reads are paused (the origin gate is the stream's producer, through its
    ``download``). It is a base rather than an object of its own for it shares the stream's slots.
    """

    __slots__ = ("_phase", "_held", "_held_size", "_producer", "_paused_producer", "_sent", "relay", "bytes_out")

    connection: H2Connection
    stream_id: int
    frontend: Frontend
    exchange: Exchange | None
    _request_ended: bool
    _timer: Deadline | None

    if TYPE_CHECKING:
        def let_go(self) -> None: ...

    def __init__(self) -> None:
        self._phase = _HEAD
        self._held: deque[Chunk] = deque()
        self._held_size = 0
        self._producer: IPushProducer | None = None
        self._paused_producer = False
        self._sent = 0  # response bytes sent, for timeout client to tell a slow reader from a stuck one
        self.relay: Relay | None = None  # the WebSocket that took the stream over
        self.bytes_out = 0

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
        elif self._phase is not _BODY and self._phase is not _CLOSED:
            self._end()
        if self._paused_producer and self._held_size <= LOW_WATER:
            self._paused_producer = False
            assert self._producer is not None
            self._producer.resumeProducing()

    def _end(self) -> None:
        phase, self._phase = self._phase, _CLOSED
        if phase is _CUTTING:
            self.connection.reset_stream(self.stream_id, ErrorCodes.INTERNAL_ERROR)
        elif phase is _HALF_CLOSING:
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
        elif self.exchange is None or self.exchange.finished:
            self.let_go()  # else once its exchange is done
