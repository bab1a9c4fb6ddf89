"""The message path both legs of a session-mode WebSocket share: simple frames read and written without Autobahn.

An open leg with nothing partial in Autobahn's parser takes the whole simple frames at the front of each read
itself: with nothing to see them on the way (no hook, no replay, no compression), they are passed to the other
leg as the frames they came in (a client's with fresh masking keys); otherwise each is relayed as a message
(``onMessage``). Anything else (fragments, control frames, anything invalid or over a limit) goes to Autobahn's
parser. What a read prompts is written once it is all relayed (the :class:`~._outbox.Outbox`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._compat import AutobahnHooks, cancel_pong_timeout, direct_write, send_queue_back
from ..flow import writes_directly
from ._frames import frame_parts, read_simple, remasked, scan_simple
from ._outbox import Outbox

if TYPE_CHECKING:
    from ._handoff import ByteMeter


class _Uncounted:
    """Where a leg not yet given its connection or server counts what it writes."""

    __slots__ = ("bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = 0


class FramePath(AutobahnHooks):
    """A leg's reading and writing of simple frames (see the module's docstring); the leg says where its
    messages may be passed (:meth:`_passage`) and tells its session what was (:meth:`_passed`)."""

    transport: Any  # a TCP connection, or the TLS one over it
    autoFragmentSize: int  # Autobahn's settings: set per backend by _configured
    held: Any = None  # see ClientLeg
    _masked_in = _masked_out = False  # whether frames from / to the peer are masked (client to server)
    _limit = 0  # the largest payload the fast path may take (0: none); set per backend by _configured
    _tail = b""  # the start of a simple frame the last read cut off
    _deflating = True  # whether messages are compressed (permessage-deflate): known once open
    _outbox: Outbox  # set per backend by _configured
    _held_frames: list[bytes | bytearray] | None = None  # fast-path frames (heads, bodies) held while a read is relayed
    #: What counts the bytes this leg writes to its peer: the client's connection (its ``bytes_out``) for the
    #: client leg, the server (its ``bytes_in``) for a backend leg. Reads are counted where they arrive.
    meter: ByteMeter = _Uncounted()
    _to_client = False

    def dataReceived(self, data: bytes) -> None:
        # Fast path: whole simple messages at the front of the read, when Autobahn holds nothing partial;
        # a simple frame cut by the read waits here for its rest (``_tail``, at most one frame).
        if self._tail:
            data, self._tail = self._tail + data, b""
        if (
            self.state == self.STATE_OPEN and not self.data and self.current_frame is None
            and not self.inside_message and not self._deflating and self.held is None
        ):
            target = self._passage()
            if target is not None and not target._deflating and not target.send_queue:
                used, waiting = self._pass(data, target)
            else:
                used, waiting = self._relay(data)
            if used:
                data = data[used:]
                if not data:
                    return
            if waiting:
                self._tail = data
                return
        elif self.state == self.STATE_CLOSED:
            return  # a closed leg lingering (see _fin.py): what the peer still sends is discarded
        super().dataReceived(data)

    def _pass(self, data: bytes, target: FramePath) -> tuple[int, bool]:
        """Pass the simple messages at the front of ``data`` to ``target`` as the frames they came in (a client's
        with fresh masking keys), nothing in between to see them (see ``_passage``): where they end, and whether
        the rest begins a simple frame."""
        limit, fragment = self._limit, target.autoFragmentSize
        if fragment and (not limit or fragment < limit):
            limit = fragment  # a larger message would leave fragmented
        frames, waiting = scan_simple(data, self._masked_in, limit)
        if not frames:
            return 0, waiting
        if self.autoPingTimeoutCall is not None and self.autoPingRestartOnAnyTraffic:
            cancel_pong_timeout(self)  # traffic proves the peer alive, as Autobahn holds
        used = frames[-1][1]
        if self._masked_in:
            target.pass_on(remasked(data, frames), used)
        else:
            target.pass_on([data if used == len(data) else data[:used]], used)
        self._passed(len(frames))
        return used, waiting

    def _relay(self, data: bytes) -> tuple[int, bool]:
        """Relay the simple messages at the front of ``data`` one by one (``onMessage``): where the last one taken
        ends, and whether the rest begins a simple frame."""
        messages, waiting = read_simple(data, self._masked_in, self._limit)
        used = 0
        if messages:
            if self.autoPingTimeoutCall is not None and self.autoPingRestartOnAnyTraffic:
                cancel_pong_timeout(self)  # traffic proves the peer alive, as Autobahn holds
            outbox = self._outbox
            outbox.depth += 1  # what the messages prompt is written once they are all relayed
            try:
                for payload, binary, end in messages:
                    self.onMessage(payload, binary)
                    used = end
                    if self.state != self.STATE_OPEN or self.held is not None:
                        waiting = False  # the message closed or failed the leg: Autobahn reads the rest
                        break
            finally:
                outbox.close()
        return used, waiting

    def _passage(self) -> FramePath | None:
        """The leg this leg's messages may be passed to as frames (its session's :meth:`backend_passage` or
        :meth:`client_passage`), or None."""
        raise NotImplementedError

    def _passed(self, count: int) -> None:
        """``count`` messages were passed to :meth:`_passage`'s leg: tell the session."""
        raise NotImplementedError

    def pass_on(self, frames: list[bytes | bytearray], size: int) -> None:
        """Send ``frames`` (``size`` bytes of whole frames: passed from the other leg, or a message framed here), after
        any frame held, or hold them while the outbox is relaying a read."""
        held = self._held_frames
        if held is not None:
            held += frames
        elif self._outbox.depth:
            self._held_frames = frames
            self._outbox.holding(self)
        else:
            self._write_now(bytes(frames[0]) if len(frames) == 1 else b"".join(frames))  # bytes(): no copy of bytes
        self._count(size)

    def sendMessage(self, payload: bytes, isBinary: bool = False, fragmentSize: int | None = None,
                    sync: bool = False, doNotCompress: bool = False) -> None:
        if (
            self.state == self.STATE_OPEN and not self._deflating
            and fragmentSize is None and not sync and not self.send_queue
            and (not self.autoFragmentSize or len(payload) <= self.autoFragmentSize)
        ):
            parts = frame_parts(payload, isBinary, self._masked_out)
            if parts is not None:
                self.pass_on(list(parts), len(parts[0]) + len(parts[1]))
                return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)

    def flush(self) -> None:
        """Write the frames the outbox held for this leg (see ``dataReceived``)."""
        frames, self._held_frames = self._held_frames, None
        if frames:
            self._write_now(b"".join(frames))

    def _write_now(self, data: bytes) -> None:
        """Write ``data`` now: straight to the socket when nothing waits to be sent there."""
        transport = self.transport
        if writes_directly(transport):  # sent now if nothing waits: no writer registered, no reactor trip
            direct_write(transport, data)
        else:
            transport.write(data)

    def _count(self, size: int) -> None:
        """``size`` bytes written to the peer, counted on the leg's meter."""
        if self._to_client:
            self.meter.bytes_out += size
        else:
            self.meter.bytes_in += size

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every write of Autobahn's passes here (its queue, for sync and chopped writes, is fed from here),
        # after the frames held for this leg.
        if self._held_frames is not None:
            self.flush()
        self._count(len(data))
        if sync or chopsize or self.send_queue:
            send_queue_back(self)
            super().sendData(data, sync, chopsize)
        else:
            self.transport.write(data)
