"""Objects each connection leaves to Python's cyclic collector, per path: a steady count, not a timing.

Runs the proxy in-process on loopback (its configuration built as ``twistd rubrisproxy`` builds it, access log
off) with the collector off, drives each path ``--rounds`` times with clients on real sockets, then counts what
only the collector would free (``gc.DEBUG_SAVEALL``): the proxy's objects, and what they reach, per round (a
connection). Every object counted is walked by each of the collector's passes until one frees it, and its full
passes walk every open connection besides (about 300 ms with 8,000 sessions open).

    python bench/cyclic_garbage.py [--rounds 200] [--compare DIR]

``--compare DIR`` counts another checkout's the same way, in the same run, and prints both.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web import resource, server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
[frontends.web]
listen = ["tcp:{port}:interface=127.0.0.1"]
backend = "app"

[backends.app]
servers = ["127.0.0.1:{origin}"]
retries = 0
"""

#: The WebSocket backends' (an Autobahn echo server, tests/wsecho.py), in each mode.
WEBSOCKET = """
[websocket]
mode = "{mode}"
client-ping-interval = 0
backend-ping-interval = 0
"""
MASK = b"\x01\x02\x03\x04"
HELLO = b"\x81\x85" + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"hello"))  # a client's text frame
CLOSE = b"\x88\x82" + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"\x03\xe8"))  # its close (1000)

GET = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
BIG = b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def the_proxys(garbage: list[object]) -> set[int]:
    """The ids of the objects in ``garbage`` that are the proxy's or the h2 library's, or that those reach (not the
    bench's clients', made with Twisted's client endpoints, which leave cycles of their own)."""
    among = {id(o): o for o in garbage}
    reached = {key for key, o in among.items() if type(o).__module__.startswith(("rubrisproxy", "h2", "hpack"))}
    todo = list(reached)
    while todo:
        for referent in gc.get_referents(among[todo.pop()]):
            key = id(referent)
            if key in among and key not in reached:
                reached.add(key)
                todo.append(key)
    return reached


class Small(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"b" * 4_000_000 if request.path == b"/big" else b"small"


class Client(Protocol):
    """Raw HTTP/1.1, or HTTP/2 by prior knowledge (``h2``); counts the responses it read."""

    def __init__(self, h2: bool = False) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True)) if h2 else None
        self.read = b""
        self.ended = 0
        self.answered_ws = False  # the WebSocket's stream was answered (its 200)
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.h2 is not None:
            self.h2.initiate_connection()
            self.transport.write(self.h2.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        if self.h2 is None:
            self.read += data
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, (StreamEnded, StreamReset)):
                self.ended += 1
            elif isinstance(event, ResponseReceived):
                self.answered_ws = True
            elif isinstance(event, DataReceived):
                self.read += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.transport.write(self.h2.data_to_send())

    def request(self, count: int) -> None:
        if self.h2 is None:
            self.transport.write(GET * count if count else BIG)
            return
        for _ in range(count):
            stream = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream, [(":method", "GET"), (":scheme", "http"), (":authority", "bench"),
                                          (":path", "/small")], end_stream=True)
        self.transport.write(self.h2.data_to_send())

    def websocket(self) -> int:
        """Open a WebSocket on a stream (RFC 8441): its id."""
        assert self.h2 is not None
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                      (":authority", "bench"), (":path", "/chat"), ("sec-websocket-version", "13")])
        self.transport.write(self.h2.data_to_send())
        return stream

    def send(self, stream: int, data: bytes, end: bool) -> None:
        assert self.h2 is not None
        self.h2.send_data(stream, data, end_stream=end)
        self.transport.write(self.h2.data_to_send())

    def answered(self) -> int:
        return self.ended if self.h2 is not None else self.read.count(b"HTTP/1.1 ")

    def answering(self) -> bool:
        """Whether its response (to a request for /big) has begun."""
        return len(self.read) > 100_000

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


def until(condition: Callable[[], object]) -> Generator[Any, Any, None]:
    for _ in range(5000):
        if condition():
            return
        yield task.deferLater(reactor, 0.001, lambda: None)
    raise RuntimeError("a bench step never happened")


@defer.inlineCallbacks
def connection(port: int, requests: int, h2: bool) -> Generator[Any, Any, None]:
    """One client connection: ``requests`` requests (streams, with ``h2``) answered, then closed; with none, a
    request for a large response, the connection cut once it has begun; with -1 (``h2``), a WebSocket on a stream."""
    client = Client(h2)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    if requests < 0:
        yield from websocket(client)
        client.transport.loseConnection()
    elif requests:
        client.request(requests)
        yield from until(lambda: client.answered() >= requests)
        client.transport.loseConnection()
    else:  # gone mid-response
        client.request(requests)
        yield from until(client.answering)
        client.transport.abortConnection()
    yield client.lost
    if client.h2 is not None:  # the client's h2 objects are not the proxy's to count: freed here
        client.h2._frame_dispatch_table.clear()  # (h2's own cycle)
        client.h2 = None  # (the client, in the cycles of Twisted's client endpoint)


