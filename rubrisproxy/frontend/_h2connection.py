"""A client connection speaking HTTP/2: its frames in and out, its streams, its limits and defences."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._compat import BodyLengthMismatch, StreamErrorFrames, malformed_h2_request
from ..budget import Budget
from ..config import Http2Config
from ..deadline import Deadline
from ..flow import FlowTransport, WriteWatch
from ..http import HTTPError, error_response
from ..lifecycle import ConnectionEnd, Termination
from ._exchange import Exchange
from ._h2head import request_head
from ._h2output import FrameOutput, H2State
from ._h2stream import H2Stream
from ._timing import log_refused

if TYPE_CHECKING:
    from ._connection import ClientConnection
    from ._context import Frontend
    from ._h2response import StreamResponse

#: What a client's first bytes are when it speaks HTTP/2 without asking (prior knowledge, RFC 9113 3.3).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The preface and the header of the frame after it, which must be a SETTINGS frame (RFC 9113 3.4).
_OPENING = len(PREFACE) + 9
_SETTINGS = 4  # its type
#: What clients send is checked by the proxy, stream by stream (:func:`malformed_h2_request`: the pseudo-headers,
#: the characters, the connection-specific headers), not by h2 as it reads a frame: h2 would end the whole
#: connection, its other streams with it. What the proxy sends was made by it from a parsed response (names in
#: lower case, those HTTP/2 forbids left out).
_CONFIG = H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                          normalize_outbound_headers=False, validate_inbound_headers=False)


def speaks_h2(frontend: Frontend, transport: ITransport, data: bytes, secure: bool) -> bool:
    """Whether a connection of ``frontend`` whose first read is ``data`` speaks HTTP/2: over TLS (``secure``: its
    transport provides ``ISSLTransport``), if ALPN chose ``h2``; in cleartext, if the frontend speaks it and
    ``data`` is the preface (or, shorter, a start no HTTP/1.1 request has). A forward proxy speaks HTTP/1.1 only."""
    if frontend.forward is not None:
        return False
    if secure:
        return getattr(transport, "negotiatedProtocol", None) == b"h2"
    if not frontend.http2.enabled:
        return False
    if len(data) >= len(PREFACE):
        return data.startswith(PREFACE)
    return len(data) >= 4 and PREFACE.startswith(data)


_OPEN, _DRAINING, _CLOSED = H2State.OPEN, H2State.DRAINING, H2State.CLOSED


class H2Connection(FrameOutput):
    """The HTTP/2 side of a :class:`~rubrisproxy.frontend.ClientConnection`, which hands itself over to it
    (as its relay) on the first read: ALPN said ``h2``, or the read is the preface.

    Each stream is an :class:`~rubrisproxy.frontend._h2stream.H2Stream` with its own exchange, so the
    streams share the origin pool, routing, logging and errors of HTTP/1.1 requests. The client
    connection keeps counting the bytes, requests and responses and reports its end. Idle with no
    stream open, it is closed after ``timeout http-request`` (before its first stream) or
    ``http-keep-alive``; resets and control frames beyond the configured budgets, and the h2 library's
    own refusals (too many streams, oversized header lists, CONTINUATION floods), end it with GOAWAY.
    """

    log = Logger()

    def __init__(self, client: ClientConnection, settings: Http2Config, drop: frozenset[bytes]) -> None:
        self.client = client
        self.frontend = client.frontend
        self.settings = settings
        self._drop = drop
        self._state = _OPEN
        self.frames = StreamErrorFrames(config=_CONFIG)
        self.streams: dict[int, H2Stream] = {}
        self._waiting: dict[StreamResponse, None] = {}  # streams holding data for a window or the socket, in order
        self.writable = True
        self._watch = WriteWatch(self._output_changed)
        clock = self.frontend.clock
        self._resets = Budget(clock, settings.max_resets, settings.flood_window)
        self._control = Budget(clock, settings.max_control_frames, settings.flood_window)
        self._idle = Deadline(clock, self._idle_expired)
        self._last_stream = 0  # the last stream a GOAWAY let finish
        self._opening: bytes | None = b""  # the client's first bytes, until its first frame's header is read

    def start(self, data: bytes) -> None:
        """Send the proxy's SETTINGS, then read the client's first bytes."""
        settings, frames = self.settings, self.frames
        header_list = self.frontend.limits.max_header_size
        # In force from the first frame, not from the client's acknowledgement: a client cannot outrun them.
        frames.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: header_list,
            SettingCodes.ENABLE_CONNECT_PROTOCOL: int(settings.websocket),
        })
        frames.decoder.max_header_list_size = header_list
        frames.initiate_connection()
        # The connection's window covers every stream's: one whose origin is slow never stalls the others.
        whole = settings.max_concurrent_streams * settings.initial_window_size
        if whole > 65535:
            frames.increment_flow_control_window(min(whole, (1 << 31) - 1) - 65535)
        cast(FlowTransport, self.client.transport).registerProducer(self._watch, True)
        self._idle.set(self.frontend.timeouts.http_request)
        self.client_data(data)

    # Reading

    def client_data(self, data: bytes) -> None:
        if self._state is _CLOSED:
            return
        if self._opening is not None and not self._opened(data):
            self.log.info("HTTP/2 error from {client}: the first frame is not SETTINGS", client=self.client.client_address)
            self.frames.close_connection(ErrorCodes.PROTOCOL_ERROR)
            self._close(ConnectionEnd.PROTOCOL_READ_ERROR)
            return
        try:
            events = self.frames.receive_data(data)
        except H2Error as error:  # h2 has sent GOAWAY with the error's code
            self.log.info("HTTP/2 error from {client}: {error}", client=self.client.client_address, error=error)
            self._close(ConnectionEnd.PROTOCOL_READ_ERROR)
            return
        pending = self.frames.incoming_buffer._data
        if len(pending) >= 9 and int.from_bytes(pending[:3]) > self.frames.max_inbound_frame_size:
            # What is left unparsed is a frame over the size allowed, its header says: h2 would read all of it (up to
            # 16 MiB) before saying so.
            self.frames.close_connection(ErrorCodes.FRAME_SIZE_ERROR)
            self._close(ConnectionEnd.PROTOCOL_READ_ERROR)
            return
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
                if self._state is _CLOSED:
                    return
        self.send()

    def _opened(self, data: bytes) -> bool:
        """Keep the client's first bytes until the header of the frame after the preface is among them: False if
        that frame is not SETTINGS (h2 would answer whatever came first, and wait for SETTINGS until
        ``timeout http-request``); a wrong preface is h2's to refuse."""
        opening = self._opening
        assert opening is not None
        opening += data[:_OPENING - len(opening)]
        if len(opening) < _OPENING:
            self._opening = opening
            return True
        self._opening = None
        return not opening.startswith(PREFACE) or (opening[_OPENING - 6] == _SETTINGS and not opening[_OPENING - 5] & 1)

    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self._state is _DRAINING and stream_id > self._last_stream:
            self.frames.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        ended = event.stream_ended is not None
        stream = self.streams[stream_id] = H2Stream(self, stream_id, ended)
        self._idle.clear()
        client, frontend = self.client, self.frontend
        client.requests += 1
        frontend.requests += 1
        if frontend.max_reads or frontend.max_writes:
            self._limit(client.requests)
        headers = event.headers or ()
        problem = malformed_h2_request(headers)
        if problem is not None:
            self.log.info("malformed HTTP/2 request from {client} on stream {stream}: {problem}",
                          client=client.client_address, stream=stream_id, problem=problem)
            self.answer_error(stream, HTTPError(400, f"malformed request: {problem}"))
            return
        try:
            head = request_head(headers, ended, frontend.limits, self._drop, self.settings.websocket)
        except HTTPError as error:
            self.answer_error(stream, error)
            return
        now = frontend.clock.seconds()
        exchange = Exchange(stream, head, now, now - client.ready_at)
        if frontend.clients is not None:
            exchange.session = frontend.clients.request_started(head, client, not client.proxied,
                                                                exchange.client_address)
        stream.request(exchange)

    def _limit(self, streams: int) -> None:
        """``max-reads`` and ``max-writes`` count streams: the last one allowed is answered, with a GOAWAY naming
        it sent at once, so the client opens no more on this connection."""
        frontend = self.frontend
        for limit, end in ((frontend.max_reads, ConnectionEnd.MAX_READS), (frontend.max_writes, ConnectionEnd.MAX_WRITES)):
            if limit and streams >= limit and self._state is _OPEN:
                self.client.note_end(end)
                self.drain()

    def _data(self, event: DataReceived) -> None:
        if not event.flow_controlled_length and event.stream_ended is None and not self._control.spend():
            self._calm("empty DATA frames")  # they cost the proxy work and the client nothing (CVE-2019-9518)
            return
        stream = self.streams.get(event.stream_id)
        if stream is None:  # answered and closed already: its bytes only count against the connection
            self.acknowledge(event.stream_id, event.flow_controlled_length)
        else:
            stream.body(event.data, event.flow_controlled_length)

    def _stream_ended(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.body_end()

    def _stream_reset(self, event: StreamReset) -> None:
        if not self._resets.spend():
            self._calm("stream resets")
            return
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.reset()

    def _body_length_mismatch(self, event: BodyLengthMismatch) -> None:
        """A request body longer or shorter than its Content-Length: its stream is reset (by the frame machine), the
        connection and its other streams go on."""
        self.log.info("malformed HTTP/2 request from {client} on stream {stream}: its body is not its Content-Length",
                      client=self.client.client_address, stream=event.stream_id)
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.reset()

    def _window_updated(self, event: WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream in self._waiting:
                del self._waiting[stream]
                stream.flush()
        else:
            self._flush_waiting()

    def _control_frame(self, event: object) -> None:
        if not self._control.spend():
            self._calm("control frames")
        elif isinstance(event, RemoteSettingsChanged):
            self._flush_waiting()  # a larger initial window opens every stream's

    def _terminated(self, event: ConnectionTerminated) -> None:
        """The client sent GOAWAY: h2 sends nothing after it, so the streams in progress are cut."""
        self.client.note_end(ConnectionEnd.CLIENT_CLOSE)
        self._close(ConnectionEnd.CLIENT_CLOSE)

    def _calm(self, what: str) -> None:
        self.log.warn("HTTP/2 flood of {what} from {client}: GOAWAY", what=what, client=self.client.client_address)
        self.frames.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._close(ConnectionEnd.PROTOCOL_READ_ERROR)

    # What streams call (and FrameOutput's)

    def in_progress(self) -> list[Exchange]:
        """Its streams' exchanges."""
        return [stream.exchange for stream in self.streams.values() if stream.exchange is not None]

    def open_stream(self, stream: StreamResponse) -> bool:
        """Whether ``stream`` is still one of the connection's (not closed both ways)."""
        return self.streams.get(stream.stream_id) is stream

    def stream_closed(self, stream: StreamResponse) -> None:
        self._waiting.pop(stream, None)
        if self.streams.pop(stream.stream_id, None) is None or self.streams or self._state is _CLOSED:
            return
        if self._state is _DRAINING:
            self._close(ConnectionEnd.SERVER_CLOSE)
        else:
            self.client.ready_at = self.frontend.clock.seconds()
            self._idle.set(self.frontend.timeouts.http_keep_alive)

    def answer_error(self, stream: H2Stream, error: HTTPError) -> None:
        """Refuse a request before it became an exchange: the error answered on its stream."""
        response = error_response(error.status)
        stream.answer(response)
        termination = Termination.NOT_IMPLEMENTED if error.status == 501 else Termination.BAD_REQUEST
        self.client.responses += 1
        log_refused(self.client, error.status, termination, len(response))

    # Ends

    def _idle_expired(self) -> None:
        if not self.streams and self._state is not _CLOSED:
            self.frames.close_connection(ErrorCodes.NO_ERROR)
            self._close(ConnectionEnd.TIMEOUT)

    def drain(self, code: int = 1001) -> None:
        """Stop taking streams (graceful stop): GOAWAY with the last stream read; close once they are done."""
        if self._state is not _OPEN:
            return
        self._state = _DRAINING
        self._last_stream = self.frames.highest_inbound_stream_id
        # Written here, not through h2, which would send nothing more after it: the streams it lets finish must.
        self.send()
        self.write(GoAwayFrame(0, last_stream_id=self._last_stream, error_code=0).serialize())
        if not self.streams:
            self._close(ConnectionEnd.SERVER_CLOSE)

    def abort(self) -> None:
        self.client.transport.abortConnection()

    def client_fin(self) -> None:
        """Not declared: a half-close is a close to an HTTP/2 connection."""

    def client_lost(self, reason: Failure) -> None:
        self._end_streams()

    def _end_streams(self) -> None:
        """Closed: every stream reset (each ends its exchange), and its timer, write watch and frame machine made
        to call it back no more: their bound methods are cycles, which only the cyclic collector would free."""
        self._state = _CLOSED
        self._idle.disown()
        self._watch.disown()
        for stream in list(self.streams.values()):
            stream.reset()
        self.streams.clear()
        self._waiting.clear()
        self.frames._frame_dispatch_table.clear()  # h2's own cycle: it reads no more frames

    def _close(self, reason: ConnectionEnd) -> None:
        """Send what h2 has queued (a GOAWAY), end every stream, and close the client connection."""
        self.send()
        self._end_streams()
        cast(FlowTransport, self.client.transport).unregisterProducer()  # a TLS transport closes only then
        self.client.end(reason)


#: What each h2 event read calls (functions, not a connection's bound methods: no cycle through it).
_HANDLERS: dict[type, Callable[[H2Connection, Any], None]] = {
    RequestReceived: H2Connection._request, DataReceived: H2Connection._data,
    StreamEnded: H2Connection._stream_ended, StreamReset: H2Connection._stream_reset,
    BodyLengthMismatch: H2Connection._body_length_mismatch,
    WindowUpdated: H2Connection._window_updated, RemoteSettingsChanged: H2Connection._control_frame,
    PingReceived: H2Connection._control_frame, PriorityUpdated: H2Connection._control_frame,
    UnknownFrameReceived: H2Connection._control_frame, ConnectionTerminated: H2Connection._terminated,
}
