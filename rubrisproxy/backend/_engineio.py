"""Engine.IO (Socket.IO) stickiness without cookies.

A Socket.IO cluster needs every request of one Engine.IO session (``sid``) on the
server that created it. The proxy learns the ``sid`` from the handshake response
(the open packet of a polling response, protocol v3 or v4, or an ``io`` cookie)
and sends every later request carrying ``sid=`` to that server. When that server is gone
(down, drained, removed, or refusing connections), no other server knows the sid: the request
is answered at once as an Engine.IO server answers an unknown sid (:data:`UNKNOWN_SESSION`),
so the client reconnects, and the sid is forgotten.

While a session polls, the proxy also keeps what a WebSocket session upgraded from it needs to move to another
server (:class:`PolledSession`): the open packet's heartbeat, the client's namespace CONNECTs (auth included)
and the server's answers, read from a bounded peek at each polling body (:class:`PollPeek`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..engineio import (
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    MAX_CONNECT,
    MAX_NAMESPACES,
    OpenPacket,
    SocketIOPacket,
    polling_open_packet,
    polling_packets,
    sid_of,
    socketio_packet,
)
from ..http import Headers, RequestHead
from ._shared import SharedStickStore
from ._sidprefix import SidPrefix
from ._sticky import ExpiringStore, IStickStore, learned_key

_EIO = re.compile(rb"[?&]EIO=\d")
#: The open packet is small; a response that has not shown one within this many bytes has none.
PEEK_LIMIT = 1024
_IO_COOKIE = learned_key("set-cookie(io)")
#: How much of one polling body is read; a session whose polling bodies outgrow it keeps no polling record.
POLL_PEEK_LIMIT = 64 << 10
#: What one session's polling record keeps at most, its CONNECTs and the server's answers together: with at most
#: POLLED_SESSIONS records, the bytes all records hold stay bounded (10,000 x 8 KiB). A session that joins with
#: more (a very large auth) keeps no record and gets the generic resume.
POLLED_RECORD_BYTES = 8 << 10
#: What an Engine.IO server answers (with a 400) to a request whose sid it does not know.
UNKNOWN_SESSION = b'{"code":1,"message":"Session ID unknown"}'
#: The server name a forgotten sid's entry holds: no server is named so.
GONE = ""


def is_engineio(request: RequestHead) -> bool:
    """Whether ``request`` is an Engine.IO request (its query carries ``EIO=``)."""
    # find, not ``in``: bytes' ``in`` first tries its operand as an int, raising and clearing a TypeError each time.
    return request.target.find(b"EIO=") >= 0 and _EIO.search(request.target) is not None


def session_id(request: RequestHead) -> bytes | None:
    """The ``sid`` an Engine.IO request carries, or None (a handshake)."""
    return sid_of(request.target)


def open_packet_sid(body: bytes) -> bytes | None:
    """The ``sid`` of the open packet at the start of a polling response body, if it is one."""
    packet = polling_open_packet(body)
    return packet.sid.encode() if packet is not None else None


class PolledSession:
    """What one Engine.IO session did over long polling, for the WebSocket session it may upgrade to: its open
    packet, the namespaces its client joined (each CONNECT as sent, auth included, in order) and the server's
    answers. ``complete`` is False once anything could not be read or kept: then it is not to be trusted."""

    __slots__ = ("version", "open", "connects", "answers", "complete", "_size")

    def __init__(self, version: int, open: OpenPacket) -> None:
        self.version = version
        self.open = open
        self.connects: dict[bytes, bytes] = {}
        self.answers: dict[bytes, bytes] = {}
        self.complete = True
        self._size = 0

    def client_sent(self, body: bytes) -> None:
        """A polling POST's body: the client's CONNECTs and DISCONNECTs."""
        for packet, head in self._packets(body):
            if head.kind == CONNECT:
                self._size += len(packet)
                if len(self.connects) >= MAX_NAMESPACES or len(packet) > MAX_CONNECT or self._size > POLLED_RECORD_BYTES:
                    self.overflowed()
                    return
                self.connects[head.namespace] = packet
            elif head.kind == DISCONNECT:
                self.connects.pop(head.namespace, None)

    def server_sent(self, body: bytes) -> None:
        """A polling GET's response body: the server's CONNECT answers, refusals and DISCONNECTs."""
        for packet, head in self._packets(body):
            if head.kind == CONNECT:
                self._size += len(packet)
                if self._size > POLLED_RECORD_BYTES or (head.namespace not in self.answers
                                                        and len(self.answers) >= MAX_NAMESPACES):
                    self.overflowed()
                    return
                self.answers[head.namespace] = packet
            elif head.kind == DISCONNECT or head.kind == CONNECT_ERROR:
                self.connects.pop(head.namespace, None)

    def _packets(self, body: bytes) -> list[tuple[bytes, SocketIOPacket]]:
        if not self.complete:
            return []
        packets = polling_packets(body, self.version)
        if packets is None:
            self.overflowed()
            return []
        return [(packet, head) for packet in packets if (head := socketio_packet(packet)) is not None]

    def overflowed(self) -> None:
        """Something was not read or not kept: nothing of it is trusted."""
        self.complete = False
        self.connects.clear()
        self.answers.clear()


class PollPeek:
    """A bounded look at one polling request's body (a POST: the client's packets) or its response's (a GET: the
    server's), handed to its :class:`PolledSession` at the end. The body itself streams on as it comes."""

    __slots__ = ("session", "post", "_seen")

    def __init__(self, session: PolledSession, post: bool) -> None:
        self.session = session
        self.post = post
        self._seen: bytes | None = b""

    def feed(self, data: bytes) -> None:
        seen = self._seen
        if seen is None:
            return
        seen += data
        if len(seen) > POLL_PEEK_LIMIT:
            self.session.overflowed()
            self._seen = None
        else:
            self._seen = seen

    def end(self) -> None:
        seen, self._seen = self._seen, None
        if seen:
            if self.post:
                self.session.client_sent(seen)
            else:
                self.session.server_sent(seen)


