"""The built-in demo origin: what ``twistd -n rubrisproxy --demo`` proxies to."""

from __future__ import annotations

import json

from twisted.web import resource, server

_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>rubrisproxy demo</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>rubrisproxy is running</h1>
<p>This page comes from the built-in demo origin, through the proxy.</p>
<ul>
<li><a href="/headers">/headers</a>: the request as the origin saw it (note the forwarding headers)</li>
<li><a href="/stream?kib=1024">/stream?kib=1024</a>: a streamed body of that many KiB</li>
<li><code>curl -d @file http://127.0.0.1:8080/echo</code>: echoes a request body</li>
</ul>
<p>Point rubrisproxy at your own servers with <code>--backend host:port</code> or <code>--config FILE</code>.</p>
</body></html>
"""


class _Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _PAGE


class _Headers(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        seen = {
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "headers": {k.decode(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()},
        }
        return json.dumps(seen, indent=2).encode() + b"\n"


class _Echo(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/octet-stream")
        return request.content.read()  # type: ignore[union-attr, no-any-return]

    render_PUT = render_POST


class _Stream(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> int:
        kib = min(int(request.args.get(b"kib", [b"64"])[0]), 1 << 20)  # type: ignore[union-attr]
        block = b"x" * 1023 + b"\n"
        request.setHeader(b"content-type", b"text/plain")
        for _ in range(kib):
            request.write(block)
        request.finish()
        return server.NOT_DONE_YET


def demo_site() -> server.Site:
    """The demo origin as a twisted.web Site."""
    root = resource.Resource()
    root.putChild(b"", _Page())
    root.putChild(b"headers", _Headers())
    root.putChild(b"echo", _Echo())
    root.putChild(b"stream", _Stream())
    site = server.Site(root, logPath="/dev/null")
    site.displayTracebacks = False
    site.noisy = False
    return site
