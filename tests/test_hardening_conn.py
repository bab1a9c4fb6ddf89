"""Connection-level hardening over loopback: pipelining, inactivity timeouts in each direction, accept backoff."""

from __future__ import annotations

import socket

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher

from twisted.web import resource

from rubrisproxy._compat import unsent
from rubrisproxy.config import Timeouts
from rubrisproxy.frontend._connection import PIPELINE_DEPTH
from rubrisproxy.http._request import _HEAD_SLICE

from .helpers import ProxyTestCase, get, parse_responses, run_reactor_for


class DeafOrigin(Protocol):
    """Accepts a connection and never reads from it."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


class HeldOrigin(Protocol):
    """Answers nothing until :attr:`released`; then answers every request it got, in order."""

    released = False
    instances: list[HeldOrigin] = []

    def connectionMade(self) -> None:
        self.pending = 0
        self.buffer = b""
        HeldOrigin.instances.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.pending += 1
            self.paths = getattr(self, "paths", []) + [head.split(b" ")[1]]
        self.answer()

    def answer(self) -> None:
        while self.released and self.pending:
            self.pending -= 1
            path = self.paths.pop(0)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))


class GoesDown(resource.Resource):
    """Answers once, marking its server down: every later request is refused (503) as it starts."""

    isLeaf = True

    def render(self, request):  # type: ignore[no-untyped-def]
        self.server.set_up(False)
        return b"ok"


def answered(data: bytes) -> int:
    return data.count(b"HTTP/1.1 ")


class PipeliningTests(ProxyTestCase):
    """A client may pipeline any number of requests: all are answered, in order, at a bounded cost."""

    @defer.inlineCallbacks
    def test_thousands_of_small_requests_in_one_write_are_all_answered_in_order(self):
        # The exact bytes of the report: 2,200 small GETs in one write once got one 200, then a false 414.
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(b"".join(get(b"/%d" % i) for i in range(2200)))
        yield client.until(lambda data: answered(data) >= 2200)
        responses = parse_responses(client.received)
        self.assertEqual([r.status for r in responses], [200] * 2200)
        self.assertEqual([r.body for r in responses], [b"path=/%d" % i for i in range(2200)])
        self.assertTrue(client.transport.connected)

    @defer.inlineCallbacks
    def test_pipelined_requests_wait_unparsed_past_the_depth_and_reading_stops(self):
        HeldOrigin.released, HeldOrigin.instances = False, []
        frontend = self.start_proxy(self.start_raw_origin(HeldOrigin))
        client = yield self.connect()
        requests = b"".join(get(b"/%d" % i) for i in range(5000))  # 150 kB: more than one socket read
        client.send(requests)
        yield self.poll(lambda: HeldOrigin.instances and HeldOrigin.instances[0].pending, "the first request")
        yield run_reactor_for(10)
        (proxy_side,) = frontend.connections
        # Parsing stops within the slice of input that reached the depth.
        self.assertGreaterEqual(len(proxy_side._queued), PIPELINE_DEPTH)
        self.assertLessEqual(len(proxy_side._queued), PIPELINE_DEPTH + _HEAD_SLICE // len(get(b"/0")))
        self.assertTrue(proxy_side.parser.held)
        self.assertTrue(proxy_side.gate.paused)  # reading has stopped
        self.assertLessEqual(len(proxy_side._unparsed), 65536)  # at most one read waits unparsed
        self.assertLess(proxy_side.bytes_in, len(requests))
        HeldOrigin.released = True
        HeldOrigin.instances[0].answer()
        yield client.until(lambda data: answered(data) >= 5000)
        responses = parse_responses(client.received)
        self.assertEqual([r.body for r in responses], [b"/%d" % i for i in range(5000)])

    @defer.inlineCallbacks
    def test_client_pipelining_without_reading_holds_one_buffer_of_responses(self):
        frontend = self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.transport.pauseProducing()  # it sends, but never reads
        yield self.poll(lambda: frontend.connections, "the proxy accepts")
        (proxy_side,) = frontend.connections
        proxy_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        count, size = 400, 30_000  # 12 MB of responses, each small enough to be written without flow control
        client.send(get(b"/big/%d" % size) * count)
        yield self.poll(lambda: proxy_side._output.full, "the proxy's buffer fills")
        yield run_reactor_for(20)
        self.assertLess(unsent(proxy_side.transport), 65536 + 2 * size)
        self.assertLess(len(self.access_log.entries), 20)  # it stopped starting requests
        client.transport.resumeProducing()
        yield client.until(lambda data: answered(data) >= count)
        responses = parse_responses(client.received)
        self.assertEqual([(r.status, len(r.body)) for r in responses], [(200, size)] * count)

    @defer.inlineCallbacks
    def test_requests_refused_as_they_start_are_answered_in_a_loop_not_a_recursion(self):
        root = GoesDown()
        frontend = self.start_proxy(self.start_web_origin(root))
        root.server = frontend.backend.servers[0]
        client = yield self.connect()
        client.send(get() * 2200)
        yield client.until(lambda data: answered(data) >= 2200)
        responses = parse_responses(client.received)
        self.assertEqual([r.status for r in responses], [200] + [503] * 2199)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertTrue(client.transport.connected)

    @defer.inlineCallbacks
    def test_bad_pipelined_request_is_refused_after_those_before_it(self):
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(get(b"/a") + get(b"/b") + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + get(b"/c"))
        yield client.closed
        responses = parse_responses(client.received)
        self.assertEqual([(r.status, r.body) for r in responses][:2], [(200, b"path=/a"), (200, b"path=/b")])
        self.assertEqual([r.status for r in responses], [200, 200, 400])


class TrickleReader:
    """A plain socket client that reads ``chunk`` bytes every ``period`` seconds: slow, but steady.

    Its receive buffer is small, so the kernel lets the proxy send only as fast as it reads.
    """

    def __init__(self, port: int, chunk: int = 2048, period: float = 0.01) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.received = bytearray()
        self.closed = False
        self._chunk = chunk
        self._loop = task.LoopingCall(self._read)
        self._loop.start(period, now=False)

    def _read(self) -> None:
        try:
            data = self.sock.recv(self._chunk)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            self._loop.stop()
        self.received += data

    def close(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.sock.close()


class TrickleOrigin:
    """A plain socket origin that reads a request's body ``chunk`` bytes every ``period`` seconds, then answers."""

    def __init__(self, chunk: int = 2048, period: float = 0.01) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sock: socket.socket | None = None
        self.received = bytearray()
        self._chunk = chunk
        self._loop = task.LoopingCall(self._step)
        self._loop.start(period, now=False)

    def _step(self) -> None:
        if self.sock is None:
            try:
                self.sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            self.sock.setblocking(False)
        try:
            self.received += self.sock.recv(self._chunk)
        except BlockingIOError:
            return
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) if b"\r\n\r\n" in self.received else -1
        if len(body) == length:
            self.sock.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self._loop.stop()

    def close(self) -> None:
        if self._loop.running:
            self._loop.stop()
        for sock in (self.sock, self.listener):
            if sock is not None:
                sock.close()


