"""HTTP errors the proxy answers itself, with short bodies."""

from __future__ import annotations

REASONS: dict[int, bytes] = {
    100: b"Continue",
    200: b"OK",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    404: b"Not Found",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    413: b"Content Too Large",
    410: b"Gone",
    414: b"URI Too Long",
    417: b"Expectation Failed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def quoted(value: bytes | str, limit: int = 64) -> str:
    """``value`` (its first ``limit`` characters) for a log line or an error's detail: in double quotes, bytes
    read as Latin-1, control and non-ASCII characters, quotes and backslashes escaped; never a Python repr."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    cut = text[:limit]
    escaped = cut.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"' + ("..." if len(text) > limit else "")


class HTTPError(Exception):
    """A request the proxy refuses, or a failure it reports, as ``status`` with ``detail``.

    ``detail`` goes to the log; the client sees the standard reason phrase and any
    ``headers`` (serialized lines, each ending in CRLF), and ``body`` (JSON) when one is given
    instead of the short text one.
    """

    def __init__(self, status: int, detail: str, headers: bytes = b"", body: bytes = b"") -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.headers = headers
        self.body = body


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for ``status`` (or a generic one)."""
    return REASONS.get(status, b"Unknown")


def error_response(status: int, close: bool = True, headers: bytes = b"", json: bytes = b"") -> bytes:
    """A complete response for a proxy-generated error: status line, headers, short body (``json``, if given)."""
    reason = reason_phrase(status)
    body = json or b"%d %s\n" % (status, reason)
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Content-Type: application/json\r\n" if json else b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"Cache-Control: no-store\r\n",
            headers,
            b"Connection: close\r\n" if close else b"",
            b"\r\n",
            body,
        )
    )
