"""Sending an HTTP/2 connection's frames: its streams' heads and data as the windows and the socket allow."""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from h2.connection import H2Connection as FrameMachine
from h2.errors import ErrorCodes

if TYPE_CHECKING:
    from ._connection import ClientConnection
    from ._h2response import StreamResponse


#: A piece of a response held for a stream: what an exchange wrote, or the rest of it (a view, not a copy).
Chunk = bytes | memoryview


class H2State(Enum):
    """Where an :class:`~rubrisproxy.frontend._h2connection.H2Connection` is."""

    OPEN = "open"  # streams are taken
    DRAINING = "draining"  # GOAWAY sent: the streams up to its last id finish, later ones are refused
    CLOSED = "closed"  # closing or lost: nothing more is read or sent


_OPEN, _DRAINING, _CLOSED = H2State.OPEN, H2State.DRAINING, H2State.CLOSED


class FrameOutput:
    """The part of :class:`~rubrisproxy.frontend._h2connection.H2Connection` that sends frames.

    What h2 queues goes to the client connection at once (:meth:`send`). A stream's data goes out as far
    as the stream's and the connection's windows allow, and only while the client's socket takes what is
    written (``writable``, from a write watch on it); a stream left holding data is ``waiting`` until a
    WINDOW_UPDATE, a SETTINGS or the socket draining lets it go on.
    """

    frames: FrameMachine
    client: ClientConnection
    writable: bool
    _state: H2State
    _waiting: dict[StreamResponse, None]  # streams holding data for a window or the socket, in order

    def acknowledge(self, stream_id: int, size: int) -> None:
        """``size`` request body bytes of ``stream_id`` are taken: the client may send more."""
        self.frames.acknowledge_received_data(size, stream_id)
        self.send()

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.frames.send_headers(stream_id, headers)
        self.send()

    def send_data(self, stream_id: int, held: deque[Chunk]) -> int:
        """Send what ``held`` holds as the windows allow, taking it out; the bytes sent. A large piece is cut
        into frames without copying it, small ones share a frame."""
        frames = self.frames
        sent = 0
        while held:
            room = min(frames.local_flow_control_window(stream_id), frames.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = held.popleft()
            size = len(chunk)
            if size > room:
                view = memoryview(chunk)
                held.appendleft(view[room:])
                chunk, size = view[:room], room
            elif held and size + len(held[0]) <= room:
                parts = [chunk]
                while held and size + len(held[0]) <= room:
                    part = held.popleft()
                    parts.append(part)
                    size += len(part)
                chunk = b"".join(parts)
            frames.send_data(stream_id, chunk)
            sent += size
        self.send()
        return sent

    def end_stream(self, stream_id: int, reset: bool) -> None:
        """END_STREAM on ``stream_id``; ``reset``: its request is not all read, and will not be (RFC 9113 8.1)."""
        frames = self.frames
        frames.end_stream(stream_id)
        if reset:
            self.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        self.send()

    def reset_stream(self, stream_id: int, code: ErrorCodes) -> None:
        """RST_STREAM, unless the stream is closed both ways already (the client's END_STREAM may have been read
        in the same read as its request, before the request was answered)."""
        stream = self.frames.streams.get(stream_id)
        if self._state is not _CLOSED and stream is not None and not stream.closed:
            self.frames.reset_stream(stream_id, code)
            self.send()

    def waiting(self, stream: StreamResponse) -> None:
        """``stream`` holds data a window or the client's socket did not take yet."""
        self._waiting[stream] = None

    def send(self) -> None:
        """Pass on what h2 has queued. Through the transport's buffer, not written at once as HTTP/1.1
        responses are: the frames of one turn of the reactor (a response's HEADERS, DATA and END_STREAM,
        several streams' answers) then leave in one write."""
        data = self.frames.data_to_send()
        if data:
            self.write(data)

    def write(self, data: bytes) -> None:
        client = self.client
        client.bytes_out += len(data)
        client.transport.write(data)

    def _output_changed(self, full: bool) -> None:
        self.writable = not full
        if not full:
            self._flush_waiting()

    def _flush_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for stream in waiting:
            stream.flush()
