"""Incremental parsing of an origin's response to one request."""

from __future__ import annotations

from typing import Protocol

import httptools

from ._chunks import DATA, DroppedFields, chunk_callbacks, counted_trailer, new_mark
from ._errors import HTTPError, quoted
from ._headers import CONNECTION_OPTIONS, HOP_BY_HOP, NONE, Headers, connection_tokens, drop_listed

#: The versions an origin's status line may carry, as the proxy reads them: a later HTTP/1.x as 1.1 (RFC 9112 2.3),
#: 0.9 and 2.0 as 1.1 as ever; any other (llhttp takes any digit.digit: see :func:`_llhttp`) is a bad response.
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "0.9": b"1.1", "2.0": b"1.1"} | {f"1.{minor}": b"1.1" for minor in range(2, 10)}
#: Bound on an origin's response head; a larger one is a bad response (502).
MAX_RESPONSE_HEAD = 65536


#: Headers the parser itself reads, or that never cross the proxy.
_SPECIAL = HOP_BY_HOP | frozenset((b"content-length",))

#: What a response header is to the parser, by name.
_FORWARD, _DROP, _LENGTH, _CODING, _CONNECTION = range(5)


_READ = {b"content-length": _LENGTH, b"transfer-encoding": _CODING, b"connection": _CONNECTION}


def _kind(name: bytes) -> int:
    lower = name.lower()
    if lower not in _SPECIAL:
        return _DROP if lower[:6] == b"proxy-" else _FORWARD
    return _READ.get(lower, _DROP)  # the other hop-by-hop headers never cross


#: The kinds of the names origins commonly send, as they spell them: looked up instead of worked out per header.
_KINDS = {
    spelling: _kind(spelling)
    for name in (
        b"Server", b"Date", b"Content-Type", b"Content-Length", b"Connection", b"Keep-Alive", b"Transfer-Encoding",
        b"Last-Modified", b"ETag", b"Accept-Ranges", b"Cache-Control", b"Expires", b"Vary", b"Set-Cookie",
        b"Location", b"Content-Encoding", b"X-Powered-By", b"Access-Control-Allow-Origin",
    )
    for spelling in (name, name.lower())
}


class ResponseHead:
    """A parsed status line and headers; ``forward`` holds the end-to-end ones."""

    __slots__ = ("status", "reason", "version", "headers", "forward", "content_length", "chunked", "connection")

    def __init__(self, status: int, reason: bytes, version: bytes, headers: Headers) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.forward: Headers = []
        self.content_length: int | None = None
        self.chunked = False
        self.connection: frozenset[bytes] = NONE


#: The 1xx statuses llhttp reads no body after, whatever their headers say; after any other, a Content-Length or
#: Transfer-Encoding (which RFC 9110 8.6 and RFC 9112 6.1 forbid in a 1xx) would frame a body.
_BODILESS_INTERIM = frozenset((100, 102, 103))


def _interim_head(status: int, reason: bytes, version: bytes, headers: Headers) -> ResponseHead:
    """A 1xx response (but a 101) as it is relayed: its end-to-end headers in ``forward``, the hop-by-hop ones
    and those its Connection header lists dropped as from a final response, and its framing headers too."""
    head = ResponseHead(status, reason, version, headers)
    forward = head.forward
    connection = NONE
    for pair in headers:
        kind = _KINDS.get(pair[0])
        if kind is None:
            kind = _kind(pair[0])
        if kind == _FORWARD:
            forward.append(pair)
        elif kind == _LENGTH or kind == _CODING:
            if status not in _BODILESS_INTERIM:
                raise HTTPError(502, f"origin framed a body after interim status {status}")
        elif kind == _CONNECTION:
            connection = connection | connection_tokens(pair[1])
    if not connection <= CONNECTION_OPTIONS:
        head.forward = drop_listed(forward, connection)
    return head


class ResponseHandler(Protocol):
    """What a :class:`ResponseParser` reports to."""

    def response_interim(self, head: ResponseHead) -> None:
        """A 1xx response but a 101 (any number of them may come before the response); ``forward`` holds its
        end-to-end headers."""

    def response_head(self, head: ResponseHead, has_body: bool) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_end(self) -> None: ...

    def response_upgraded(self, head: ResponseHead, rest: bytes) -> None:
        """A 101 answered an upgrade request; ``rest`` is what followed it in this read."""


class _NoHandler:
    """The handler of a parser expecting no response (before its first :meth:`~ResponseParser.start`, after
    :meth:`~ResponseParser.close`); its owner feeds it nothing then, so any call is a bug."""

    def response_interim(self, head: ResponseHead) -> None:
        _unexpected()

    def response_head(self, head: ResponseHead, has_body: bool) -> None:
        _unexpected()

    def response_body(self, data: bytes) -> None:
        _unexpected()

    def response_end(self) -> None:
        _unexpected()

    def response_upgraded(self, head: ResponseHead, rest: bytes) -> None:
        _unexpected()


def _unexpected() -> None:
    raise RuntimeError("a response came to a parser expecting none")