class InactivityTimeoutTests(ProxyTestCase):
    """``timeout client`` and ``timeout server`` count time without progress in a direction, not total time."""

    timeouts = Timeouts(client=0.2, http_request=5, http_keep_alive=5, connect=2, server=0.6)

    @defer.inlineCallbacks
    def trickle(self, frontend, request: bytes):  # type: ignore[no-untyped-def]
        """Send ``request`` from a :class:`TrickleReader`; the proxy's socket gets a small send buffer, so what
        it writes waits in its own buffer, draining at the reader's pace (64 KiB take 0.32 s, past the timeout)."""
        reader = TrickleReader(self.proxy_port)
        self.addCleanup(reader.close)
        yield self.poll(lambda: frontend.connections, "the proxy accepts")
        (proxy_side,) = frontend.connections
        proxy_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.sock.send(request)
        return reader

    @defer.inlineCallbacks
    def test_slow_steady_reader_of_a_streamed_body_is_not_cut(self):
        frontend = self.start_proxy(self.start_web_origin())
        size = 200_000
        reader = yield self.trickle(frontend, b"GET /big/%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        yield self.poll(lambda: parse_responses(bytes(reader.received)) or reader.closed, "the response", 1000)
        (response,) = parse_responses(bytes(reader.received))
        self.assertEqual(len(response.body), size)
        self.assertEqual(self.access_log.entries[-1].termination, "ok")
        self.assertFalse(reader.closed)

    @defer.inlineCallbacks
    def test_slow_steady_reader_of_a_last_response_is_not_cut(self):
        frontend = self.start_proxy(self.start_web_origin())
        size = 60_000  # written whole at once (no flow control below 64 KiB): the close waits for it to be read
        reader = yield self.trickle(frontend, b"GET /big/%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % size)
        yield self.poll(lambda: reader.closed, "the close", 1000)
        (response,) = parse_responses(bytes(reader.received))
        self.assertEqual(len(response.body), size)
        self.assertEqual(self.access_log.connections[-1].end, "client-close")

    @defer.inlineCallbacks
    def test_client_that_stops_reading_is_cut_by_timeout_client(self):
        frontend = self.start_proxy(self.start_web_origin())
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.addCleanup(sock.close)
        sock.connect(("127.0.0.1", self.proxy_port))
        yield self.poll(lambda: frontend.connections, "the proxy accepts")
        (proxy_side,) = frontend.connections
        proxy_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.send(b"GET /big/2000000 HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
        yield self.poll(lambda: self.access_log.connections, "the proxy cuts the client")
        (entry,) = self.access_log.entries
        self.assertEqual((entry.status, entry.termination), (200, "client-timeout"))
        self.assertLess(entry.bytes_out, 1_000_000)
        self.assertEqual(self.access_log.connections[0].end, "timeout")
        yield self.settle(frontend)  # the origin connection is dropped too: nothing left open
        self.assertEqual(frontend.pool.idle_count, 0)

    @defer.inlineCallbacks
    def test_upload_into_origin_that_stops_reading_is_504_server_timeout(self):
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        frontend = self.start_proxy(self.start_raw_origin(DeafOrigin))
        client = yield self.connect()
        size = 32 << 20
        client.send(b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % size)
        client.send(b"x" * size)  # more than the kernel buffers take: the proxy is left holding it
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 504)  # not a 408: the client was not the one stalling
        (entry,) = self.access_log.entries
        self.assertEqual((entry.status, entry.termination), (504, "server-timeout"))
        self.assertLess(entry.bytes_in, size)
        self.assertTrue(any("took none of the request body within timeout server" in e.get("detail", "")
                            for e in events))
        yield self.settle(frontend)
        self.assertEqual(self.access_log.connections[0].end, "server-error")

    @defer.inlineCallbacks
    def test_upload_into_slow_steady_origin_is_not_cut(self):
        origin = TrickleOrigin()
        self.addCleanup(origin.close)
        frontend = self.start_proxy(origin.port, server=0.2)
        client = yield self.connect()
        size = 200_000
        client.send(b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % size)
        yield self.poll(lambda: frontend.pool.in_use, "the proxy connects")
        (origin_side,) = frontend.pool.in_use
        origin_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.send(b"x" * size)
        (response,) = yield client.responses(1)
        self.assertEqual((response.status, response.body), (200, b"ok"))
        self.assertEqual(self.access_log.entries[0].termination, "ok")
