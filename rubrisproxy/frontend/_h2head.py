"""HTTP/2 heads in HTTP/1.1 terms: a stream's request headers as a :class:`RequestHead`, and the HTTP/1.1
response head an exchange writes as the header list of a HEADERS frame."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..config import Limits
from ..http import HTTPError, RequestHead, quoted, valid_host
from ..websocket import new_key

#: The version an HTTP/2 request carries through the proxy: its access log and Via say 2.0; an exchange frames
#: its response as for HTTP/1.0 (no chunks: the stream's frames delimit it).
HTTP2 = b"2.0"
#: Response headers HTTP/2 forbids (RFC 9113 8.2.2): an exchange's framing and connection headers.
_CONNECTION_SPECIFIC = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
))
_CONTINUE = b"100-continue"
#: RFC 9110 5.6.2: a method is a token (it goes into the origin's request line as it is).
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9113 8.3.1: ``:path`` is origin-form (or ``*``); visible ASCII only, so nothing splits the origin's line.
_PATH = re.compile(rb"/[\x21-\x7e]*|\*")
_UPGRADE = frozenset((b"upgrade",))


def request_head(
    headers: Iterable[tuple[bytes, bytes]], ended: bool, limits: Limits, drop: frozenset[bytes], websocket: bool = True,
) -> RequestHead:
    """The request a HEADERS frame carries (``ended``: with END_STREAM, so no body), as an HTTP/1.1 exchange
    reads it; :class:`HTTPError` for one to refuse. ``headers`` passed
    :func:`~rubrisproxy._compat.malformed_h2_request` (the pseudo-headers, the connection-specific fields); the cookie crumbs are joined (RFC 9113 8.2.3). A WebSocket's extended CONNECT
    (RFC 8441), when ``websocket`` allows it, reads as the GET that upgrades on HTTP/1.1, with a key of the
    proxy's own (else it stays a CONNECT, which an exchange refuses)."""
    pseudo, regular, cookies, size = _split(headers)
    method, path, authority = pseudo.get(b":method", b""), pseudo.get(b":path", b""), pseudo.get(b":authority", b"")
    upgrade = websocket and _websocket(pseudo, regular)
    if upgrade:
        method = b"GET"
        ended = True  # what follows on the stream is the WebSocket's
    _check_line(method, path, limits)
    if len(regular) + (len(cookies) > 0) > limits.max_headers:
        raise HTTPError(431, f"more than {limits.max_headers} headers")
    if cookies:
        regular.append((b"cookie", b"; ".join(cookies)))
    head = RequestHead(method, path, HTTP2, regular)
    head.size = size
    if upgrade:
        head.upgrade = True
        head.connection = _UPGRADE
    _read_fields(head, regular, drop)
    _host(head, authority)
    if ended:
        head.content_length = head.content_length or None
    elif head.content_length is None:
        head.chunked = True  # the body's length is known at its END_STREAM: sent on to the origin in chunks
    if limits.max_body_size and (head.content_length or 0) > limits.max_body_size:
        raise HTTPError(413, f"Content-Length {head.content_length} over the {limits.max_body_size} limit")
    head.has_body = head.chunked or bool(head.content_length)
    return head


def _check_line(method: bytes, path: bytes, limits: Limits) -> None:
    """Refuse a method or path that the origin's request line could not carry as the proxy read them."""
    if len(path) > limits.max_request_line:
        raise HTTPError(414, f"request target longer than {limits.max_request_line} bytes")
    if _METHOD.fullmatch(method) is None:
        raise HTTPError(400, f"invalid method {quoted(method)}")
    if method != b"CONNECT" and _PATH.fullmatch(path) is None:
        raise HTTPError(400, f"invalid :path {quoted(path)}: origin-form and visible ASCII only")


def _host(head: RequestHead, authority: bytes) -> None:
    """The Host header an HTTP/1.1 origin gets: the client's, else made of :authority (RFC 9113 8.3.1)."""
    if head.host is None and authority:
        head.host = authority
        head.headers.insert(0, (b"host", authority))
        head.forward.insert(0, (b"host", authority))
    if head.host is None or not valid_host(head.host):
        raise HTTPError(400, f"invalid Host {quoted(head.host or b'')}")


def _websocket(pseudo: dict[bytes, bytes], regular: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request is a WebSocket's extended CONNECT; if so, ``regular`` gains the upgrade's headers."""
    if pseudo.get(b":method") != b"CONNECT" or pseudo.get(b":protocol") != b"websocket":
        return False
    regular += [(b"connection", b"upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-key", new_key())]
    return True


def _split(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]], list[bytes], int]:
    """The pseudo-headers, the other headers but cookies, the cookie crumbs, and the size of them all as
    HTTP/1.1 lines."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        else:
            regular.append((name, value))
    return pseudo, regular, cookies, size


def _read_fields(head: RequestHead, regular: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> None:
    forward = head.forward
    hosts = 0
    for pair in regular:
        name, value = pair
        if name not in drop and name[:6] != b"proxy-":
            forward.append(pair)
        if name == b"host":
            hosts += 1
            head.host = value.strip(b" \t")
        elif name == b"content-length":
            if not value.isdigit() or len(value) > 18:  # int() would take "+5", " 5 " and "1_0"
                raise HTTPError(400, f"invalid Content-Length {quoted(value)}")
            head.content_length = int(value)
        elif name == b"expect":
            if value.strip().lower() != _CONTINUE:
                raise HTTPError(417, f"unsupported expectation {quoted(value)}")
            head.expect_continue = True
    if hosts > 1:
        raise HTTPError(400, "a request must carry at most one Host header")


def response_head(data: bytes, end: int) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and HTTP/2 header list of the HTTP/1.1 response head ``data[:end]`` an exchange wrote (its
    own serialization: one ``Name: value`` per line), the connection-specific headers left out."""
    lines = data[:end].split(b"\r\n")
    status = int(lines[0][9:12])
    headers = [(b":status", lines[0][9:12])]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name not in _CONNECTION_SPECIFIC and not (name == b"content-length" and status == 204):
            headers.append((name, value.strip()))  # a 204 has no content (an origin's length would break it)
    return status, headers
