"""What a client's connection, its requests and its server connections leave as they end: nothing for Python's cyclic
collector, whose full pass walks every long-lived connection the proxy holds (8,000 open sessions: ~300 ms), so
cyclic garbage made per request or per connection costs every client latency. Each trial opens, uses and ends the
thing on 127.0.0.1 with the collector off; the WebSocket sessions', tunnels' and dead servers' legs are in
test_resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from h2.errors import ErrorCodes
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol

from rubrisproxy.config import PoolSettings, WebSocketConfig
from rubrisproxy.frontend import Frontend

from .h2client import H2Client
from .helpers import ProxyTestCase, RawClient, get, our_cyclic_garbage, reference, run_reactor_for
from .test_http2 import H2Case, _Silent, ws_frame
from .test_pinned import NTLMOrigin
from .test_websocket import upgrade
from .wsecho import EchoBackendFactory, listen_echo_backend

#: Besides the proxy's own, the HTTP/2 library's objects: an HTTP/2 connection's frame machine is the client
#: connection's (its streams, its HPACK tables).
_H2 = ("rubrisproxy", "h2", "hpack")


class _Answering(Protocol):
    """An origin that answers each request (a GET, no body) with a keep-alive 200, and whose connections a test can
    close."""

    connections: list[_Answering] = []

    def connectionMade(self) -> None:
        _Answering.connections.append(self)
        self._read = b""

    def dataReceived(self, data: bytes) -> None:
        self._read += data
        while b"\r\n\r\n" in self._read:
            _, self._read = self._read.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class _HangingUp(Protocol):
    """An origin that closes each connection as the request comes, unanswered (its process died meanwhile)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()


