"""The request head an origin receives (the client's, rewritten by the proxy), and how a response is framed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from ..http import serialize_headers

if TYPE_CHECKING:
    from ..backend import Backend
    from ..http import Headers, RequestHead

VIA = {version: b"Via: %s rubrisproxy\r\n" % version for version in (b"1.0", b"1.1", b"2.0")}


class Framing:
    """How a response body is delimited to the client: none, a length, chunks, or the connection's close."""

    NONE: Final = 0
    LENGTH: Final = 1
    CHUNKED: Final = 2
    CLOSE: Final = 3


class _Client(Protocol):
    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes: ...


class _Handshaking(Protocol):
    def handshake_lines(self, forward: Headers, backend: Backend) -> tuple[Headers, bytes]: ...


class _Request(Protocol):
    """What the head is written from: an exchange."""

    @property
    def head(self) -> RequestHead: ...

    @property
    def backend(self) -> Backend | None: ...

    @property
    def client(self) -> _Client: ...

    @property
    def websocket(self) -> _Handshaking | None: ...


def origin_request_head(request: _Request, target: bytes, authority: bytes | None) -> bytes:
    """The head of the request sent to the origin for ``request``, asking for ``target``.

    ``authority`` (an absolute target's) replaces the Host header (RFC 9112 3.2.2); the backend drops
    its session headers and rewrites its cookie; a WebSocket upgrade adds the backend handshake; the Via
    and forwarding headers say who asked.
    """
    head, backend, websocket = request.head, request.backend, request.websocket
    host = head.host
    forward = head.forward
    if authority is not None:
        host = authority
        forward = [pair for pair in forward if pair[0].lower() != b"host"]
    if backend is not None:
        if backend.session_drops:
            forward = [pair for pair in forward if pair[0].lower() not in backend.session_drops]
        if backend.cookie is not None:
            forward = backend.cookie.request_headers(forward)
    extra = b""
    if websocket is not None:
        assert backend is not None
        forward, extra = websocket.handshake_lines(forward, backend)
    if host is None:  # an HTTP/1.0 request without Host
        servers = backend.servers if backend is not None else []
        host = b"%s:%d" % (servers[0].config.host.encode(), servers[0].config.port) if servers else b"localhost"
        extra += b"Host: %s\r\n" % host
    elif authority is not None:
        extra += b"Host: %s\r\n" % host
    if head.chunked:
        extra += b"Transfer-Encoding: chunked\r\n"
    return b"%s %s HTTP/1.1\r\n%s%s%s%s\r\n" % (
        head.method, target, serialize_headers(forward), VIA[head.version], request.client.forwarding_headers(host, head),
        extra,
    )
