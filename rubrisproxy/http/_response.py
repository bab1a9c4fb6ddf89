"""Incremental parsing of an origin's response to one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import httptools

from ._errors import HTTPError
from ._headers import Headers, connection_tokens

#: Bound on an origin's response head; a larger one is a bad response (502).
MAX_RESPONSE_HEAD = 65536


@dataclass(slots=True)
class ResponseHead:
    """A parsed status line and headers."""

    status: int
    reason: bytes
    version: bytes
    headers: Headers
    content_length: int | None = None
    chunked: bool = False
    connection: set[bytes] = field(default_factory=set)

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200


class ResponseHandler(Protocol):
    """What a :class:`ResponseParser` reports to."""

    def response_head(self, head: ResponseHead, has_body: bool) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_end(self) -> None: ...


class ResponseParser:
    """Parse one response (after any 1xx) to a request made with ``method``.

    ``ended_by_close`` says whether the body's end is the connection's end;
    :meth:`connection_closed` completes such a response.
    """

    def __init__(self, handler: ResponseHandler, method: bytes) -> None:
        self._handler = handler
        self._head_request = method == b"HEAD"
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._reason = b""
        self._head_bytes = 0
        self.head: ResponseHead | None = None
        self.complete = False
        self.reusable = False
        self.ended_by_close = False
        self.started = False

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises :class:`HTTPError` (502) for a malformed response."""
        if self.complete:
            # Bytes after a complete response (a body sent for HEAD, say): never reuse.
            self.reusable = False
            return
        self.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise HTTPError(502, "origin switched protocols unasked") from None
        except httptools.HttpParserCallbackError as e:
            if e.__context__ is not None:
                raise e.__context__ from None  # an HTTPError, or a bug that must not pass as bad input
            raise HTTPError(502, f"invalid response from origin: {e}") from None
        except httptools.HttpParserError as e:
            raise HTTPError(502, f"invalid response from origin: {e}") from None
        if self.head is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_RESPONSE_HEAD:
                raise HTTPError(502, f"origin response head over {MAX_RESPONSE_HEAD} bytes")

    def connection_closed(self) -> bool:
        """The origin closed; True if that ended the response properly."""
        if self.complete:
            return True
        if self.head is not None and self.ended_by_close:
            self._finish(reusable=False)
            return True
        return False

    # llhttp callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head is None:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        head = ResponseHead(
            status=status,
            reason=self._reason,
            version=self._parser.get_http_version().encode(),
            headers=self._headers,
        )
        self._headers, self._reason = [], b""
        for name, value in head.headers:
            lower = name.lower()
            if lower == b"content-length":
                head.content_length = int(value)
            elif lower == b"transfer-encoding":
                head.chunked = value.strip().lower().endswith(b"chunked")
            elif lower == b"connection":
                head.connection |= connection_tokens(value)
        if head.informational:
            return  # 1xx: llhttp goes on to the final response
        self.head = head
        has_body = not (self._head_request or status in (204, 304))
        self.ended_by_close = has_body and head.content_length is None and not head.chunked
        self._handler.response_head(head, has_body)
        if not has_body:
            self._finish(reusable=self._parser.should_keep_alive())

    def on_body(self, data: bytes) -> None:
        if not self.complete:
            self._handler.response_body(data)

    def on_message_complete(self) -> None:
        if self.head is not None and not self.complete:
            self._finish(reusable=self._parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        self.complete = True
        self.reusable = reusable
        self._handler.response_end()
