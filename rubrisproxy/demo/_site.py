"""A demo origin's web site: the page and its assets, a small HTTP API, and a WebSocket at ``/ws``."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from twisted.web import resource, server

from ._socket import DemoSocketFactory
from ._stream import MAX_KIB, BlockProducer


class SiteOrigin(Protocol):
    """What a demo site needs of its origin (a :class:`~rubrisproxy.demo.DemoOrigin`)."""

    name: str
    port_number: int
    restart_delay: float
    clock: Any  # times the WebSocket ticks

    def stats_url(self) -> str | None: ...

    def crash(self, answering: Any = None) -> None: ...

#: The largest request body ``/echo`` takes (and ``/api/stop`` much less).
MAX_BODY = 1 << 20
MAX_API_BODY = 1024

_ASSETS = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"demo.js": ("demo.js", b"text/javascript; charset=utf-8"),
    b"demo.css": ("demo.css", b"text/css; charset=utf-8"),
}
_CONTENT = {name: (resources.files(__package__) / file).read_bytes() for name, (file, _) in _ASSETS.items()}
_KIB = re.compile(rb"[0-9]{1,9}")


class _Asset(resource.Resource):
    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.body = _CONTENT[name]
        self.content_type = _ASSETS[name][1]

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


def _json(request: server.Request, value: object, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, indent=2).encode() + b"\n"


def _error(request: server.Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return message.encode() + b"\n"


class _Headers(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        seen = {
            "method": request.method.decode(),
            "uri": request.uri.decode(errors="replace"),
            "headers": {k.decode(errors="replace"): [v.decode(errors="replace") for v in vs]
                        for k, vs in request.requestHeaders.getAllRawHeaders()},
        }
        return _json(request, seen)


class _Echo(resource.Resource):
    isLeaf = True

    def render_POST(self, request: DemoRequest) -> bytes:
        if request.too_large:
            return _error(request, 413, f"the body is over {MAX_BODY} bytes")
        request.setHeader(b"content-type", b"application/octet-stream")
        return request.content.read() if request.content is not None else b""

    render_PUT = render_POST


class _Stream(resource.Resource):
    """``GET /stream?kib=N``: N KiB of text, written as the connection takes it."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes | int:
        values = (request.args or {}).get(b"kib", [b"64"])
        if len(values) != 1 or not _KIB.fullmatch(values[0]) or int(values[0]) > MAX_KIB:
            return _error(request, 400, f"kib must be one whole number from 0 to {MAX_KIB}")
        kib = int(values[0])
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"content-length", b"%d" % (kib * 1024))
        BlockProducer(request, kib).start()
        return server.NOT_DONE_YET


class _Info(resource.Resource):
    isLeaf = True

    def __init__(self, origin: SiteOrigin) -> None:
        super().__init__()
        self.origin = origin

    def render_GET(self, request: server.Request) -> bytes:
        return _json(request, {
            "origin": self.origin.name, "port": self.origin.port_number, "stats": self.origin.stats_url(),
            "restart_delay": self.origin.restart_delay,
        })


class _Stop(resource.Resource):
    """``POST /api/stop`` with ``{"origin": NAME}`` stops this origin if it is NAME (409 if not): it stops
    listening and drops its connections as a crash would, once this answer is written, and comes back later.
    It can stop nothing else. JSON only, and from no other site's page (``Origin``), so that no other page
    can press it."""

    isLeaf = True

    def __init__(self, origin: SiteOrigin) -> None:
        super().__init__()
        self.origin = origin

    def render_POST(self, request: DemoRequest) -> bytes:
        try:
            asked = _stop_asked(request)
        except _Refused as refused:
            return _error(request, refused.code, refused.message)
        if asked != self.origin.name:
            return _json(request, {"origin": self.origin.name, "stopped": False}, 409)
        answering = request.channel.transport
        # Once the answer is written; not if the asker went away before it.
        request.notifyFinish().addCallbacks(lambda _: self.origin.crash(answering), lambda _: None)
        request.setHeader(b"connection", b"close")
        return _json(request, {"origin": self.origin.name, "stopped": True,
                               "restart_in": self.origin.restart_delay}, 202)


class _Refused(Exception):
    """A request the API refuses: the status and why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _stop_asked(request: DemoRequest) -> object:
    """The origin a ``POST /api/stop`` names; :class:`_Refused` if the request is not one to take."""
    page = request.getHeader(b"origin")
    if page is not None and urlsplit(page.decode("latin-1")).netloc.lower() != (
            request.getHeader(b"host") or b"").decode("latin-1").lower():
        raise _Refused(403, "only the demo page itself can stop an origin")
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != b"application/json":
        raise _Refused(415, "send {\"origin\": NAME} as application/json")
    body = request.content.read(MAX_API_BODY + 1) if request.content is not None else b""
    if request.too_large or len(body) > MAX_API_BODY:
        raise _Refused(413, f"the body is over {MAX_API_BODY} bytes")
    try:
        asked = json.loads(body)
    except ValueError:
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(asked, dict) or not isinstance(asked.get("origin"), str):
        raise _Refused(400, "expected {\"origin\": NAME}")
    return asked["origin"]


class _Socket(resource.Resource):
    """``/ws``: the WebSocket; anything but an upgrade is a 426 (Autobahn's own would leave the answer unended)."""

    isLeaf = True

    def __init__(self, origin: SiteOrigin) -> None:
        super().__init__()
        self.upgrade = WebSocketResource(DemoSocketFactory(origin.name, origin.clock))

    def render(self, request: server.Request) -> bytes | int:
        if (request.getHeader(b"upgrade") or b"").strip().lower() != b"websocket":
            request.setHeader(b"upgrade", b"websocket")
            body = _error(request, 426, "this is a WebSocket endpoint: connect with a WebSocket client")
            request.setResponseCode(426, b"Upgrade Required")  # a reason Twisted does not know
            return body
        return self.upgrade.render(request)


class DemoRequest(server.Request):
    """A request whose body is kept up to :data:`MAX_BODY` bytes (the rest is dropped and ``too_large`` set),
    and whose answer names the origin (``X-Demo-Origin``)."""

    too_large = False
    origin_header = b""  # set by the DemoSite that made it
    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY:
            self.too_large = True
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        self.setHeader(b"x-demo-origin", self.origin_header)
        super().process()


class DemoSite(server.Site):
    """A demo origin's site, knowing the origin's name."""

    def __init__(self, root: resource.Resource, origin_name: str) -> None:
        super().__init__(root, logPath="/dev/null", requestFactory=self._request)
        self.origin_name = origin_name
        self.displayTracebacks = False
        self.noisy = False

    def _request(self, channel: object, queued: int) -> DemoRequest:
        request = DemoRequest(channel, queued)
        request.origin_header = self.origin_name.encode()
        return request


def demo_site(origin: SiteOrigin) -> server.Site:
    """The site of one demo origin."""
    root = resource.Resource()
    for name in _ASSETS:
        root.putChild(name, _Asset(name))
    root.putChild(b"headers", _Headers())
    root.putChild(b"echo", _Echo())
    root.putChild(b"stream", _Stream())
    api = resource.Resource()
    api.putChild(b"info", _Info(origin))
    api.putChild(b"stop", _Stop(origin))
    root.putChild(b"api", api)
    root.putChild(b"ws", _Socket(origin))
    return DemoSite(root, origin.name)

