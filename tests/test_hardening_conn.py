"""Connection-level hardening over loopback: pipelining, inactivity timeouts in each direction, accept backoff."""

from __future__ import annotations

import errno
import json
import os
import socket
import ssl
import subprocess
import sys
import time

from twisted.internet import defer, reactor, task
from twisted.internet import ssl as twisted_ssl
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource

from rubrisproxy._compat import guard_accepts, unsent
from rubrisproxy.accepting import FIRST_PAUSE, LOG_INTERVAL, MAX_PAUSE, AcceptBackoff
from rubrisproxy.config import Timeouts
from rubrisproxy.frontend import ClientConnection
from rubrisproxy.frontend._phase import Phase
from rubrisproxy.frontend._pipeline import PIPELINE_DEPTH
from rubrisproxy.http import RequestParser
from rubrisproxy.http._request import _HEAD_SLICE

from .helpers import ProxyTestCase, get, parse_responses, run_reactor_for
from .test_framing import make_frontend
from .test_tls_origin import make_certificates


class DeafOrigin(Protocol):
    """Accepts a connection and never reads from it."""

    #: A paused connection is in none of the reactor's sets: without a reference here, the garbage collector
    #: would close it (and the proxy would see the origin close).
    instances: list[DeafOrigin] = []

    def connectionMade(self) -> None:
        DeafOrigin.instances.append(self)
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.transport.pauseProducing()


