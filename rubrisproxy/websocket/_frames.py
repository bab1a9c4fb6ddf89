"""The common case of WebSocket framing, for session mode's fast path.

Most traffic is whole, uncompressed text or binary messages of at most 64 KiB, each
in one frame. :func:`read_simple` takes such frames off the front of a read and
:func:`frame_parts` builds them; everything else (fragments, control frames,
extensions, anything invalid or over a limit, a frame cut by the read) is left to
Autobahn, which stays the reference for the whole protocol. The conformance suite
(``tests/test_ws_conformance.py``) checks the two agree.
"""

from __future__ import annotations

import os

from .._compat import native_xor

_TEXT, _BINARY = 0x81, 0x82  # FIN set, no RSV bits, opcode text / binary
_MAX_SIMPLE = 0xFFFF  # payloads with a 7- or 16-bit length
#: The C masker (Autobahn's NVX, when built), or None: Python's big-integer XOR then does every size.
_xor = native_xor()
#: From this size the C masker beats Python's big-integer XOR (16 KiB: about 1.7 against 39 µs); below, calling
#: it costs more than the XOR.
_NATIVE_FROM = 256
#: Random bytes drawn at a time for the proxy's masks: one os.urandom call per 1,024 frames, not per frame.
_MASK_POOL = 4096


