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


_masks = _Masks()


def read_simple(data: bytes, masked: bool, limit: int) -> tuple[list[tuple[bytes, bool, int]], bool]:  # noqa: C901, PLR0911, PLR0912 - per message: one loop, no helper calls
    """Whole simple messages at the front of ``data``, and whether the rest begins a simple one.

    Each message is (payload, binary, where its frame ends). ``masked`` says whether
    frames must be masked (from a client) or must not be (from a server); ``limit`` is
    the largest payload allowed (0: no limit). Reading stops at the first frame that
    is not simple, valid and complete; the flag is True when what stopped it is only
    the end of ``data`` (a simple frame cut by the read), so the caller can wait for
    the rest instead of handing it to Autobahn.
    """
    messages: list[tuple[bytes, bool, int]] = []
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        if first != _TEXT and first != _BINARY:
            return messages, False
        if end - pos < 2:
            return messages, True
        second = data[pos + 1]
        if bool(second & 0x80) != masked:
            return messages, False
        size = second & 0x7F
        start = pos + 2
        if size == 127:
            return messages, False
        if size == 126:
            if end - start < 2:
                return messages, True
            size = int.from_bytes(data[start:start + 2], "big")
            if size < 126:
                return messages, False  # a length in a longer form than needed: Autobahn refuses it
            start += 2
        if limit and size > limit:
            return messages, False
        if masked:
            mask = data[start:start + 4]
            start += 4
        stop = start + size
        if stop > end:
            return messages, True
        if not masked:
            payload = data[start:stop]
        elif size < _NATIVE_FROM:
            payload = unmask(data[start:stop], mask)
        else:
            payload = unmask(memoryview(data)[start:stop], mask)  # the C masker copies it once
        if first == _TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return messages, False  # Autobahn fails it with 1007
        messages.append((payload, first == _BINARY, stop))
        pos = stop
    return messages, False


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