_NO_HANDLER: ResponseHandler = _NoHandler()


class _Overrun(Exception):
    """Raised from an llhttp callback to stop it at bytes past the complete response."""


def _llhttp(parser: ResponseParser) -> httptools.HttpResponseParser:
    """An llhttp response parser calling back ``parser``. It takes any ``digit.digit`` version (``_VERSIONS`` says
    which are served), and a Content-Length trailer field with a chunked body: trailers are dropped and never frame
    anything, and a head naming both is refused in :meth:`ResponseParser.on_headers_complete` instead."""
    llhttp = httptools.HttpResponseParser(parser)
    llhttp.set_dangerous_leniencies(lenient_version=True, lenient_chunked_length=True)
    return llhttp


class ResponseParser:
    """Parses the responses of one origin connection, one request at a time.

    :meth:`start` readies it for the response to the next request; the llhttp parser
    is kept across responses unless the last one left it mid-message (HEAD) or stopped.
    ``ended_by_close`` says whether the body's end is the connection's end;
    :meth:`connection_closed` completes such a response.

    The proxy never pipelines to an origin, so any byte after a complete response
    (a second response, a body sent with a HEAD, 204 or 304 answer) was never asked
    for: it is never reported, and sets ``overrun`` (the connection is not reusable).
    The end of a response is reported only once llhttp is done with the read that held
    it, so that nothing the handler does then (reusing the connection) meets those bytes.

    A chunked body is complete at its last chunk: the trailer section after it is dropped (the body is re-framed), so
    one llhttp refuses (or one past :data:`MAX_RESPONSE_HEAD`) ends the response there, reported complete but not
    reusable, ``overrun`` set and ``trailer_error`` saying why; an error in the chunks themselves leaves the body
    unknown: a 502 (:class:`HTTPError`) as ever.
    """

    def __init__(self) -> None:
        self._handler = _NO_HANDLER
        self._head_request = False
        self._upgrade = False
        self._llhttp_stopped = False  # llhttp raised: it takes no more bytes
        self._end_due = False  # complete, its end not yet reported
        self.overrun = False  # bytes came after a complete response, or a trailer section was refused
        self.trailer_error = ""  # why the last trailer section it refused was refused
        self._trailers = DroppedFields()  # what takes the fields after each response's head
        self._mark = new_mark()  # where llhttp is in a chunked body (see _chunks)
        self._trailer_bytes = 0  # the trailer section's, counted while the mark says so
        self.on_chunk_header, self.on_chunk_complete = chunk_callbacks(self._mark)
        self._parser = _llhttp(self)
        self._reset()

    def _reset(self) -> None:
        self._headers: Headers = []
        self._reason = b""
        self._head_bytes = 0
        self.head: ResponseHead | None = None
        self.switched: ResponseHead | None = None  # a 101 to an upgrade request
        self.complete = False
        self.reusable = False
        self.ended_by_close = False

    def close(self) -> None:
        """Let go of llhttp, whose callbacks are this parser's methods: the cycle would wait for the GC."""
        self._parser = None  # type: ignore[assignment]
        self._handler = _NO_HANDLER
        self.head = self.switched = None

    def start(self, handler: ResponseHandler, method: bytes, upgrade: bool = False) -> None:
        """Expect the response to a request made with ``method``, reported to ``handler``.

        With ``upgrade``, a 101 is the request's answer (reported through
        ``response_upgraded``), not an interim response.
        """
        if self._head_request or self._llhttp_stopped:
            self._parser = _llhttp(self)  # llhttp awaits the HEAD body, or stopped
            self._llhttp_stopped = False
        self._handler = handler
        self._head_request = method == b"HEAD"
        self._upgrade = upgrade
        self._reset()

    def redirect(self, handler: ResponseHandler) -> None:
        """Report the rest of the current response to ``handler`` (one that takes it over mid-response)."""
        self._handler = handler

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises :class:`HTTPError` (502) for a malformed response."""
        if self.complete:
            self.overrun = True  # the complete response's end is already reported
            self.reusable = False
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0]:])
        except httptools.HttpParserError as e:
            self._failed(e)
        else:
            if self.head is None:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_RESPONSE_HEAD:
                    raise HTTPError(502, f"origin response head over {MAX_RESPONSE_HEAD} bytes")
            elif not self.complete and DATA not in self._mark:
                self._count_trailer(len(data))  # the read ended in a trailer section, or just past a chunk's line
        if self._end_due:
            self._end_due = False
            if self.overrun:
                self.reusable = False
            handler, self._handler = self._handler, _NO_HANDLER  # else an idle connection would keep it alive
            handler.response_end()

    def _count_trailer(self, size: int) -> None:
        self._trailer_bytes = counted_trailer(self._mark, self._trailer_bytes, size)
        if self._trailer_bytes > MAX_RESPONSE_HEAD:
            self._llhttp_stopped = True  # it stops mid-response
            self._trailers_refused(f"trailer section over {MAX_RESPONSE_HEAD} bytes")

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped at a 101: the request's answer, with ``rest`` after it, if it asked for an upgrade."""
        if self.switched is None:
            raise HTTPError(502, "origin switched protocols unasked") from None  # not the llhttp exception being handled
        self.complete = True
        self._handler.response_upgraded(self.switched, rest)

    def _failed(self, e: httptools.HttpParserError) -> None:
        """llhttp refused what it was fed: fine after a complete response (``overrun``), or in the trailer section after
        its last chunk (see the class); else a 502 (or the error a callback raised)."""
        self._llhttp_stopped = True
        if self.complete:
            # What follows a complete response stopped llhttp (or broke it: data after a
            # `Connection: close` response, say); the response itself stands.
            self.overrun = True
            return
        reason = str(e)
        if isinstance(e, httptools.HttpParserCallbackError):
            if e.__context__ is not None:
                if not isinstance(e.__context__, HTTPError) or DATA in self._mark:
                    raise e.__context__ from None  # an HTTPError, or a bug that must not pass as bad input
                reason = str(e.__context__)
        if DATA not in self._mark:  # past the last chunk's line (see _chunks)
            self._trailers_refused(reason)
            return
        raise HTTPError(502, f"invalid response from origin: {e}") from None

    def _trailers_refused(self, reason: str) -> None:
        """The body is complete, its trailer section is not: the response ends (it is re-framed without trailers),
        its connection is not reused."""
        self.trailer_error = reason
        self.overrun = True
        self._finish(reusable=False)

    def connection_closed(self) -> bool:
        """The origin closed; True if that ended the response properly."""
        if self.complete:
            return True
        if self.head is not None and self.ended_by_close:
            self._finish(reusable=False)
            self._end_due = False
            self._handler.response_end()
            return True
        return False

    # llhttp callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Overrun  # a second response: stop before llhttp reads any of it
        self._headers, self._reason = [], b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))  # after the head: trailers, dropped (DroppedFields)

    def on_headers_complete(self) -> None:  # noqa: C901, PLR0912 - one pass over a response's headers, no helper calls
        parser = self._parser
        status = parser.get_status_code()
        try:
            version = _VERSIONS[parser.get_http_version()]
        except KeyError:
            raise HTTPError(502, f"origin answered with HTTP/{parser.get_http_version()}") from None
        if status < 200:
            if status < 100:  # "099" would be relayed as "99"
                raise HTTPError(502, f"origin answered with status {status}")
            if not (status == 101 and self._upgrade):
                self._interim(status, version)
                return  # 1xx: llhttp goes on to the final response
        headers = self._headers
        self._headers = self._trailers
        head = ResponseHead(status, self._reason, version, headers)
        forward = head.forward
        connection = head.connection
        kinds = _KINDS
        for pair in headers:
            kind = kinds.get(pair[0])
            if kind is None:
                kind = _kind(pair[0])
            if kind == _FORWARD:
                forward.append(pair)
            elif kind == _LENGTH:
                if status != 204:  # RFC 9110 8.6: a 204 has none (a client reading it would take the next response)
                    forward.append(pair)
                head.content_length = int(pair[1])
            elif kind == _CODING:
                # The proxy removes the header: a body in any coding but chunked would reach the client unannounced
                # (a HEAD or 304 answer's header only names what a GET would get).
                if (head.chunked or pair[1].strip().lower() != b"chunked") and not (
                        self._head_request or status == 304 or status == 204):
                    raise HTTPError(502, f"origin used transfer coding {quoted(pair[1])}")
                head.chunked = True
            elif kind == _CONNECTION:
                tokens = connection_tokens(pair[1])
                connection = connection | tokens if connection else tokens
        if head.chunked and head.content_length is not None:  # llhttp lets it by (see _llhttp): refused here
            raise HTTPError(502, "origin sent both Content-Length and Transfer-Encoding")
        if connection:
            head.connection = connection
            if not connection <= CONNECTION_OPTIONS:
                head.forward = drop_listed(forward, connection)
        if status == 101:
            self.switched = head  # reported once llhttp hands back the bytes that follow
            return
        self.head = head
        has_body = not (self._head_request or status == 204 or status == 304)
        self.ended_by_close = has_body and head.content_length is None and not head.chunked
        self._handler.response_head(head, has_body)
        if not has_body:
            self._finish(reusable=parser.should_keep_alive())

    def _interim(self, status: int, version: bytes) -> None:
        """A 1xx that is not the request's answer: reported, but an unasked 101 (llhttp stops at it: see
        :meth:`feed`)."""
        headers, reason = self._headers, self._reason
        self._headers, self._reason = [], b""
        if status != 101:
            self._handler.response_interim(_interim_head(status, reason, version, headers))

    def on_body(self, data: bytes) -> None:
        if self.complete:
            raise _Overrun  # a body for a HEAD request: never relayed
        self._mark.add(DATA)
        self._handler.response_body(data)

    def on_message_complete(self) -> None:
        if self.head is not None and not self.complete:
            self._finish(reusable=self._parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        """Complete the response; its end is reported when llhttp returns (see :meth:`feed`)."""
        self.complete = True
        self.reusable = reusable
        self._end_due = True