class _Echo(Protocol):
    """A TCP service that sends back what it reads (behind a CONNECT tunnel)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def _dead_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number: int = port.getHost().port
    port.stopListening()
    return number


class Http2Tests(H2Case):
    """A client's HTTP/2 connection: its streams (each an exchange), its timers and watch, and h2's frame machine."""

    def setUp(self) -> None:
        super().setUp()
        self.origin = self.start_raw_origin(_Answering)
        _Answering.connections = []

    @defer.inlineCallbacks
    def opened(self, client: H2Client | None = None):  # type: ignore[no-untyped-def]
        """A connection with a stream answered (the pool's connection made), then the collector off; the client,
        and weak references to the proxy's side of it (the client connection and its HTTP/2 relay)."""
        client = yield self.h2(client)
        yield self.done(client, client.request(b"/first"))
        self.collector_off()
        (connection,) = self.frontend.connections
        return client, (reference(connection), reference(connection.relay))

    @defer.inlineCallbacks
    def ended(self, connection: tuple[Callable[[], object | None], ...]):  # type: ignore[no-untyped-def]
        yield freed(self, self.frontend, *connection, ticks=2000)
        self.assertEqual(our_cyclic_garbage(*_H2), [])

    @defer.inlineCallbacks
    def test_streams_answered_then_the_client_closes(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client, connection = yield self.opened()
        streams = [client.request(b"/%d" % i) for i in range(4)]
        yield self.done(client, *streams)
        self.assertEqual([client.answer(s).body for s in streams], [b"ok"] * 4)
        self.assertEqual(our_cyclic_garbage(*_H2), [])  # each stream went as it ended, not with its connection
        client.transport.loseConnection()
        yield self.ended(connection)

    @defer.inlineCallbacks
    def test_a_stream_reset_mid_response(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_web_origin()
        self.proxy()
        client, connection = yield self.opened(H2Client(acknowledge=False))  # the windows stay closed
        stream = client.request(b"/big/5000000")
        yield self.poll(lambda: client.answer(stream).body, "the response begun")
        client.reset(stream)
        yield self.poll(lambda: len(self.access_log.entries) == 2, "the exchange's end")
        self.assertEqual(self.access_log.entries[1].termination, "client-abort")
        yield run_reactor_for(3)
        self.assertEqual(our_cyclic_garbage(*_H2), [])  # the stream, its exchange and the origin connection it cut
        client.transport.loseConnection()
        yield self.ended(connection)

    @defer.inlineCallbacks
    def test_goaway_from_the_client(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client, connection = yield self.opened()
        client.h2.close_connection(ErrorCodes.NO_ERROR)
        client.transport.write(client.h2.data_to_send())
        yield self.ended(connection)
        self.assertEqual(self.frontend.connection_ends, {"client-close": 1})

    @defer.inlineCallbacks
    def test_goaway_with_a_stream_in_progress(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        self.proxy()
        client = yield self.h2()
        self.collector_off()
        client.request(b"/slow")
        yield self.poll(lambda: _Silent.connections, "the origin got the request")
        (proxied,) = self.frontend.connections
        connection = (reference(proxied), reference(proxied.relay))
        del proxied
        client.h2.close_connection(ErrorCodes.NO_ERROR)
        client.transport.write(client.h2.data_to_send())
        yield self.ended(connection)

    @defer.inlineCallbacks
    def test_an_idle_connection_timed_out(self):  # type: ignore[no-untyped-def]
        self.proxy(http_keep_alive=0.3)
        client, connection = yield self.opened()
        yield self.poll(lambda: client.lost, "the idle connection closed", ticks=2000)
        yield self.ended(connection)
        self.assertEqual(self.frontend.connection_ends, {"timeout": 1})


def freed(case: ProxyTestCase, frontend: Frontend, *connection: Callable[[], object | None], ticks: int = 500) -> Any:
    """Wait until ``frontend`` has no connection or WebSocket left and what ``connection`` refers to is gone. The
    collector being off, gone means freed by reference counting (a cycle would keep it: the wait fails); an origin
    connection the end aborted lets go of what it held a turn later, in its ``connectionLost``."""
    return case.poll(lambda: not frontend.connections and not frontend.websockets
                     and all(ref() is None for ref in connection), "the connection's end, and it freed", ticks)


class Http1Tests(ProxyTestCase):
    """A client's HTTP/1.1 keep-alive connection, its exchanges, and the origin connections they use."""

    @defer.inlineCallbacks
    def opened(self, origin: int, **overrides: object):  # type: ignore[no-untyped-def]
        """A proxy to ``origin`` and a client connection to it, the collector off; the client, and a weak reference
        to the proxy's side of it."""
        self.frontend = self.start_proxy(origin, **overrides)  # type: ignore[arg-type]
        self.collector_off()
        client = yield self.connect()
        yield self.poll(lambda: self.frontend.connections, "the connection accepted")
        (connection,) = self.frontend.connections
        return client, reference(connection)

    @defer.inlineCallbacks
    def ended(self, client: RawClient, connection: Callable[[], object | None], abort: bool = False):  # type: ignore[no-untyped-def]
        """The client closes (or resets, with ``abort``): the connection is freed by reference counting."""
        if abort:
            client.transport.abortConnection()
        else:
            client.transport.loseConnection()
        yield freed(self, self.frontend, connection)
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_requests_then_the_client_closes(self):  # type: ignore[no-untyped-def]
        client, connection = yield self.opened(self.start_web_origin())
        client.send(get(b"/a") + get(b"/status/404") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        responses = yield client.responses(3)
        self.assertEqual([r.status for r in responses], [200, 404, 200])
        yield self.ended(client, connection)

    @defer.inlineCallbacks
    def test_a_request_refused_with_400(self):  # type: ignore[no-untyped-def]
        client, connection = yield self.opened(self.start_web_origin())
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 400)
        yield self.ended(client, connection)

    @defer.inlineCallbacks
    def test_the_client_gone_mid_response(self):  # type: ignore[no-untyped-def]
        """The response half sent: the exchange, the last one the connection took, goes with it."""
        client, connection = yield self.opened(self.start_web_origin())
        client.send(get(b"/big/5000000"))
        yield client.until(lambda data: len(data) > 100000)
        yield self.ended(client, connection, abort=True)

    @defer.inlineCallbacks
    def test_a_request_body_timed_out_with_408(self):  # type: ignore[no-untyped-def]
        client, connection = yield self.opened(self.start_web_origin(), client=0.3)
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly some")
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 408)
        yield self.ended(client, connection)

    @defer.inlineCallbacks
    def test_a_502_from_an_origin_that_hung_up(self):  # type: ignore[no-untyped-def]
        client, connection = yield self.opened(self.start_raw_origin(_HangingUp), retries=0)
        client.send(get())
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 502)
        yield self.ended(client, connection)

    @defer.inlineCallbacks
    def test_a_503_from_an_origin_that_is_not_there(self):  # type: ignore[no-untyped-def]
        """Its connection refused: the connection attempt's parts (its factory, connector and client transport, and
        the origin connection never connected) go too."""
        client, connection = yield self.opened(_dead_port(), retries=0)
        client.send(get())
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 503)
        self.assertEqual(our_cyclic_garbage(), [])
        yield self.ended(client, connection)

    @defer.inlineCallbacks
    def test_a_504_timeout(self):  # type: ignore[no-untyped-def]
        _Silent.connections = []
        client, connection = yield self.opened(self.start_raw_origin(_Silent), server=0.3)
        client.send(get())
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 504)
        yield self.poll(lambda: not self.frontend.pool.in_use, "the origin connection's end")
        self.assertEqual(our_cyclic_garbage(), [])
        yield self.ended(client, connection)

    @defer.inlineCallbacks
    def test_an_idle_pool_connection_closed_by_its_origin(self):  # type: ignore[no-untyped-def]
        """The pool's idle connection keeps nothing of the request it served (its client connection goes as it
        ends), and goes itself when its origin closes it."""
        _Answering.connections = []
        client, connection = yield self.opened(self.start_raw_origin(_Answering),
                                               pool=PoolSettings(max_idle_per_server=4))
        client.send(get())
        yield client.responses(1)
        yield self.ended(client, connection)
        self.assertEqual(self.frontend.pool.idle_count, 1)
        (pooled,) = [reference(idle) for each in self.frontend.pool._idle.values() for idle in each]
        _Answering.connections[0].transport.loseConnection()
        yield self.poll(lambda: not self.frontend.pool.idle_count, "the idle connection's end")
        yield run_reactor_for(2)
        self.assertIsNone(pooled())
        self.assertEqual(our_cyclic_garbage(), [])


class RefusedUpgradeTests(ProxyTestCase):
    """A WebSocket upgrade that never became one: its hand-over, made as its checks passed, goes with its request."""

    @defer.inlineCallbacks
    def refused(self, origin: int, status: int, mode: str):  # type: ignore[no-untyped-def]
        self.frontend = self.start_proxy(origin, retries=0, websocket=WebSocketConfig(mode=mode))
        self.collector_off()
        client = yield self.connect()
        yield self.poll(lambda: self.frontend.connections, "the connection accepted")
        connection = reference(next(iter(self.frontend.connections)))
        client.send(upgrade())
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, status)
        client.transport.loseConnection()
        yield freed(self, self.frontend, connection)
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_refused_by_the_backend(self):  # type: ignore[no-untyped-def]
        for mode in ("session", "tunnel"):
            port = listen_echo_backend(EchoBackendFactory(refuse=403))
            self.addCleanup(port.stopListening)
            yield self.refused(port.getHost().port, 403, mode)

    def test_no_backend_there(self):  # type: ignore[no-untyped-def]
        return self.refused(_dead_port(), 503, "session")


