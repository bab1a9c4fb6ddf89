"""rubrisproxy's own CPU per request, without sockets: one keep-alive client, one pooled origin.

Feeds a request into a client connection and the origin's response into the origin connection, over
in-memory transports, and reports microseconds per request. Steady, unlike a socket benchmark, so it is
the number to watch while optimising the request path.

    python bench/micro_exchange.py [--requests 50000] [--access-log] [--rules] [--close] [--chunked [CHUNKS]]

``--rules`` puts a handful of HTTP rules on the frontend (docs/rules.md): a unique-id header, three request
header rules and two response header rules, each a kind operators write (RULES below). ``--close`` sends
``Connection: close``: every request on a client connection of its own (made, answered, closed and lost), the
origin connection still pooled. ``--chunked``: the origin's body comes chunked (``--chunked 13``: a byte per chunk).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rubrisproxy.accesslog import AccessLog, NullAccessLog
from rubrisproxy.builder import ProxyParts
from rubrisproxy.config import BackendConfig, FrontendConfig, PoolSettings, ProxyConfig, RuleConfig, ServerConfig
from rubrisproxy.frontend import ClientConnection
from rubrisproxy.logoutput import FileOutput
from rubrisproxy.origin import ConnectionPool
from rubrisproxy.settings import LiveSettings
from rubrisproxy.websocket import ResumeBudget

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CLOSE_REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 05:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n")


def chunked_response(chunks: int) -> bytes:
    """``--chunked``'s response: the same body in ``chunks`` chunks (each re-framed for the client), in one read."""
    body = b"hello, world\n"
    size = -(-len(body) // chunks)
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return RESPONSE.replace(b"Content-Length: 13", b"Transfer-Encoding: chunked").replace(
        body, b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n")


#: The handful of rules ``--rules`` adds: what a frontend translated from HAProxy commonly carries.
RULES: dict[str, Any] = {
    "unique_id_header": "X-Request-ID",
    "http_request": (
        RuleConfig("set-header", name="X-Client-IP", value="%[src]"),
        RuleConfig("add-header", name="X-Frontend", value="%[fe_name]"),
        RuleConfig("del-header", name="X-Debug"),
    ),
    "http_response": (
        RuleConfig("set-header", name="X-Request-ID", value="%[unique-id]"),
        RuleConfig("del-header", name="Server"),
    ),
}


class _Connector:
    def __init__(self) -> None:
        self.connections = []  # type: ignore[var-annotated]

    def connect(self, server, protocol):  # type: ignore[no-untyped-def]
        protocol.makeConnection(StringTransport())
        self.connections.append(protocol)
        return defer.succeed(protocol)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--rules", action="store_true", help="a handful of HTTP rules on (see RULES)")
    parser.add_argument("--close", action="store_true", help="a new client connection per request")
    parser.add_argument("--chunked", type=int, nargs="?", const=1, default=0, metavar="CHUNKS",
                        help="the origin's body chunked (in CHUNKS chunks, up to 13: one byte each)")
    args = parser.parse_args()
    response = chunked_response(args.chunked) if args.chunked else RESPONSE
    clock = Clock()
    connector = _Connector()
    settings = LiveSettings()
    pool = ConnectionPool(connector, clock, PoolSettings(), settings)  # type: ignore[arg-type]
    access_log = AccessLog("text", FileOutput(os.devnull)) if args.access_log else NullAccessLog()
    parts = ProxyParts(clock, MultiService(), settings, pool, access_log, ResumeBudget(settings))
    backend = BackendConfig(name="app", servers=(ServerConfig("s1", "127.0.0.1", 1),))
    rules = RULES if args.rules else {}
    frontends = (FrontendConfig(name="web", listen=(), backend="app", **rules),)
    parts.apply(ProxyConfig(frontends=frontends, backends={"app": backend}))
    frontend = parts.frontends["web"].frontend
    client = ClientConnection(frontend)
    client_transport = StringTransport()
    client.makeConnection(client_transport)
    client.dataReceived(REQUEST)
    (origin,) = connector.connections
    origin.dataReceived(response)
    start = time.perf_counter()
    if args.close:
        closed = Failure(ConnectionDone())
        for _ in range(args.requests):
            client = ClientConnection(frontend)
            client.makeConnection(StringTransport())
            client.dataReceived(CLOSE_REQUEST)
            origin.dataReceived(response)
            client.connectionLost(closed)
            origin.transport.clear()
    else:
        for _ in range(args.requests):
            client.dataReceived(REQUEST)
            origin.dataReceived(response)
            client_transport.clear()
            origin.transport.clear()
    elapsed = time.perf_counter() - start
    assert pool.created == 1, "every request must reuse the one origin connection"
    print(f"{elapsed / args.requests * 1e6:.1f} us per request (access log {'on' if args.access_log else 'off'}, "
          f"rules {'on' if args.rules else 'off'}{', Connection: close' if args.close else ''}"
          f"{f', chunked in {args.chunked}' if args.chunked else ''})")


if __name__ == "__main__":
    main()
