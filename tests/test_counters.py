"""Byte counters over real loopback sockets: what crossed each socket, as the access log, the stats and /metrics
show it. A connection counts every byte read from and written to its client; a server every byte written to
and read from it; a frontend its connections' bytes, the open ones' included."""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry
from twisted.internet import defer
from twisted.internet.protocol import Protocol

from rubrisproxy.admin._metrics import ProxyCollector
from rubrisproxy.admin._stats import frontend_fields, server_fields
from rubrisproxy.config import WebSocketConfig
from rubrisproxy.frontend import Frontend
from rubrisproxy.websocket import ResumeBudget

from .helpers import MemoryAccessLog, ProxyTestCase, RawClient, get
from .test_forward import ForwardTests
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

MESSAGE = 1 << 20
MESSAGES = 5
PAYLOAD = MESSAGE * MESSAGES  # each way
#: Handshakes (a few hundred bytes each way), frame headers (at most 14 bytes per 64 KiB fragment) and closes.
OVERHEAD = 4096


def metric_bytes(frontend: Frontend) -> dict[str, float]:
    """``rubrisproxy_bytes_total`` by direction, as /metrics shows it."""
    registry = CollectorRegistry()
    registry.register(ProxyCollector([frontend], {}, ResumeBudget()))
    return {
        sample.labels["direction"]: sample.value
        for family in registry.collect() if family.name == "rubrisproxy_bytes"
        for sample in family.samples if sample.name == "rubrisproxy_bytes_total"
    }


class WebSocketCounterTests:
    """Both modes: 5 MiB each way through an echo backend; subclasses set ``mode``."""

    mode = "session"

    def within(self, value: float, what: str, low: int = PAYLOAD) -> None:
        self.assertGreaterEqual(value, low, what)  # type: ignore[attr-defined]
        self.assertLessEqual(value, low + OVERHEAD, what)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_megabytes_each_way_are_counted_on_every_view(self):  # type: ignore[no-untyped-def]
        port = listen_echo_backend(EchoBackendFactory())
        self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
        frontend = self.start_proxy(  # type: ignore[attr-defined]
            port.getHost().port,
            websocket=WebSocketConfig(mode=self.mode, client_ping_interval=0, backend_ping_interval=0),
        )
        client = connect_client(self.proxy_port, "/chat")  # type: ignore[attr-defined]
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)  # type: ignore[attr-defined]
        yield client.opened
        for i in range(MESSAGES):
            client.sendMessage(bytes([i]) * MESSAGE, isBinary=True)
        echoed = yield client.wait_messages(MESSAGES)
        self.assertEqual([len(payload) for payload, _ in echoed], [MESSAGE] * MESSAGES)  # type: ignore[attr-defined]
        # While it is open, the stats and /metrics already show what crossed it.
        live = frontend_fields(frontend)
        self.within(live["bytes_in"], "live stats, in")
        self.within(live["bytes_out"], "live stats, out")
        self.assertEqual(metric_bytes(frontend), {"in": live["bytes_in"], "out": live["bytes_out"]})  # type: ignore[attr-defined]
        client.sendClose(1000)
        yield client.closed
        yield self.settle(frontend)  # type: ignore[attr-defined]
        log: MemoryAccessLog = self.access_log  # type: ignore[attr-defined]
        (connection,) = log.connections
        self.within(connection.bytes_in, "connection line, in")
        self.within(connection.bytes_out, "connection line, out")
        (request,) = log.entries
        self.assertEqual(request.status, 101)  # type: ignore[attr-defined]
        # The WebSocket's line: its head and everything after it, which here is the whole connection.
        self.assertEqual((request.bytes_in, request.bytes_out), (connection.bytes_in, connection.bytes_out))  # type: ignore[attr-defined]
        ended = frontend_fields(frontend)
        self.assertEqual((ended["bytes_in"], ended["bytes_out"]), (connection.bytes_in, connection.bytes_out))  # type: ignore[attr-defined]
        self.assertEqual(metric_bytes(frontend), {"in": connection.bytes_in, "out": connection.bytes_out})  # type: ignore[attr-defined]
        (server,) = frontend.backend.servers
        fields = server_fields(server)
        self.within(fields["bytes_in"], "server, in")
        self.within(fields["bytes_out"], "server, out")


class SessionCounterTests(WebSocketCounterTests, ProxyTestCase):
    mode = "session"


class TunnelCounterTests(WebSocketCounterTests, ProxyTestCase):
    mode = "tunnel"