class PinnedTests(ProxyTestCase):
    """A client connection pinned to its server connection (connection-oriented auth), each naming the other."""

    @defer.inlineCallbacks
    def pinned(self):  # type: ignore[no-untyped-def]
        self.frontend = self.start_proxy(self.start_raw_origin(NTLMOrigin))
        self.collector_off()
        client = yield self.connect()
        for count, authorization in enumerate((b"NTLM type1", b"NTLM type3"), 1):
            client.send(get(b"/secure", b"Authorization: " + authorization + b"\r\n"))
            responses = yield client.responses(count)
        self.assertEqual(responses[-1].status, 200)
        (connection,) = self.frontend.connections
        self.assertIsNotNone(connection.pinned)
        return client, reference(connection), reference(connection.pinned)

    @defer.inlineCallbacks
    def ended(self, *refs: Callable[[], object | None]):  # type: ignore[no-untyped-def]
        yield self.poll(lambda: not self.frontend.connections and not self.frontend.pool.in_use, "both ends")
        yield run_reactor_for(2)
        self.assertEqual([ref() for ref in refs], [None, None])
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_the_client_closes(self):  # type: ignore[no-untyped-def]
        client, *refs = yield self.pinned()
        client.transport.loseConnection()
        yield self.ended(*refs)

    @defer.inlineCallbacks
    def test_the_server_closes(self):  # type: ignore[no-untyped-def]
        client, *refs = yield self.pinned()
        refs[1]().transport.loseConnection()
        yield client.closed
        yield self.ended(*refs)