class HeldOrigin(Protocol):
    """Answers nothing until :attr:`released`; then answers every request it got, in order."""

    released = False
    instances: list[HeldOrigin] = []

    def connectionMade(self) -> None:
        self.pending = 0
        self.buffer = b""
        self.paths: list[bytes] = []
        HeldOrigin.instances.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.pending += 1
            self.paths.append(head.split(b" ")[1])
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
    def test_pipelined_requests_with_bodies_are_answered_in_order(self):
        # Bodies, chunked and not, cut anywhere by the depth's hold: each reaches its own request whole.
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        requests = []
        for i in range(300):
            body = b"%d:" % i + b"b" * (i % 97)
            if i % 3:
                requests.append(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                requests.append(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        client.send(b"".join(requests))
        yield client.until(lambda data: answered(data) >= 300)
        responses = parse_responses(client.received)
        self.assertEqual([r.body for r in responses], [b"%d:" % i + b"b" * (i % 97) for i in range(300)])

    @defer.inlineCallbacks
    def test_pipelined_requests_wait_unparsed_past_the_depth_and_reading_stops(self):
        HeldOrigin.released, HeldOrigin.instances = False, []
        self.addCleanup(setattr, HeldOrigin, "instances", [])
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
        count, size = 150, 30_000  # 4.5 MB of responses, each small enough to be written without flow control
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
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
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
        # Small, and set before listen() so that accepted sockets start with it: the kernel holds little of
        # the body beyond what the origin has read, so the last of it is read soon after it is sent.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
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
        self.addCleanup(DeafOrigin.instances.clear)
        client = yield self.connect()
        size = 2 << 20
        client.send(b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % size)
        yield self.poll(lambda: frontend.pool.in_use, "the proxy connects")
        (origin_side,) = frontend.pool.in_use
        origin_side.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.send(b"x" * size)  # more than the buffers between the proxy and the origin take
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
        frontend = self.start_proxy(origin.port, server=0.3)
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


class FakePort:
    """What AcceptBackoff drives: a port that reads or not."""

    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class AcceptBackoffTests(unittest.TestCase):
    """Out of descriptors, a listener pauses accepting with a growing pause, and says so once per interval."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.port = FakePort()
        self.backoff = AcceptBackoff(self.port, self.clock, "frontend web")
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict) -> None:
        if event.get("log_namespace", "").startswith("rubrisproxy.accepting"):
            self.lines.append(formatEvent(event))

    def test_pause_doubles_while_failing_and_resets_once_accepting(self):
        pauses = []
        for _ in range(7):
            self.backoff.exhausted(errno.EMFILE)
            self.assertFalse(self.port.reading)
            (call,) = self.clock.getDelayedCalls()
            pauses.append(call.getTime() - self.clock.seconds())
            self.clock.advance(pauses[-1])
            self.assertTrue(self.port.reading)
        expected = [FIRST_PAUSE * 2 ** i for i in range(5)] + [MAX_PAUSE, MAX_PAUSE]
        self.assertEqual([round(p, 6) for p in pauses], [round(p, 6) for p in expected])
        self.backoff.accepted()
        self.backoff.exhausted(errno.EMFILE)
        self.assertAlmostEqual(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds(), FIRST_PAUSE)

    def test_one_line_per_interval_however_many_failures(self):
        minutes = 5
        while self.clock.seconds() < minutes * 60:
            self.backoff.exhausted(errno.EMFILE)  # every retry fails at once
            self.clock.advance(MAX_PAUSE)
        self.assertLessEqual(len(self.lines), minutes * 60 / LOG_INTERVAL + 1)
        self.assertIn("accept failed with EMFILE (Too many open files): accepting paused for 0.05s", self.lines[0])
        self.assertIn("(1 pauses since the last report", self.lines[0])
        self.assertIn("(10 pauses since the last report", self.lines[1])  # the ones it did not log are counted

    def test_closing_the_port_cancels_the_retry(self):
        self.backoff.exhausted(errno.ENFILE)
        self.backoff.closed()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.backoff.exhausted(errno.ENFILE)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ExhaustingListener:
    """Stands in for a listening socket: accept(2) fails with ``error`` while set, else the real one answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.error: int | None = errno.EMFILE

    def accept(self):  # type: ignore[no-untyped-def]
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return self.sock.accept()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.sock, name)


class CompatTests(unittest.TestCase):
    """Each use of Twisted's internals in rubrisproxy._compat, against the installed Twisted."""

    @defer.inlineCallbacks
    def test_guard_accepts_turns_exhaustion_into_a_quiet_pause(self):
        lines: list[str] = []
        observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        accepted: list[Protocol] = []
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False
        factory.buildProtocol = lambda addr: accepted.append(Protocol()) or accepted[-1]  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        fake = ExhaustingListener(port.socket)
        port.socket = fake
        failures: list[int] = []
        closes: list[bool] = []
        self.assertTrue(guard_accepts(port, failures.append, lambda: None, lambda: closes.append(True)))
        self.assertFalse(guard_accepts(object(), failures.append, lambda: None, lambda: None))
        self.assertEqual(port.getHost().port, fake.sock.getsockname()[1])  # the rest is the real socket's
        client = socket.socket()
        self.addCleanup(client.close)
        client.connect(("127.0.0.1", port.getHost().port))
        yield run_reactor_for(3)
        self.assertEqual(failures[:1], [errno.EMFILE])  # the guard heard it; Twisted saw only EAGAIN
        self.assertEqual([line for line in lines if "EMFILE" in line or "accept" in line], [])
        self.assertEqual(accepted, [])
        fake.error = None
        yield self.poll_accepted(accepted)
        yield port.stopListening()
        self.assertEqual(closes, [True])

    @defer.inlineCallbacks
    def poll_accepted(self, accepted):  # type: ignore[no-untyped-def]
        for _ in range(100):
            if accepted:
                return
            yield run_reactor_for(1)
        self.fail("never accepted")

    @defer.inlineCallbacks
    def test_unsent_counts_what_a_tcp_connection_holds(self):
        self.assertEqual(unsent(StringTransport()), 0)  # a transport that cannot tell
        server = Protocol()
        factory = Factory.forProtocol(Protocol)
        factory.buildProtocol = lambda addr: server  # type: ignore[method-assign]
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(sock.close)
        sock.connect(("127.0.0.1", port.getHost().port))
        sock.setblocking(False)
        yield run_reactor_for(2)
        server.transport.write(b"x" * 4_000_000)
        yield run_reactor_for(2)
        held = unsent(server.transport)
        self.assertGreater(held, 0)
        self.assertLess(held, 4_000_000)
        while True:
            try:
                if not sock.recv(1 << 20):
                    break
            except BlockingIOError:
                if not unsent(server.transport):
                    break
                yield run_reactor_for(1)
        self.assertEqual(unsent(server.transport), 0)
        server.transport.abortConnection()


    @defer.inlineCallbacks
    def test_unsent_looks_through_tls_to_the_tcp_connection(self):
        ca_pem, key_pem, cert_pem = make_certificates()
        server = Protocol()
        factory = Factory.forProtocol(Protocol)
        factory.buildProtocol = lambda addr: server  # type: ignore[method-assign]
        factory.noisy = False
        options = twisted_ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
        port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", port.getHost().port))
        raw.setblocking(False)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client = context.wrap_socket(raw, do_handshake_on_connect=False)
        self.addCleanup(client.close)
        for _ in range(200):  # the handshake, a step at a time, the reactor serving the other side
            try:
                client.do_handshake()
                break
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                yield run_reactor_for(1)
        server.transport.write(b"x" * 4_000_000)
        yield run_reactor_for(2)
        self.assertGreater(unsent(server.transport), 0)  # encrypted bytes the kernel has not taken
        received = 0
        while received < 4_000_000:
            try:
                received += len(client.recv(1 << 20))
            except (ssl.SSLWantReadError, BlockingIOError):
                yield run_reactor_for(1)
        self.assertEqual(unsent(server.transport), 0)
        server.transport.abortConnection()


class OutOfDescriptorsTests(unittest.TestCase):
    """A real listener in a process whose RLIMIT_NOFILE is reached while clients keep arriving."""

    def test_log_volume_is_bounded_and_accepting_resumes(self):
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.emfile_server", "guarded", "2"], stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        port = int(process.stdout.readline())  # type: ignore[union-attr]
        clients = []
        started = time.monotonic()
        while time.monotonic() - started < 1.8:  # a steady flood: about 300 clients
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
            time.sleep(0.005)
        output, _ = process.communicate(timeout=30)
        for client in clients:
            client.close()
        report = json.loads(output)
        about_accepting = [line for line in report["lines"] if "accept" in line or "EMFILE" in line]
        self.assertEqual(len(about_accepting), 1, about_accepting)
        self.assertIn("test listener: accept failed with EMFILE", about_accepting[0])
        self.assertGreater(report["accepted"], 4)  # once descriptors were free again, it accepted again


class BufferedTransport(StringTransport):
    """A StringTransport that says how many written bytes it still holds, as a TCP transport does."""

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0


class InactivityClockTests(unittest.TestCase):
    """The same semantics as :class:`InactivityTimeoutTests`, to the second, with a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.frontend, self.connector = make_frontend(
            self.clock, timeouts=Timeouts(client=30, http_request=10, http_keep_alive=5, connect=5, server=60))
        self.protocol = ClientConnection(self.frontend)
        self.transport = BufferedTransport()
        self.protocol.makeConnection(self.transport)

    def test_client_timeout_counts_time_without_progress(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        (origin,) = self.connector.connections
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
        self.transport._tempDataLen = 90_000  # the client is behind: its buffer filled and paused the origin
        origin.gate.pauseProducing()
        self.clock.advance(29)
        self.transport._tempDataLen = 80_000  # it reads a little
        self.clock.advance(2)
        self.clock.advance(28)  # 59 s after it fell behind, yet it read within each timeout
        self.transport._tempDataLen = 70_000
        self.clock.advance(31)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.frontend.access_log.entries, [])
        self.clock.advance(30)  # no progress for a whole timeout: cut
        (entry,) = self.frontend.access_log.entries
        self.assertEqual(entry.termination, "client-timeout")

    def test_a_server_not_taking_the_body_runs_timeout_server_not_timeout_client(self):
        self.protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        (origin,) = self.connector.connections
        self.protocol.gate.pauseProducing()  # what the origin transport does when its buffer fills
        self.clock.advance(59.9)  # far past timeout client
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.2)
        (response,) = parse_responses(self.transport.value())
        self.assertEqual(response.status, 504)
        self.assertEqual(self.frontend.access_log.entries[-1].termination, "server-timeout")

    def test_client_timeout_restarts_when_the_server_takes_the_body_again(self):
        origin_transport = BufferedTransport()
        self.connector.connect = lambda server, protocol: (  # type: ignore[method-assign]
            protocol.makeConnection(origin_transport), self.connector.connections.append(protocol),
            defer.succeed(protocol))[-1]
        origin_transport._tempDataLen = 150  # what it is sent waits: the origin takes nothing
        self.protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        self.protocol.gate.pauseProducing()
        self.clock.advance(45)
        origin_transport._tempDataLen = 0  # it took everything: Twisted resumes the client
        self.protocol.gate.resumeProducing()
        self.clock.advance(29.9)  # a whole timeout client from the resume, not from the last read
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.2)
        self.assertEqual(parse_responses(self.transport.value())[0].status, 408)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class PipelinedHeadSizeTests(unittest.TestCase):
    """Each pipelined request's head is measured on its own, however many arrive in one read."""

    def test_large_heads_pipelined_in_one_read_are_not_refused(self):
        frontend, connector = make_frontend(Clock())
        protocol = ClientConnection(frontend)
        transport = StringTransport()
        protocol.makeConnection(transport)
        head = b"GET /%d HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 30_000 + b"\r\n\r\n"
        data = b"".join(head % i for i in range(4))  # 120 kB of heads, each under the 40 kB limit
        protocol.dataReceived(data[:-100])  # the read ends inside the fourth head
        protocol.dataReceived(data[-100:])
        for _ in range(4):
            connector.connections[-1].dataReceived(OK)  # the one pooled connection, or a new one
        self.assertEqual([r.status for r in parse_responses(transport.value())], [200, 200, 200, 200])
        self.assertFalse(transport.disconnecting)

    def test_a_head_over_the_limit_is_still_refused_when_pipelined(self):
        frontend, connector = make_frontend(Clock())
        protocol = ClientConnection(frontend)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(get(b"/ok") + b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 50_000)
        connector.connections[0].dataReceived(OK)
        self.assertEqual([r.status for r in parse_responses(transport.value())], [200, 431])
        self.assertTrue(transport.disconnecting)


class HoldingHandler:
    """Holds the parser after every ``every`` requests."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.targets: list[bytes] = []
        self.parser: RequestParser

    def request_head(self, head) -> None:  # type: ignore[no-untyped-def]
        self.targets.append(head.target)
        if len(self.targets) % self.every == 0:
            self.parser.held = True

    def request_body(self, data: bytes) -> None:
        pass

    def request_end(self) -> None:
        pass

    def request_upgraded(self, rest: bytes) -> None:
        pass


class ParserHoldTests(unittest.TestCase):
    def test_held_parser_returns_the_rest_unparsed_and_picks_up_from_it(self):
        handler = HoldingHandler(every=10)
        handler.parser = parser = RequestParser(handler)
        data = b"".join(get(b"/%d" % i) for i in range(100))
        rest = parser.feed(data)
        self.assertGreaterEqual(len(handler.targets), 10)
        self.assertLess(len(handler.targets), 10 + _HEAD_SLICE // len(get(b"/0")) + 1)
        self.assertTrue(data.endswith(rest) and rest)
        while rest:
            parser.held = False
            rest = parser.feed(rest)
        self.assertEqual(handler.targets, [b"/%d" % i for i in range(100)])


class PhaseTests(unittest.TestCase):
    """A client connection's one state, and the moves its table allows."""

    def setUp(self) -> None:
        self.frontend, self.connector = make_frontend(Clock())
        self.protocol = ClientConnection(self.frontend)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_a_refused_upgrade_goes_back_to_reading(self):
        self.assertIs(self.protocol._phase, Phase.OPENING)  # its first read says HTTP/1.1 or HTTP/2
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertIs(self.protocol._phase, Phase.READING)
        self.protocol.dataReceived(b"Host: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
        self.assertIs(self.protocol._phase, Phase.UPGRADING)
        self.assertTrue(self.protocol.gate.paused_for("upgrade"))
        self.connector.connections[0].dataReceived(OK)
        self.assertIs(self.protocol._phase, Phase.READING)
        self.assertFalse(self.protocol.gate.paused_for("upgrade"))
        self.protocol.dataReceived(get(b"/next"))
        self.connector.connections[-1].dataReceived(OK)
        self.assertEqual([r.status for r in parse_responses(self.transport.value())], [200, 200])

    def test_a_close_begun_while_an_upgrade_waits_still_releases_its_read_pause(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
        self.protocol.drain()
        self.assertIs(self.protocol._phase, Phase.CLOSING)
        self.connector.connections[0].dataReceived(OK)
        self.assertFalse(self.protocol.gate.paused_for("upgrade"))
        self.assertTrue(self.transport.disconnecting)

    def test_nothing_follows_lost(self):
        self.protocol.connectionLost()
        self.assertIs(self.protocol._phase, Phase.LOST)
        self.protocol.close()
        self.protocol.drain()
        self.assertIs(self.protocol._phase, Phase.LOST)