class _Recorder(Protocol):
    """An origin that answers one fixed response and keeps what it read."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    read = b""

    def dataReceived(self, data: bytes) -> None:
        type(self).read += data
        if b"\r\n\r\n" in type(self).read:
            self.transport.write(self.RESPONSE)


class HTTPCounterTests(ProxyTestCase):
    def setUp(self) -> None:
        _Recorder.read = b""
        self.addCleanup(setattr, _Recorder, "read", b"")

    @defer.inlineCallbacks
    def test_a_plain_get_counts_its_head_in(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_raw_origin(_Recorder))
        client: RawClient = yield self.connect()
        request = get(b"/counted")
        client.send(request)
        (response,) = yield client.responses(1)
        self.assertEqual(response.body, b"hello")
        client.transport.loseConnection()
        yield self.settle(frontend)
        (line,) = self.access_log.entries
        self.assertEqual((line.bytes_in, line.bytes_out), (len(request), len(client.received)))
        (connection,) = self.access_log.connections
        self.assertEqual((connection.bytes_in, connection.bytes_out), (len(request), len(client.received)))
        fields = frontend_fields(frontend)
        self.assertEqual((fields["bytes_in"], fields["bytes_out"]), (len(request), len(client.received)))
        # The server's: exactly what was written to it (the head, forwarding headers added) and read from it.
        (server,) = frontend.backend.servers
        self.assertEqual((server.bytes_in, server.bytes_out), (len(_Recorder.read), len(_Recorder.RESPONSE)))
        self.assertIn(b"GET /counted HTTP/1.1\r\n", _Recorder.read)

    @defer.inlineCallbacks
    def test_a_pipelined_pair_and_a_refused_request_count_every_byte_read(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_raw_origin(_Recorder))
        client: RawClient = yield self.connect()
        sent = get(b"/one") + b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n"
        client.send(sent)
        yield client.closed  # answered 200, then 400 and closed
        yield self.settle(frontend)
        (connection,) = self.access_log.connections
        self.assertEqual((connection.bytes_in, connection.bytes_out), (len(sent), len(client.received)))
        self.assertEqual([line.status for line in self.access_log.entries], [200, 400])
        # Every byte written is on a request's line, the proxy's own 400 included.
        self.assertEqual(sum(line.bytes_out for line in self.access_log.entries), len(client.received))


    @defer.inlineCallbacks
    def test_a_100_continue_is_on_its_requests_line(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin())
        client: RawClient = yield self.connect()
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        client.send(head)
        yield client.until(lambda data: data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        client.send(b"body")
        (_, response) = yield client.responses(2)
        self.assertEqual(response.status, 200)
        client.transport.loseConnection()
        yield self.settle(frontend)
        (line,) = self.access_log.entries
        self.assertEqual((line.bytes_in, line.bytes_out), (len(head) + 4, len(client.received)))


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class ConnectCounterTests(ForwardTests):
    """A CONNECT tunnel moving 1 MiB each way, through a forward-proxy frontend (loopback allowed by a rule)."""

    rules = '[frontends.out.forward]\nconnect-ports = [{tls_port}]\nallow-hosts = ["127.0.0.1"]\n'

    def setUp(self) -> None:
        self.echo_port = self.start_raw_origin(_Echo)
        self.rules = self.rules.replace("{tls_port}", "{tls_port}, " + str(self.echo_port))
        super().setUp()

    @defer.inlineCallbacks
    def test_a_tunnel_counts_both_ways(self):  # type: ignore[no-untyped-def]
        frontend = self.parts.frontends["out"].frontend
        frontend.access_log = log = MemoryAccessLog()
        client: RawClient = yield self.connect()
        connect = f"CONNECT 127.0.0.1:{self.echo_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        client.send(connect)
        yield client.until(lambda data: data == established)
        size = 1 << 20
        client.send(b"t" * size)
        yield client.until(lambda data: len(data) == len(established) + size)
        client.transport.loseConnection()
        yield self.poll(lambda: log.connections, "the connection line")
        (connection,) = log.connections
        self.assertEqual((connection.bytes_in, connection.bytes_out), (len(connect) + size, len(established) + size))
        (line,) = log.entries
        self.assertEqual((line.method, line.status), ("CONNECT", 200))
        self.assertEqual((line.bytes_in, line.bytes_out), (len(connect) + size, len(established) + size))
        fields = frontend_fields(frontend)
        self.assertEqual((fields["bytes_in"], fields["bytes_out"]), (len(connect) + size, len(established) + size))
