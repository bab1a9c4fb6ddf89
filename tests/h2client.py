"""An HTTP/2 client for tests, on the h2 library (its frames checked by it), and raw frames for hostile ones."""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from hyperframe.frame import HeadersFrame
from twisted.internet import reactor
from twisted.internet.protocol import Protocol

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Answer:
    """What came back on one stream."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.ended = False
        self.reset: int | None = None  # the RST_STREAM error code, if reset
        self.informational: list[bytes] = []  # the statuses of 1xx answers before the response

    @property
    def status(self) -> int:
        return int(self.headers.get(b":status", b"0"))


class H2Client(Protocol):
    """Speaks HTTP/2 by prior knowledge (or over a TLS transport that negotiated h2); ``acknowledge`` False
    leaves received DATA unacknowledged, so the proxy's windows close (a client that does not read)."""

    def __init__(self, acknowledge: bool = True, settings: dict[int, int] | None = None, split: int = 0,
                 window: int = 0, prefix: bytes = b"") -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.acknowledge = acknowledge
        self.settings = settings or {}
        self.answers: dict[int, Answer] = {}
        self.goaway: ConnectionTerminated | None = None
        self.received = b""
        self.lost = False
        self.protocol_error: ProtocolError | None = None
        self.window = window  # opened on the connection's window at the start
        self.prefix = prefix  # written before the preface (a PROXY header)
        self.split = split  # write the first bytes (the preface) in two, this many first, a moment apart

    def connectionMade(self) -> None:
        if self.prefix:
            self.transport.write(self.prefix)
        self.h2.initiate_connection()
        if self.settings:
            self.h2.update_settings(self.settings)
        if self.window:
            self.h2.increment_flow_control_window(self.window)
        if self.split:
            data = self.h2.data_to_send()
            self.transport.write(data[:self.split])
            reactor.callLater(0.05, self._rest, data[self.split:])
            return
        self._flush()

    def _rest(self, data: bytes) -> None:
        self.split = 0
        self.transport.write(data)
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as error:
            self.protocol_error = error
            return
        for event in events:
            self._event(event)
        self._flush()

    def _event(self, event: Any) -> None:
        if isinstance(event, InformationalResponseReceived):
            self.answer(event.stream_id).informational.append(dict(event.headers)[b":status"])
        elif isinstance(event, ResponseReceived):
            self.answer(event.stream_id).headers.update(dict(event.headers))
        elif isinstance(event, DataReceived):
            self.answer(event.stream_id).body += event.data
            if self.acknowledge:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded):
            self.answer(event.stream_id).ended = True
        elif isinstance(event, StreamReset):
            self.answer(event.stream_id).reset = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.goaway = event

    def answer(self, stream_id: int) -> Answer:
        return self.answers.setdefault(stream_id, Answer())

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True

    def _flush(self) -> None:
        if self.split:
            return  # the rest of the preface goes first
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def request(self, path: bytes = b"/", method: bytes = b"GET", body: bytes | None = None,
                headers: list[tuple[bytes, bytes]] | None = None, end: bool = True) -> int:
        """Open a stream; its id."""
        stream_id = self.h2.get_next_available_stream_id()
        head = [(b":method", method), (b":scheme", b"http"), (b":authority", b"example.test"), (b":path", path)]
        self.h2.send_headers(stream_id, head + (headers or []), end_stream=end and body is None)
        if body is not None:
            self.send_body(stream_id, body, end)
        self._flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end: bool = True) -> bytes:
        """Send as much of ``body`` as the windows allow; what is left."""
        while body:
            room = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if room <= 0:
                break
            self.h2.send_data(stream_id, body[:room])
            body = body[room:]
        if not body and end:
            self.h2.end_stream(stream_id)
        self._flush()
        return body

    def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id)
        self._flush()

    def malformed_request(self, headers: list[tuple[bytes, bytes]]) -> int:
        """Open a stream with exactly ``headers`` (pseudo-headers included), unchecked: what h2 would refuse to send."""
        config = self.h2.config
        config.validate_outbound_headers = config.normalize_outbound_headers = False
        try:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, headers, end_stream=True)
        finally:
            config.validate_outbound_headers = config.normalize_outbound_headers = True
        self._flush()
        return stream_id

    def raw_request(self, stream_id: int, path: bytes = b"/") -> None:
        """A GET on ``stream_id`` whatever h2 thinks of it (past a limit, after GOAWAY)."""
        block = self.h2.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"),
                                        (b":authority", b"example.test"), (b":path", path)])
        self.raw(HeadersFrame(stream_id, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())

    def raw(self, data: bytes) -> None:
        """Bytes straight onto the connection (frames h2 would never send)."""
        assert self.transport is not None
        self.transport.write(data)