def unmask(payload: bytes | memoryview, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (its own inverse)."""
    size = len(payload)
    if not size:
        return bytes(payload)
    if size >= _NATIVE_FROM and _xor is not None:
        return bytes(_xor(payload, mask))
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class _Masks:
    """Fresh masking keys from the OS's random source, drawn a pool at a time (RFC 6455 5.3 asks for a new
    unpredictable key per frame; os.urandom is that source, whatever the size drawn)."""

    __slots__ = ("_pool", "_at")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def take(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_MASK_POOL), 0
        self._at = at + 4
        return self._pool[at:at + 4]

    def take_many(self, count: int) -> bytes:
        """``count`` keys, one after the other."""
        size = count << 2
        at = self._at
        if at + size > len(self._pool):
            self._pool, at = os.urandom(max(_MASK_POOL, size)), 0
        self._at = at + size
        return self._pool[at:at + size]


_masks = _Masks()


def scan_simple(data: bytes, masked: bool, limit: int) -> tuple[list[tuple[int, int, bool]], bool]:  # noqa: C901, PLR0911, PLR0912 - per frame: one loop, no helper calls
    """The whole simple frames at the front of ``data``, and whether the rest begins a simple one.

    Each frame is (where its payload starts, where it ends, binary); a masked frame's key is the 4 bytes before
    its payload. ``masked`` says whether frames must be masked (from a client) or must not be (from a server);
    ``limit`` is the largest payload allowed (0: no limit). Reading stops at the first frame that is not simple,
    valid (text: UTF-8) and complete; the flag is True when what stopped it is only the end of ``data`` (a simple
    frame cut by the read), so the caller can wait for the rest instead of handing it to Autobahn.
    """
    frames: list[tuple[int, int, bool]] = []
    append = frames.append
    mask_bit, key = (0x80, 4) if masked else (0, 0)
    limit = limit or _MAX_SIMPLE  # no frame here is larger
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        if first != _BINARY and first != _TEXT:
            return frames, False
        if pos + 1 == end:
            return frames, True
        second = data[pos + 1]
        if (second & 0x80) != mask_bit:
            return frames, False
        size = second & 0x7F
        if size < 126:
            start = pos + 2 + key
        elif size == 126:
            if end - pos < 4:
                return frames, True
            size = (data[pos + 2] << 8) | data[pos + 3]
            if size < 126:
                return frames, False  # a length in a longer form than needed: Autobahn refuses it
            start = pos + 4 + key
        else:
            return frames, False  # a 64-bit length
        if size > limit:
            return frames, False
        stop = start + size
        if stop > end:
            return frames, True
        if first == _BINARY:
            append((start, stop, True))
        else:
            try:
                (unmask(data[start:stop], data[start - 4:start]) if masked else data[start:stop]).decode("utf-8")
            except UnicodeDecodeError:
                return frames, False  # Autobahn fails it with 1007
            append((start, stop, False))
        pos = stop
    return frames, False


def read_simple(data: bytes, masked: bool, limit: int) -> tuple[list[tuple[bytes, bool, int]], bool]:
    """The whole simple messages at the front of ``data`` (see :func:`scan_simple`), each as (payload, binary,
    where its frame ends), and whether the rest begins a simple one."""
    frames, waiting = scan_simple(data, masked, limit)
    if not masked:
        return [(data[start:stop], binary, stop) for start, stop, binary in frames], waiting
    messages = []
    for start, stop, binary in frames:
        if stop - start < _NATIVE_FROM:
            payload = unmask(data[start:stop], data[start - 4:start])
        else:
            payload = unmask(memoryview(data)[start:stop], data[start - 4:start])  # the C masker copies it once
        messages.append((payload, binary, stop))
    return messages, waiting


def remasked(data: bytes, frames: list[tuple[int, int, bool]]) -> list[bytes | bytearray]:
    """The masked ``frames`` of ``data`` (:func:`scan_simple`'s, from its start), as they are passed on: each with
    a fresh masking key, in pieces to be joined.

    A frame masked with key ``k`` is passed on masked with ``k ^ d``, ``d`` fresh from the OS's random source
    (so the new key is as unpredictable): its key and payload XORed with ``d`` repeated, its head unchanged. The
    payload is never unmasked. Small frames are XORed together, as one big integer; from ``_NATIVE_FROM`` bytes,
    each by the C masker.
    """
    keys = _masks.take_many(len(frames))
    pieces: list[bytes | bytearray] = []
    stream: list[bytes] = []  # what the run of small frames from ``run`` is XORed with
    run = at = pos = 0
    for start, stop, _ in frames:
        key_at = start - 4
        key = keys[at:at + 4]
        at += 4
        size = stop - key_at
        if size - 4 < _NATIVE_FROM or _xor is None:
            stream.append(_ZEROS[key_at - pos])
            stream.append((key * ((size >> 2) + 1))[:size])
        else:
            if run < pos:
                pieces.append(_xored(data[run:pos], b"".join(stream)))
                stream.clear()
            pieces.append(data[pos:key_at])
            pieces.append(_xor(memoryview(data)[key_at:stop], key))
            run = stop
        pos = stop
    if run < pos:
        pieces.append(_xored(data[run:pos], b"".join(stream)))
    return pieces


#: The zeros an unchanged frame head (2 or 4 bytes: the key follows) is XORed with.
_ZEROS = {2: b"\0\0", 4: b"\0\0\0\0"}


def _xored(data: bytes, stream: bytes) -> bytes:
    """``data`` XOR ``stream`` (of its length), as one big integer."""
    size = len(data)
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(size, "little")


def frame_parts(payload: bytes, binary: bool, masked: bool) -> tuple[bytes, bytes | bytearray] | None:
    """One whole frame for ``payload`` as its head (with the mask) and its body, or None if it is not a simple
    message (too large). Kept apart, the body is copied once, where the frames of a write are joined."""
    size = len(payload)
    if size > _MAX_SIMPLE:
        return None
    first = _BINARY if binary else _TEXT
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    else:
        head = bytes((first, mask_bit | 126, size >> 8, size & 0xFF))
    if not masked:
        return head, payload
    mask = _masks.take()
    if size >= _NATIVE_FROM and _xor is not None:
        return head + mask, _xor(payload, mask)
    return head + mask, unmask(payload, mask)


def simple_frame(payload: bytes, binary: bool, masked: bool) -> bytes | None:
    """One whole frame for ``payload``, or None if it is not a simple message (too large)."""
    parts = frame_parts(payload, binary, masked)
    return None if parts is None else parts[0] + parts[1]
