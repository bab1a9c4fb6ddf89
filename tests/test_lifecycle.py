"""Connection lifecycle: every way a client connection ends, the handlers that see it, and refusal."""

from __future__ import annotations

import socket
import struct

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rubrisproxy.config import BackendConfig, Timeouts
from rubrisproxy.frontend import ClientConnection, Frontend, drain
from rubrisproxy.lifecycle import (
    ConnectionEnd,
    ConnectionInfo,
    IConnectionHandler,
    ITerminationHandler,
    LifecycleHandlers,
    RefuseConnection,
)

from .helpers import ProxyTestCase, build_frontend, get
from .test_pinned import NTLMOrigin


@implementer(IConnectionHandler, ITerminationHandler)
class Recorder:
    """Records every connection opened and ended; refuses peers listed in ``refuse``."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.opened: list[ConnectionInfo] = []
        self.ended: list[tuple[ConnectionInfo, ConnectionEnd]] = []

    def connection_opened(self, connection: ConnectionInfo) -> None:
        self.opened.append(connection)
        if connection.peer in self.refuse:
            raise RefuseConnection("listed")

    def connection_ended(self, connection: ConnectionInfo, reason: ConnectionEnd) -> None:
        self.ended.append((connection, reason))


class TruncatingOrigin(Protocol):
    """Promises 100 bytes, sends 10, and closes."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        self.transport.loseConnection()


class EndCase(ProxyTestCase):
    """A proxy whose connections' ends are recorded."""

    def setUp(self) -> None:
        self.recorder = Recorder()

    def proxy(self, *ports: int, **settings: object) -> Frontend:
        frontend = self.start_proxy(*(ports or (self.start_web_origin(),)), **settings)
        frontend.handlers = LifecycleHandlers.of((self.recorder,))
        for name in ("max_reads", "max_writes"):
            if name in settings:
                setattr(frontend, name, settings[name])
        self.frontend = frontend
        return frontend

    @defer.inlineCallbacks
    def ended_with(self, reason: ConnectionEnd):  # type: ignore[no-untyped-def]
        yield self.poll(lambda: self.recorder.ended, "the termination handler was called")
        yield self.settle(self.frontend)
        ((info, got),) = self.recorder.ended  # exactly once
        self.assertEqual(got, reason)
        self.assertEqual(self.frontend.connection_ends, {reason.value: 1})
        self.assertEqual([r.end for r in self.access_log.connections], [reason.value])
        return info



