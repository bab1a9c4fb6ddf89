"""Baseline relays for the benchmark, run in their own process.

    python bench/baselines.py reverse PORT ORIGIN_PORT      twisted.web.proxy.ReverseProxyResource
    python bench/baselines.py portforward PORT ORIGIN_PORT  twisted.protocols.portforward
    python bench/baselines.py origin PORT [PORT2]           a plain Twisted origin (when nginx is absent)
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.protocols import portforward
from twisted.web import proxy, resource, server

SMALL = b"hello, world\n"
LARGE = b"x" * (1 << 20)


class _Origin(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        return LARGE if request.path == b"/large" else SMALL


def main(kind: str, port: int, origin_port: int = 0) -> None:
    if kind == "reverse":
        site = server.Site(proxy.ReverseProxyResource("127.0.0.1", origin_port, b""), logPath="/dev/null")
        reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
    elif kind == "portforward":
        reactor.listenTCP(port, portforward.ProxyFactory("127.0.0.1", origin_port), interface="127.0.0.1", backlog=1024)
    elif kind == "origin":  # ORIGIN_PORT here is a second port to listen on too
        site = server.Site(_Origin(), logPath="/dev/null")
        for each in (port, origin_port) if origin_port else (port,):
            reactor.listenTCP(each, site, interface="127.0.0.1", backlog=1024)
    else:
        raise SystemExit(__doc__)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
