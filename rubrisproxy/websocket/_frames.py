"""The common case of WebSocket framing, for session mode's fast path.

Most traffic is whole, uncompressed text or binary messages of at most 64 KiB, each
in one frame. :func:`read_simple` takes such frames off the front of a read and
:func:`simple_frame` builds them; everything else (fragments, control frames,
extensions, anything invalid or over a limit, a frame cut by the read) is left to
Autobahn, which stays the reference for the whole protocol. The conformance suite
(``tests/test_ws_conformance.py``) checks the two agree.
"""

from __future__ import annotations

import os

from autobahn.websocket.xormasker import create_xor_masker

_TEXT, _BINARY = 0x81, 0x82  # FIN set, no RSV bits, opcode text / binary
_MAX_SIMPLE = 0xFFFF  # payloads with a 7- or 16-bit length
#: From this size Autobahn's masker (native with NVX) beats Python's big-integer XOR; below, calling it costs more.
_NATIVE_FROM = 1024


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (its own inverse)."""
    size = len(payload)
    if not size:
        return payload
    if size >= _NATIVE_FROM:
        return create_xor_masker(mask, size).process(payload)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


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
        payload = data[start:stop]
        if masked:
            payload = unmask(payload, mask)
        if first == _TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return messages, False  # Autobahn fails it with 1007
        messages.append((payload, first == _BINARY, stop))
        pos = stop
    return messages, False


def simple_frame(payload: bytes, binary: bool, masked: bool) -> bytes | None:
    """One whole frame for ``payload``, or None if it is not a simple message (too large)."""
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
        return head + payload
    mask = os.urandom(4)
    return head + mask + unmask(payload, mask)
