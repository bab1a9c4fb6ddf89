"""Strict, incremental HTTP/1.1 request parsing on top of llhttp (``httptools``).

llhttp already refuses the classic smuggling shapes (Content-Length with
Transfer-Encoding, duplicate or malformed Content-Length, obs-fold, bare CR or LF);
this module adds the limits (414, 431, 413), the version and Host rules, the
refusal of any transfer coding but ``chunked``, and of a ``Connection`` header that
names the request's framing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import httptools

from ..config import Limits
from ._chunks import DATA, chunk_callbacks, counted_trailer, new_mark
from ._errors import HTTPError, quoted
from ._headers import CONNECTION_OPTIONS, FRAMING_OPTIONS, HOP_BY_HOP, NONE, Headers, connection_tokens, drop_listed
from ._target import Target, valid_host
from ._version import SERVED_VERSIONS, LaterVersion

#: Outside a body, llhttp is fed this much at a time: a head is measured from within this many bytes of
#: where it starts, and a hold (:attr:`RequestParser.held`) stops parsing within a few pipelined requests.
_HEAD_SLICE = 512
#: A chunked body is fed this much at a time (each slice is one write to the origin).
_CHUNKED_SLICE = 16384
#: Headers the parser itself must read.
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"))


@lru_cache(maxsize=64)  # a frozenset's hash is cached: the look-up is cheap, a new union of ~40 names is not
def _dropped(drop: frozenset[bytes]) -> frozenset[bytes]:
    """``drop`` and the hop-by-hop headers: one set per drop list, not one per connection."""
    return HOP_BY_HOP | drop


def _llhttp(parser: RequestParser) -> httptools.HttpRequestParser:
    """An llhttp request parser calling back ``parser``, taking any ``digit.digit`` version: ``SERVED_VERSIONS`` says
    which are served (llhttp alone refuses HTTP/1.2 with a 400)."""
    llhttp = httptools.HttpRequestParser(parser)
    llhttp.set_dangerous_leniencies(lenient_version=True)
    return llhttp


class RequestHead:
    """A parsed request line and headers.

    ``headers`` is everything the client sent; ``forward`` the end-to-end subset that
    may cross the proxy (hop-by-hop and the parser's drop set removed).
    """

    __slots__ = (
        "method", "target", "version", "headers", "forward", "host", "content_length",
        "chunked", "expect_continue", "upgrade", "connection", "has_body", "resolved", "size",
    )

    def __init__(self, method: bytes, target: bytes, version: bytes, headers: Headers) -> None:
        self.method = method
        self.target = target
        self.version = version  # b"1.1" (a LaterVersion for a later 1.x) or b"1.0"; b"2.0" for an HTTP/2 stream's
        self.headers = headers
        self.forward: Headers = []
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade = False
        self.connection: frozenset[bytes] = NONE
        self.has_body = False
        self.resolved: Target | None = None  # where a reverse proxy sends it, once worked out
        self.size = 0  # its length as parsed: the request line and "Name: value" lines with CRLFs, the blank line

    @property
    def wants_close(self) -> bool:
        """Whether the client asked for the connection to end after this exchange."""
        if self.version == b"1.1":
            return b"close" in self.connection
        return b"keep-alive" not in self.connection


class RequestHandler(Protocol):
    """What a :class:`RequestParser` reports to."""

    def request_head(self, head: RequestHead) -> None: ...

    def request_body(self, data: bytes) -> None: ...

    def request_end(self) -> None: ...

    def request_upgraded(self, rest: bytes) -> None:
        """The request asked for another protocol; ``rest`` is what followed it in this read."""


class _Closed:
    """The handler of a closed parser: its owner feeds it nothing any more, so any call is a bug."""

    def request_head(self, head: RequestHead) -> None:
        _unexpected()

    def request_body(self, data: bytes) -> None:
        _unexpected()

    def request_end(self) -> None:
        _unexpected()

    def request_upgraded(self, rest: bytes) -> None:
        _unexpected()


def _unexpected() -> None:
    raise RuntimeError("a request came to a closed parser")


_CLOSED: RequestHandler = _Closed()


class _Skipped(_Closed):
    """The handler while llhttp reports the end of an upgrade request whose body it skipped (see
    :meth:`RequestParser._skip`): that end is not the request's."""

    def request_end(self) -> None:
        pass


_SKIPPED: RequestHandler = _Skipped()
_NO_LIMITS = Limits()  # the model's defaults


class RequestParser:
    """Feed bytes in; get head, body and end events out; get :class:`HTTPError` on bad input."""

    def __init__(self, handler: RequestHandler, limits: Limits = _NO_LIMITS, drop: frozenset[bytes] = frozenset()) -> None:
        self._handler = handler
        self._max_request_line = limits.max_request_line  # read per request: kept here, not behind ``limits``
        self._max_header_size = limits.max_header_size
        self._max_headers = limits.max_headers
        self._max_body_size = limits.max_body_size
        self._drop = _dropped(drop)
        self._mark = new_mark()  # where llhttp is in a chunked body (see _chunks)
        self._trailer_bytes = 0  # the trailer section's, counted while the mark says so
        self.on_chunk_header, self.on_chunk_complete = chunk_callbacks(self._mark)
        self._parser = _llhttp(self)
        #: Set by the handler to stop parsing between two slices: :meth:`feed` returns what it left.
        self.held = False
        # An upgrade request whose body llhttp skipped, to parse again, and the handler to report it to.
        self._skipped: tuple[RequestHead, RequestHandler] | None = None
        self._reset()

    def set_drop(self, drop: frozenset[bytes]) -> None:
        """Drop these headers (besides hop-by-hop ones) from the requests parsed from now on."""
        self._drop = _dropped(drop)

    @property
    def dropped(self) -> frozenset[bytes]:
        """The headers it drops: hop-by-hop ones and its drop list."""
        return self._drop

    def _reset(self) -> None:
        self._in_head = False
        self._in_body = False
        self._head_bytes = 0
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._body_left = -1  # a Content-Length body's bytes still to come; -1 for a chunked one
        self._url_complete = False

    def close(self) -> None:
        """Let go of llhttp, whose callbacks are this parser's methods: the cycle would wait for the GC."""
        self._parser = None  # type: ignore[assignment]
        self._handler = _CLOSED

    @property
    def in_message(self) -> bool:
        """True between the first byte of a request and its end."""
        return self._in_head or self._in_body

    def feed(self, data: bytes) -> bytes:  # noqa: C901, PLR0912 - one loop per read on the request path: no helper calls
        """Parse ``data``; raises :class:`HTTPError` for a request to refuse.

        Returns the bytes left unparsed because :attr:`held` was set (``b""`` when all were parsed).
        """
        start, end = 0, len(data)
        view: memoryview | None = None
        while start < end:
            if self.held:
                return data[start:]
            in_head = self._in_head
            if not self._in_body or in_head:
                size = _HEAD_SLICE
            elif self._body_left >= 0:
                size = self._body_left or _HEAD_SLICE  # exactly the rest of the body: the next request starts a slice
            else:
                size = _CHUNKED_SLICE
            if start == 0 and size >= end:
                piece: bytes | memoryview = data  # the usual read: one pass
            else:
                if view is None:
                    view = memoryview(data)
                piece = view[start:start + size]
            start += size
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                rest = bytes(piece[upgrade.args[0]:]) + data[start:]
                skipped = self._skipped
                if skipped is None:
                    # llhttp stops after an Upgrade or CONNECT head: the handler says what follows.
                    self._handler.request_upgraded(rest)
                    return b""
                data = self._unskipped(skipped) + rest  # parsed again, without its Upgrade, then its body
                start, end, view = 0, len(data), None
                continue
            except httptools.HttpParserCallbackError as e:
                if e.__context__ is not None:
                    raise e.__context__ from None  # an HTTPError, or a bug that must not pass as bad input
                raise HTTPError(400, f"invalid request: {e}") from None
            except httptools.HttpParserInvalidMethodError as e:
                if str(e).startswith("Expected space"):  # a method then a tab, say: a malformed line, not a method
                    raise HTTPError(400, f"invalid request line: {e}") from None
                raise HTTPError(501, f"unknown method: {e}") from None
            except httptools.HttpParserError as e:
                raise HTTPError(400, f"invalid request: {e}") from None
            if self._in_head and (in_head or size == _HEAD_SLICE):
                # Bound what llhttp accumulates for this head; the slice it began in may hold a little of what
                # came before it, hence one slice of slack.
                self._head_bytes += len(piece)
                if self._head_bytes > self._max_request_line + self._max_header_size + _HEAD_SLICE:
                    if not self._headers and not self._url_complete:
                        raise HTTPError(414, "request line too long")
                    raise HTTPError(431, "request head too large")
            elif size == _CHUNKED_SLICE and DATA not in self._mark:  # in a trailer section, or past a chunk's line
                self._trailer_bytes = counted = counted_trailer(self._mark, self._trailer_bytes, len(piece))
                if counted > self._max_header_size:  # llhttp keeps a field until its end: an endless line would grow
                    raise HTTPError(431, f"trailer section larger than {self._max_header_size} bytes")
        return b""

    # llhttp callbacks (called from inside feed_data)

    def on_message_begin(self) -> None:
        self._in_head = True  # from a request's first byte, so a lone "G" already counts
        self._head_bytes = 0  # each request's head is measured on its own

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_request_line:
            raise HTTPError(414, f"request target longer than {self._max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._url_complete = True
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_size:
            raise HTTPError(431, f"headers larger than {self._max_header_size} bytes")
        if self._in_body:
            return  # a chunked trailer: dropped, as the body is re-framed
        if len(self._headers) >= self._max_headers:
            raise HTTPError(431, f"more than {self._max_headers} headers")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:  # noqa: C901, PLR0912, PLR0915 - one pass over a request's headers, no helper calls
        parser = self._parser
        version = SERVED_VERSIONS.get(parser.get_http_version())
        if version is None:
            raise HTTPError(505, f"HTTP/{parser.get_http_version()} is not supported")
        head = RequestHead(parser.get_method(), self._url, version, self._headers)
        head.size = len(head.method) + len(self._url) + 14 + self._header_bytes  # "M T HTTP/1.1\r\n...\r\n"
        hosts = 0
        drop = self._drop
        forward = head.forward
        for pair in self._headers:
            name, value = pair
            lower = name.lower()
            if lower not in drop and lower[:6] != b"proxy-":
                forward.append(pair)
            if lower not in _FRAMING:
                continue
            if lower == b"host":
                hosts += 1
                head.host = host = value.strip(b" \t")
                if host != value:  # what the origin reads is what was routed on, without the whitespace around it
                    forward[-1] = (name, host)
            elif lower == b"content-length":
                head.content_length = int(value)
            elif lower == b"transfer-encoding":
                if version == b"1.0":  # RFC 9112 6.1: its framing is faulty, whatever it says
                    raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
                if value.strip().lower() != b"chunked":
                    raise HTTPError(501, f"unsupported transfer coding {quoted(value)}")
                head.chunked = True
            elif lower == b"connection":
                head.connection = head.connection | connection_tokens(value)
            elif lower == b"expect":
                if value.strip().lower() != b"100-continue":
                    raise HTTPError(417, f"unsupported expectation {quoted(value)}")
                head.expect_continue = True
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            raise HTTPError(400, "a request must carry exactly one Host header")
        if head.host and not valid_host(head.host):
            raise HTTPError(400, f"invalid Host {quoted(head.host)}")
        if self._max_body_size and (head.content_length or 0) > self._max_body_size:
            raise HTTPError(413, f"Content-Length {head.content_length} over the {self._max_body_size} limit")
        if head.connection and not head.connection <= CONNECTION_OPTIONS:
            if head.connection & FRAMING_OPTIONS:
                # Removing its framing would let the body reach the origin as a request of its own.
                listed = b", ".join(sorted(head.connection & FRAMING_OPTIONS)).decode("latin-1")
                raise HTTPError(400, f"Connection names {listed}, which frames the request")
            head.forward = drop_listed(forward, head.connection)
        head.has_body = head.chunked or bool(head.content_length)
        head.upgrade = parser.should_upgrade()
        if head.upgrade and head.has_body and head.method != b"CONNECT":
            self._skip(head)
            return
        self._in_head = False
        self._in_body = True
        self._body_left = -1 if head.chunked else head.content_length or 0
        self._handler.request_head(head)

    def _skip(self, head: RequestHead) -> None:
        """An upgrade request with a body (``curl --http2 -d``: ``Upgrade: h2c`` on a POST) is never switched: it is
        relayed as a plain request (as HAProxy relays it; Upgrade is the proxy's to take or leave, RFC 9110 7.8).
        llhttp, as httptools drives it, skips its body and reports its end at once: that end is muted, and
        :meth:`feed` parses the request again without its Upgrade, then its body."""
        for name, value in head.headers:
            if name.lower() == b"upgrade" and value.strip().lower() == b"websocket":
                raise HTTPError(400, "a WebSocket upgrade cannot carry a body")
        self._skipped = (head, self._handler)
        self._handler = _SKIPPED

    def _unskipped(self, skipped: tuple[RequestHead, RequestHandler]) -> bytes:
        """A new llhttp for the request llhttp skipped the body of; the request's head without its Upgrade."""
        head, self._handler = skipped
        self._skipped = None
        self._parser = _llhttp(self)
        version = head.version.sent.encode() if isinstance(head.version, LaterVersion) else head.version
        lines = [b"%s %s HTTP/%s\r\n" % (head.method, head.target, version)]
        lines.extend(b"%s: %s\r\n" % pair for pair in head.headers if pair[0].lower() != b"upgrade")
        lines.append(b"\r\n")
        return b"".join(lines)

    def on_body(self, data: bytes) -> None:
        self._mark.add(DATA)
        self._body_bytes += len(data)
        if self._body_left > 0:
            self._body_left -= len(data)
        if self._max_body_size and self._body_bytes > self._max_body_size:
            raise HTTPError(413, f"body over the {self._max_body_size} byte limit")
        self._handler.request_body(data)

    def on_message_complete(self) -> None:
        self._reset()
        self._handler.request_end()