def websocket(client: Client) -> Generator[Any, Any, None]:
    """A WebSocket on a stream of ``client``'s HTTP/2 connection (RFC 8441): an echo, then the client's close with
    END_STREAM, until the stream has ended."""
    h2 = client.h2
    assert h2 is not None
    yield from until(lambda: h2.remote_settings.enable_connect_protocol)
    stream = client.websocket()
    yield from until(lambda: client.answered_ws)
    client.send(stream, HELLO, end=False)
    yield from until(lambda: b"hello" in client.read)
    client.send(stream, CLOSE, end=True)
    yield from until(lambda: client.ended)


def proxy(origin: int, extra: str = "") -> tuple[Any, int]:
    """A started proxy service (this process's code) in front of ``origin`` (``extra``: more of its configuration), and
    its port."""
    from rubrisproxy.config import CommandLine, load_config
    from rubrisproxy.service import build_service

    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG.format(port=port, origin=origin) + extra)
    service = build_service(load_config(CommandLine(config_path=f.name, access_log="off")), reactor)
    service.startService()
    return service, port


@defer.inlineCallbacks
def count(port: int, requests: int, h2: bool, rounds: int) -> Generator[Any, Any, float]:
    """Objects left to the collector per connection on one path."""
    yield connection(port, requests, h2)  # warm: the pool's connection made, imports done
    yield task.deferLater(reactor, 0.05, lambda: None)
    gc.collect()
    gc.disable()
    for _ in range(rounds):
        yield connection(port, requests, h2)
    yield task.deferLater(reactor, 0.05, lambda: None)
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    gc.set_debug(0)
    left = len(the_proxys(gc.garbage)) / rounds
    gc.garbage.clear()
    gc.enable()
    return left


@defer.inlineCallbacks
def run(rounds: int) -> Generator[Any, Any, dict[str, float]]:
    origin = reactor.listenTCP(0, server.Site(Small(), logPath="/dev/null"), interface="127.0.0.1")
    live, port = proxy(origin.getHost().port)
    dead, dead_port = proxy(free_port())
    from tests.wsecho import EchoBackendFactory, listen_echo_backend  # the checkout's measured (its PYTHONPATH)

    echo = listen_echo_backend(EchoBackendFactory())
    tunnel, tunnel_port = proxy(echo.getHost().port, WEBSOCKET.format(mode="tunnel"))
    session, session_port = proxy(echo.getHost().port, WEBSOCKET.format(mode="session"))
    counts: dict[str, float] = {}
    for name, (listen, requests, h2) in {
        "HTTP/1.1, a connection of 4 requests": (port, 4, False),
        "HTTP/1.1, the client gone mid-response": (port, 0, False),
        "HTTP/2, a connection of 4 streams": (port, 4, True),
        "HTTP/1.1 to a dead server (503), a connection": (dead_port, 1, False),
        "HTTP/2, a WebSocket on a stream (tunnel), a connection": (tunnel_port, -1, True),
        "HTTP/2, a WebSocket on a stream (session), a connection": (session_port, -1, True),
    }.items():
        counts[name] = yield count(listen, requests, h2, rounds)
    yield live.stopService()
    yield dead.stopService()
    yield tunnel.stopService()
    yield session.stopService()
    yield echo.stopListening()
    yield origin.stopListening()
    return counts


def measure(rounds: int) -> dict[str, float]:
    """This process's code (PYTHONPATH): objects left to the collector per connection, for each path."""
    result: dict[str, float] = {}

    def done(counts: dict[str, float]) -> None:
        result.update(counts)
        reactor.stop()

    def failed(failure: Any) -> None:
        failure.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: run(rounds).addCallbacks(done, failed))
    reactor.run()
    return result


def counts_of(root: str, rounds: int) -> dict[str, float]:
    """``measure`` run on ``root``'s code, in a process of its own."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--rounds", str(rounds)],
                         cwd=root, env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--compare", default="", help="another checkout to count the same way")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return
    here = counts_of(ROOT, args.rounds)
    there = counts_of(args.compare, args.rounds) if args.compare else {}
    print(f"objects left to the cyclic collector per connection ({args.rounds} rounds each)")
    for name, count in here.items():
        line = f"  {name}: {count:.1f}"
        if there:
            line += f" (compared: {there[name]:.1f})"
        print(line)


if __name__ == "__main__":
    main()