class OpenPeek:
    """A look at a session-opening response's body until its open packet is read (its sid learned). With a sid
    prefix the body is held from the client meanwhile (at most :data:`PEEK_LIMIT`) and sent with the sid
    prefixed; ``holds`` says so (its length changes: the exchange frames it anew)."""

    __slots__ = ("_stickiness", "_server", "_version", "_seen", "holds")

    def __init__(self, stickiness: EngineIOStickiness, server: str, version: int | None) -> None:
        self._stickiness = stickiness
        self._server = server
        self._version = version
        self._seen: bytes | None = b""
        self.holds = stickiness.prefix is not None

    @property
    def done(self) -> bool:
        return self._seen is None

    def feed(self, data: bytes) -> bytes:
        """The body's next bytes: what to send the client now (nothing while held)."""
        seen = self._seen
        if seen is None:
            return data
        if not self.holds:
            self._seen = self._stickiness.learn_body(seen + data, self._server, self._version)
            return data
        held, body = self._stickiness.open_body(seen + data, self._server, self._version)
        self._seen = body if held else None
        return b"" if held else body

    def end(self) -> bytes:
        """The body ended: what is still held, to send as it came."""
        seen, self._seen = self._seen, None
        return seen if self.holds and seen else b""


class EngineIOStickiness:
    """sid -> server name, learned from handshake responses, consulted for every request carrying ``sid=``."""

    def __init__(self, store: IStickStore, polled: ExpiringStore[PolledSession], prefix: SidPrefix | None = None,
                 names: Callable[[], list[str]] | None = None) -> None:
        self.store = store
        self.polled = polled  # what each polling session did, until a WebSocket session takes it
        self.prefix = prefix  # with ``engineio-sid-prefix``: the sids clients see carry their server's token
        self._names = names or list  # the backend's server names, for a token's server
        self.learned = 0

    def server_for(self, request: RequestHead) -> str | None:
        sid = session_id(request)
        if sid is None:
            return None
        found = self.store.get(sid)
        if found is None and self.prefix is not None:
            return self.prefix.server_of(sid, self._names())  # learned elsewhere: the token says where
        return found

    @property
    def shared(self) -> bool:
        """Whether its sids are shared with other proxies (a cluster)."""
        return isinstance(self.store, SharedStickStore)

    def look_up(self, request: RequestHead, done: Callable[[], None]) -> bool:
        """A sid this proxy does not know: ask the others (in a cluster), in case its handshake was answered
        elsewhere an instant ago; ``done()`` once answered. False if not asked."""
        sid = session_id(request)
        store = self.store
        return sid is not None and isinstance(store, SharedStickStore) and store.lookup(sid, done)

    def forget(self, request: RequestHead) -> None:
        """The server of ``request``'s sid is gone: the sid is known nowhere now. Its entry names no server
        (:data:`GONE`) until it expires, so the session's other requests in flight are answered the same way,
        never balanced to a server that does not know them."""
        sid = session_id(request)
        if sid is not None:
            self.store.put(sid, GONE)
            self.polled.pop(sid)

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

    def learn_body(self, peek: bytes, server: str, version: int | None) -> bytes | None:
        """The body of a session-opening response so far: remember the sid once its open packet names it (and
        the open packet, for its session's polling record). Returns what to keep looking at with the next bytes,
        or None when done (found, or past :data:`PEEK_LIMIT`)."""
        packet = polling_open_packet(peek)
        if packet is not None:
            sid = packet.sid.encode()
            self.remember(sid, server)
            if version in (3, 4):
                self.polled.put(sid, PolledSession(version, packet))
            return None
        return peek if len(peek) < PEEK_LIMIT else None

    def open_body(self, peek: bytes, server: str, version: int | None) -> tuple[bool, bytes]:
        """With a sid prefix: a session-opening response's body so far, held from the client. Returns (True, what
        to keep holding) until the open packet is read, then (False, the body with its sid prefixed), which is
        what the session's sid is remembered as; (False, the body as it came) once it cannot be (past
        :data:`PEEK_LIMIT`, or not an open packet that can be rewritten)."""
        assert self.prefix is not None
        packet = polling_open_packet(peek)
        if packet is None:
            return len(peek) < PEEK_LIMIT, peek
        rewritten = self.prefix.prefix_open(peek, server)
        if rewritten is None:
            self.learn_body(peek, server, version)  # kept, unprefixed: this proxy routes it by what it learned
            return False, peek
        self.learn_body(rewritten, server, version)
        return False, rewritten

    def session_request(self, request: RequestHead, target: bytes) -> tuple[PollPeek | None, bytes]:
        """A request carrying a sid: a peek at its polling body (if its session has a polling record; none for an
        upgrade), and ``target`` as the server knows it (without the sid's token, with a sid prefix)."""
        peek = None if request.upgrade else self.poll_peek(request)
        return peek, self.prefix.strip(target) if self.prefix is not None else target

    def poll_peek(self, request: RequestHead) -> PollPeek | None:
        """A peek at a polling request of a session with a polling record (a POST's body, a GET's response)."""
        if request.method != b"POST" and request.method != b"GET":
            return None
        sid = session_id(request)
        session = self.polled.get(sid) if sid is not None else None
        return PollPeek(session, request.method == b"POST") if session is not None else None

    def take_polled(self, sid: bytes) -> PolledSession | None:
        """The polling record of ``sid``, which a WebSocket session takes over: no longer kept here."""
        return self.polled.pop(sid)

    def remember(self, sid: bytes, server: str) -> None:
        self.store.put(sid, server)
        self.learned += 1
