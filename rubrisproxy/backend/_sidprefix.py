"""Engine.IO stickiness that needs no shared state: the sid the client sees carries its server's token.

With a backend's ``engineio-sid-prefix`` on, the open packet of a polling handshake (Engine.IO v4, and v3 in its
text and binary payload framings) is rewritten so its sid reads ``TOKEN~SID``, TOKEN a hash of the backend's and
server's names (the same on every node and worker that has the configuration). The client sends that sid back
in the ``sid=`` of every later request and of its upgrade; any proxy reads the server from the token, with no
lookup, and the token is taken off every ``sid=`` before the server sees the request. As HAProxy's cookie
``prefix`` mode does with an application's cookie.

A token that names no server of the backend (forged, stale, or of a removed server) is left as it is: the
request is balanced like a new one and the server it reaches answers it as the unknown session it is.
"""

from __future__ import annotations

import hashlib
import re

from ..engineio import polling_open_packet

SEPARATOR = b"~"
_SID_VALUE = re.compile(rb"([?&]sid=)([0-9a-f]{8})~")
_V3_TEXT = re.compile(rb"(\d{1,9}):")


def token_of(backend: str, server: str) -> bytes:
    """The token of ``server`` of ``backend``: 8 hex digits."""
    return hashlib.blake2b(f"{backend}/{server}".encode(), digest_size=4).hexdigest().encode()


class SidPrefix:
    """One backend's sid tokens: which server a token names, a target's tokens taken off, an open packet's sid
    prefixed."""

    __slots__ = ("backend", "_tokens")

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._tokens: dict[str, bytes] = {}  # server name -> token (a pure function of the names: kept)

    def token(self, server: str) -> bytes:
        token = self._tokens.get(server)
        if token is None:
            if len(self._tokens) > 4096:
                self._tokens.clear()
            token = self._tokens[server] = token_of(self.backend, server)
        return token

    def server_of(self, sid: bytes, names: list[str]) -> str | None:
        """The name among ``names`` whose token ``sid`` starts with, or None."""
        token, separator, rest = sid.partition(SEPARATOR)
        if not separator or not rest or len(token) != 8:
            return None
        for name in names:
            if self.token(name) == token:
                return name
        return None

    def strip(self, target: bytes) -> bytes:
        """``target`` with the token taken off each ``sid=`` value that carries one."""
        return _SID_VALUE.sub(rb"\1", target) if b"~" in target else target

    def prefix_open(self, body: bytes, server: str) -> bytes | None:
        """A polling handshake body whose open packet's sid is prefixed with ``server``'s token (v3 frames
        adjusted to the packet's new length); None if the body does not start with an open packet that can be
        rewritten so."""
        packet = polling_open_packet(body)
        if packet is None:
            return None
        start = body.find(b"0{")
        end = _json_end(body, start + 1)
        sid = packet.sid.encode()
        found = re.compile(rb'"sid"\s*:\s*"' + re.escape(sid) + rb'"').search(body, start, end)
        if found is None:  # written with escapes: not rewritten
            return None
        added = self.token(server) + SEPARATOR
        at = found.end() - len(sid) - 1
        rewritten = body[start:at] + added + body[at:end]
        frame = _reframe(body[:start], end - start, len(added))
        return None if frame is None else frame + rewritten + body[end:]


def _json_end(body: bytes, start: int) -> int:
    """Where the JSON object opening at ``start`` ends (its closing brace included); the open packet read has
    shown it is one, with no braces in its strings (an Engine.IO open packet has none)."""
    depth = 0
    for index in range(start, len(body)):
        if body[index] == 0x7B:
            depth += 1
        elif body[index] == 0x7D:
            depth -= 1
            if depth == 0:
                return index + 1
    return len(body)


def _reframe(frame: bytes, size: int, added: int) -> bytes | None:
    """The framing before the open packet (``size`` bytes long, ``added`` more once rewritten): none (v4), v3's
    text ``<length>:``, or its binary ``\\x00<digits>\\xff``; None if it is something else or does not say
    ``size``."""
    if not frame:
        return frame
    text = _V3_TEXT.fullmatch(frame)
    if text is not None:
        return b"%d:" % (size + added) if int(text.group(1)) == size else None
    digits = frame[1:-1]
    if frame[:1] == b"\x00" and frame[-1:] == b"\xff" and digits and all(d < 10 for d in digits):
        if int("".join(str(d) for d in digits)) != size:
            return None
        return b"\x00" + bytes(int(d) for d in str(size + added)) + b"\xff"
    return None
