"""Engine.IO (Socket.IO) stickiness without cookies.

A Socket.IO cluster needs every request of one Engine.IO session (``sid``) on the
server that created it. The proxy learns the ``sid`` from the handshake response
(the open packet of a polling response, protocol v3 or v4, or an ``io`` cookie)
and sends every later request carrying ``sid=`` to that server. When that server is gone
(down, drained, removed, or refusing connections), no other server knows the sid: the request
is answered at once as an Engine.IO server answers an unknown sid (:data:`UNKNOWN_SESSION`),
so the client reconnects, and the sid is forgotten.
"""

from __future__ import annotations

import json
import re

from ..http import Headers, RequestHead
from ._sticky import MemoryStickStore, learned_key

_EIO = re.compile(rb"[?&]EIO=\d")
_SID = re.compile(rb"[?&]sid=([^&#]+)")
#: The open packet is small; a response that has not shown one within this many bytes has none.
PEEK_LIMIT = 1024
_IO_COOKIE = learned_key("set-cookie(io)")
_DECODER = json.JSONDecoder()
#: What an Engine.IO server answers (with a 400) to a request whose sid it does not know.
UNKNOWN_SESSION = b'{"code":1,"message":"Session ID unknown"}'
#: The server name a forgotten sid's entry holds: no server is named so.
GONE = ""


def is_engineio(request: RequestHead) -> bool:
    """Whether ``request`` is an Engine.IO request (its query carries ``EIO=``)."""
    return b"EIO=" in request.target and _EIO.search(request.target) is not None


def session_id(request: RequestHead) -> bytes | None:
    """The ``sid`` an Engine.IO request carries, or None (a handshake)."""
    found = _SID.search(request.target)
    return found.group(1) if found else None


def open_packet_sid(body: bytes) -> bytes | None:
    """The ``sid`` of the open packet at the start of a polling response body, if it is one.

    v4 sends ``0{"sid":...}``; v3 frames packets as ``<length>:0{...}`` (text) or with a
    binary length prefix; in each case the open packet is a ``0`` followed by JSON.
    """
    start = body.find(b"0{")
    if start < 0 or start > 16:
        return None
    try:
        packet, _ = _DECODER.raw_decode(body[start + 1 :].decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(packet, dict) or not isinstance(packet.get("sid"), str) or "pingInterval" not in packet:
        return None
    return packet["sid"].encode()


class EngineIOStickiness:
    """sid -> server name, learned from handshake responses, consulted for every request carrying ``sid=``."""

    def __init__(self, store: MemoryStickStore) -> None:
        self.store = store
        self.learned = 0

    def server_for(self, request: RequestHead) -> str | None:
        sid = session_id(request)
        return self.store.get(sid) if sid is not None else None

    def forget(self, request: RequestHead) -> None:
        """The server of ``request``'s sid is gone: the sid is known nowhere now. Its entry names no server
        (:data:`GONE`) until it expires, so the session's other requests in flight are answered the same way,
        never balanced to a server that does not know them."""
        sid = session_id(request)
        if sid is not None:
            self.store.put(sid, GONE)

    def learn_cookie(self, headers: Headers, server: str) -> None:
        """An ``io`` cookie set by the handshake response names the sid."""
        sid = _IO_COOKIE(headers)
        if sid is not None:
            self.remember(sid, server)

    def learn_response(self, request: RequestHead, headers: Headers, server: str) -> bool:
        """A 200 to ``request``: if it opened a session (an Engine.IO request without a sid), learn the sid
        from the response's ``io`` cookie; True then, as its body's open packet names the sid too
        (see :meth:`learn_body`)."""
        if not is_engineio(request) or session_id(request) is not None:
            return False
        self.learn_cookie(headers, server)
        return True

    def learn_body(self, peek: bytes, server: str) -> bytes | None:
        """The body of a session-opening response so far: remember the sid once its open packet names it.
        Returns what to keep looking at with the next bytes, or None when done (found, or past
        :data:`PEEK_LIMIT`)."""
        sid = open_packet_sid(peek)
        if sid is not None:
            self.remember(sid, server)
            return None
        return peek if len(peek) < PEEK_LIMIT else None

    def remember(self, sid: bytes, server: str) -> None:
        self.store.put(sid, server)
        self.learned += 1