class TerminationTests(EndCase):
    """Each reason produced by a real scenario on loopback, reported once."""

    @defer.inlineCallbacks
    def test_client_close(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.connect()
        client.send(get(b"/a"))
        yield client.responses(1)
        client.transport.loseConnection()
        info = yield self.ended_with(ConnectionEnd.CLIENT_CLOSE)
        self.assertEqual((info.requests, info.responses, info.client, info.proxied), (1, 1, "127.0.0.1", False))
        self.assertGreater(info.bytes_out, info.bytes_in)

    @defer.inlineCallbacks
    def test_the_handlers_a_connection_opened_with_hear_its_end_after_a_reload(self):  # type: ignore[no-untyped-def]
        frontend = self.proxy()
        client = yield self.connect()
        client.send(get(b"/a"))
        yield client.responses(1)
        newer = Recorder()
        frontend.handlers = LifecycleHandlers.of((newer,))  # as a reload that changes `handlers` does
        client.transport.loseConnection()
        yield self.ended_with(ConnectionEnd.CLIENT_CLOSE)  # heard by the first recorder, once
        self.assertEqual((newer.opened, newer.ended), ([], []))

    @defer.inlineCallbacks
    def test_without_connection_lines_handlers_and_counters_still_hear(self):  # type: ignore[no-untyped-def]
        self.proxy()
        self.access_log.writes_connections = False  # [access-log] connections = false
        client = yield self.connect()
        client.send(get(b"/a"))
        yield client.responses(1)
        client.transport.loseConnection()
        yield self.poll(lambda: self.recorder.ended, "the termination handler was called")
        yield self.settle(self.frontend)
        self.assertEqual(self.frontend.connection_ends, {"client-close": 1})
        self.assertEqual((len(self.access_log.entries), self.access_log.connections), (1, []))

    @defer.inlineCallbacks
    def test_server_close_on_drain(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.connect()
        client.send(get(b"/a"))
        yield client.responses(1)
        yield drain(self.frontend, grace=5, spread=0.0, close_code=1001)
        yield self.ended_with(ConnectionEnd.SERVER_CLOSE)

    @defer.inlineCallbacks
    def test_socket_read_closed_mid_request(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.connect()
        client.send(b"GET /half HTTP/1.1\r\nHost: x\r\n")
        yield self.poll(lambda: self.frontend.connections and next(iter(self.frontend.connections)).bytes_in, "read")
        client.transport.loseConnection()
        yield self.ended_with(ConnectionEnd.SOCKET_READ_CLOSED)

    @defer.inlineCallbacks
    def test_socket_write_error(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.connect()
        client.transport.pauseProducing()  # never reads: the response backs up
        client.send(get(b"/big/%d" % (64 << 20)))
        yield self.poll(lambda: any(c.current and c.current.response_head_sent for c in self.frontend.connections),
                        "the response started")
        sock = client.transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.transport.abortConnection()  # a reset while the proxy writes
        yield self.ended_with(ConnectionEnd.SOCKET_WRITE_ERROR)

    @defer.inlineCallbacks
    def test_max_reads(self):  # type: ignore[no-untyped-def]
        self.proxy(max_reads=2)
        client = yield self.connect()
        client.send(get(b"/1") + get(b"/2") + get(b"/3"))
        yield client.closed
        info = yield self.ended_with(ConnectionEnd.MAX_READS)
        self.assertEqual((info.requests, info.responses), (2, 2))
        self.assertEqual(client.received.count(b"HTTP/1.1 200"), 2)
        self.assertIn(b"Connection: close", client.received)

    @defer.inlineCallbacks
    def test_max_writes(self):  # type: ignore[no-untyped-def]
        self.proxy(max_writes=1)
        client = yield self.connect()
        client.send(get(b"/1"))
        yield client.closed
        yield self.ended_with(ConnectionEnd.MAX_WRITES)

    @defer.inlineCallbacks
    def test_protocol_read_error(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.connect()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        received = yield client.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 400"))
        info = yield self.ended_with(ConnectionEnd.PROTOCOL_READ_ERROR)
        self.assertEqual((info.requests, info.responses), (0, 1))

    @defer.inlineCallbacks
    def test_protocol_write_error(self):  # type: ignore[no-untyped-def]
        self.proxy(self.start_raw_origin(TruncatingOrigin), retries=0)
        client = yield self.connect()
        client.send(get(b"/"))
        received = yield client.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 200"))  # begun, never completed
        yield self.ended_with(ConnectionEnd.PROTOCOL_WRITE_ERROR)

    @defer.inlineCallbacks
    def test_server_error_when_the_pinned_server_connection_closes(self):  # type: ignore[no-untyped-def]
        self.proxy(self.start_raw_origin(NTLMOrigin))
        client = yield self.connect()
        client.send(get(b"/", b"Authorization: NTLM type1\r\n"))
        yield client.responses(1)
        (connection,) = self.frontend.connections
        connection.pinned.transport.loseConnection()
        yield client.closed
        yield self.ended_with(ConnectionEnd.SERVER_ERROR)

    @defer.inlineCallbacks
    def test_refused_by_the_connection_handler(self):  # type: ignore[no-untyped-def]
        self.recorder.refuse = ("127.0.0.1",)
        self.proxy()
        client = yield self.connect()
        client.send(get(b"/"))
        received = yield client.closed
        self.assertEqual(received, b"")
        yield self.ended_with(ConnectionEnd.SERVER_CLOSE)
        self.assertEqual(len(self.recorder.opened), 1)
        self.assertEqual(self.frontend.requests, 0)


class TimeoutTests(SynchronousTestCase):
    """A timeout ends the connection with TIMEOUT, on the frontend's clock."""

    def test_no_request_within_http_request(self) -> None:
        clock = Clock()
        recorder = Recorder()
        timeouts = Timeouts(client=5, http_request=5, http_keep_alive=2, connect=2, server=5)
        frontend = build_frontend(clock, BackendConfig(name="app"), timeouts=timeouts)
        frontend.handlers = LifecycleHandlers.of((recorder,))
        connection = ClientConnection(frontend)
        transport = StringTransport()
        connection.makeConnection(transport)
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([reason for _, reason in recorder.ended], [ConnectionEnd.TIMEOUT])
        self.assertEqual(frontend.connection_ends, {"timeout": 1})
        for call in clock.getDelayedCalls():
            call.cancel()


del reactor  # only the helpers' reactor is used here


class WebSocketEndTests(ProxyTestCase):
    """A WebSocket's end is its connection's end, in both modes."""

    @defer.inlineCallbacks
    def ended(self, mode: str, closer: str):  # type: ignore[no-untyped-def]
        from rubrisproxy.config import WebSocketConfig

        from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

        backend = EchoBackendFactory()
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)
        recorder = Recorder()
        frontend = self.start_proxy(port.getHost().port, websocket=WebSocketConfig(
            mode=mode, client_ping_interval=0, backend_ping_interval=0))
        frontend.handlers = LifecycleHandlers.of((recorder,))
        client = connect_client(self.proxy_port, "/")
        yield client.opened
        if closer == "client":
            client.sendClose(1000)
        else:
            client.sendMessage(b"close:1000:bye")
        yield client.closed
        yield self.poll(lambda: recorder.ended, "the termination handler was called")
        yield self.settle(frontend)
        self.assertEqual([(info.requests, info.responses) for info, _ in recorder.ended], [(1, 1)])  # the 101
        return [reason for _, reason in recorder.ended]

    @defer.inlineCallbacks
    def test_session_mode_knows_who_closed(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.ended("session", "server")), [ConnectionEnd.SERVER_CLOSE])
        self.assertEqual((yield self.ended("session", "client")), [ConnectionEnd.CLIENT_CLOSE])

    @defer.inlineCallbacks
    def test_a_tunnel_knows_who_closed_as_a_session_does(self):  # type: ignore[no-untyped-def]
        # The server ends the TCP connection after any close handshake; the close frames still say who began it.
        self.assertEqual((yield self.ended("tunnel", "server")), [ConnectionEnd.SERVER_CLOSE])
        self.assertEqual((yield self.ended("tunnel", "client")), [ConnectionEnd.CLIENT_CLOSE])


class LimitTests(EndCase):
    @defer.inlineCallbacks
    def test_the_last_request_allowed_is_read_whole(self):  # type: ignore[no-untyped-def]
        self.proxy(max_reads=1)
        client = yield self.connect()
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        yield self.poll(lambda: self.frontend.connections and next(iter(self.frontend.connections)).current,
                        "the request started")
        client.send(b"hello")
        received = yield client.closed
        self.assertTrue(received.endswith(b"hello"), received)
        yield self.ended_with(ConnectionEnd.MAX_READS)

    @defer.inlineCallbacks
    def test_a_last_response_that_fails_says_why(self):  # type: ignore[no-untyped-def]
        self.proxy(self.start_raw_origin(TruncatingOrigin), retries=0, max_writes=1)
        client = yield self.connect()
        client.send(get(b"/"))
        yield client.closed
        yield self.ended_with(ConnectionEnd.PROTOCOL_WRITE_ERROR)  # not max-writes