class ConnectTunnelTests(ProxyTestCase):
    """A forward proxy's CONNECT tunnels (the WebSocket machinery's ``Tunnel``), and its refusals."""

    def setUp(self) -> None:
        self.echo_port = self.start_raw_origin(_Echo)
        self.dead_port = _dead_port()
        rules = (f'[frontends.out.forward]\nconnect-ports = [{self.echo_port}, {self.dead_port}]\n'
                 'allow-hosts = ["127.0.0.1"]\n')
        service = self.start_from_config(
            f'[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n{rules}\n')
        running = service.parts.frontends["out"]  # type: ignore[attr-defined]
        self.proxy_port = running.ports[0].getHost().port
        self.frontend = running.frontend
        self.collector_off()

    @defer.inlineCallbacks
    def tunnel(self):  # type: ignore[no-untyped-def]
        """A tunnel to the echo service, used once; the client and a weak reference to the proxy's side of it."""
        client = yield self.connect()
        yield self.poll(lambda: self.frontend.connections, "the connection accepted")
        (connection,) = self.frontend.connections
        client.send(f"CONNECT 127.0.0.1:{self.echo_port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        yield client.until(lambda data: data.endswith(b"\r\n\r\n"))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200 Connection established"))
        client.received = b""
        client.send(b"through")
        yield client.until(lambda data: data == b"through")
        return client, reference(connection)

    @defer.inlineCallbacks
    def ended(self, connection: Callable[[], object | None]):  # type: ignore[no-untyped-def]
        yield freed(self, self.frontend, connection)
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_a_tunnel_the_client_closes(self):  # type: ignore[no-untyped-def]
        client, connection = yield self.tunnel()
        client.transport.loseConnection()
        yield self.ended(connection)

    @defer.inlineCallbacks
    def test_a_tunnel_the_client_resets(self):  # type: ignore[no-untyped-def]
        client, connection = yield self.tunnel()
        client.transport.abortConnection()
        yield self.ended(connection)

    @defer.inlineCallbacks
    def refused(self, port: int, status: bytes):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        yield self.poll(lambda: self.frontend.connections, "the connection accepted")
        connection = reference(next(iter(self.frontend.connections)))
        client.send(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        yield client.until(lambda data: b"\r\n\r\n" in data)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 " + status), client.received[:40])
        client.transport.loseConnection()
        yield self.ended(connection)

    def test_a_connect_to_a_port_not_allowed(self):  # type: ignore[no-untyped-def]
        return self.refused(1, b"403")

    def test_a_connect_to_nothing_listening(self):  # type: ignore[no-untyped-def]
        return self.refused(self.dead_port, b"502")


class Http2WebSocketTests(H2Case):
    """A WebSocket carried by an HTTP/2 stream (RFC 8441), in each mode: once it ends, its stream, its hand-over, its
    relay and its backend connection go by reference counting, while the client's connection stays."""

    mode = "tunnel"

    @defer.inlineCallbacks
    def websocket(self, client: H2Client, backend: EchoBackendFactory, logged: int):  # type: ignore[no-untyped-def]
        """A WebSocket on a new stream: an echo, then the client's close with END_STREAM; returns once it has ended."""
        stream = client.request(b"/chat", method=b"CONNECT", end=False, headers=[
            (b":protocol", b"websocket"), (b"sec-websocket-version", b"13")])
        yield self.poll(lambda: client.answer(stream).headers, "the answer to the extended CONNECT")
        client.send_body(stream, ws_frame(b"hello"), end=False)
        yield self.poll(lambda: b"hello" in client.answer(stream).body, "the echo")
        client.send_body(stream, ws_frame(b"\x03\xe8", opcode=8), end=True)  # close 1000, then END_STREAM
        yield self.poll(lambda: len(self.access_log.entries) == logged, "the WebSocket logged")
        yield self.poll(lambda: not self.frontend.websockets and not backend.open, "both ends closed")
        yield run_reactor_for(20)

    @defer.inlineCallbacks
    def test_a_websocket_over_a_stream_leaves_nothing(self):  # type: ignore[no-untyped-def]
        backend = EchoBackendFactory()
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)
        self.origin = port.getHost().port
        self.proxy(websocket=WebSocketConfig(mode=self.mode, client_ping_interval=0, backend_ping_interval=0))
        client = yield self.h2()
        yield self.poll(lambda: client.h2.remote_settings.enable_connect_protocol, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
        self.collector_off()
        yield self.websocket(client, backend, 1)
        our_cyclic_garbage(*_H2)  # what the first may leave that a connection makes once
        yield self.websocket(client, backend, 2)
        self.assertEqual(our_cyclic_garbage(*_H2), [])
        self.assertEqual([e.termination for e in self.access_log.entries], ["client-close"] * 2)
        self.assertFalse(client.lost)


class SessionHttp2WebSocketTests(Http2WebSocketTests):
    mode = "session"
