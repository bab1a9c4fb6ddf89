"""End-to-end behaviour over real loopback sockets: origins and clients started by the tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol

from .helpers import ProxyTestCase, get, parse_responses


class ForwardingTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_get_is_relayed_with_forwarding_headers(self):
        self.start_proxy(self.start_web_origin())
        (response,) = yield self.request(get(b"/headers", b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                                                  b"X-Forwarded-For: 6.6.6.6\r\nKeep-Alive: timeout=5\r\n"
                                                  b"Proxy-Authorization: Basic eA==\r\nTE: trailers\r\n"))
        self.assertEqual(response.status, 200)
        seen = response.body.lower()
        self.assertIn(b"x-forwarded-for: 127.0.0.1", seen)
        self.assertNotIn(b"6.6.6.6", seen)
        self.assertIn(b"x-forwarded-proto: http", seen)
        self.assertIn(b"x-forwarded-host: test", seen)
        self.assertIn(b'forwarded: for=127.0.0.1;proto=http;host="test"', seen)
        self.assertIn(b"via: 1.1 rubrisproxy", seen)
        self.assertIn(b"host: test", seen)
        for hop in (b"x-secret", b"keep-alive", b"proxy-authorization", b"te:", b"connection"):
            self.assertNotIn(hop, seen)
        self.assertEqual(response.header(b"Via"), b"1.1 rubrisproxy")

    @defer.inlineCallbacks
    def test_hop_by_hop_response_headers_removed(self):
        def respond(transport, data):
            transport.write(b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: 5\r\n"
                            b"Proxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok")
        self.start_proxy(self.start_raw_origin(lambda: ScriptedOrigin(respond)))
        (response,) = yield self.request(get())
        self.assertEqual(response.body, b"ok")
        self.assertFalse({b"x-internal", b"keep-alive", b"proxy-authenticate"} & response.header_names())

    @defer.inlineCallbacks
    def test_keep_alive_reuses_origin_connection(self):
        frontend = self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        for i in range(5):
            client.send(get(b"/n%d" % i))
            responses = yield client.responses(i + 1)
            self.assertEqual(responses[-1].body, b"path=/n%d" % i)
        self.assertEqual(frontend.pool.created, 1)
        self.assertEqual(frontend.pool.reuses, 4)
        self.assertEqual(len(frontend.connections), 1)

    @defer.inlineCallbacks
    def test_pipelined_requests_answered_in_order(self):
        self.start_proxy(self.start_web_origin())
        pipelined = b"".join(get(b"/p%d" % i) for i in range(8))
        pipelined += b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nlast"
        responses = yield self.request(pipelined, count=9)
        self.assertEqual([r.body for r in responses[:8]], [b"path=/p%d" % i for i in range(8)])
        self.assertEqual(responses[8].body, b"last")

    @defer.inlineCallbacks
    def test_content_length_and_chunked_uploads(self):
        self.start_proxy(self.start_web_origin())
        body = b"x" * 200_000
        (r1,) = yield self.request(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.assertEqual(r1.body, body)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"hello ", b"chunked ", b"world")) + b"0\r\n\r\n"
        (r2,) = yield self.request(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        self.assertEqual(r2.body, b"hello chunked world")

    @defer.inlineCallbacks
    def test_expect_100_continue(self):
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = yield client.until(lambda data: b"\r\n\r\n" in data)
        self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n"))
        client.send(b"hello")
        responses = yield client.responses(2)
        self.assertEqual((responses[0].status, responses[1].status, responses[1].body), (100, 200, b"hello"))

    @defer.inlineCallbacks
    def test_head_204_304_have_no_body(self):
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(b"HEAD /big/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
        yield client.until(lambda d: b"\r\n\r\n" in d)
        self.assertIn(b"Content-Length: 1000", client.received)
        client.received = b""
        client.send(get(b"/status/204") + get(b"/status/304") + get(b"/after"))
        responses = yield client.responses(3)
        self.assertEqual([(r.status, r.body) for r in responses], [(204, b""), (304, b""), (200, b"path=/after")])

    @defer.inlineCallbacks
    def test_unframed_response_read_to_close(self):
        def respond(transport, data):
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            transport.loseConnection()
        self.start_proxy(self.start_raw_origin(lambda: ScriptedOrigin(respond)))
        (response,) = yield self.request(get())
        self.assertEqual(response.body, b"until the end")
        self.assertEqual(response.header(b"Transfer-Encoding"), b"chunked")
        http10 = yield self.connect()
        http10.send(b"GET / HTTP/1.0\r\n\r\n")
        data = yield http10.closed
        self.assertTrue(data.endswith(b"\r\n\r\nuntil the end"))
        self.assertIn(b"Connection: close", data)

    @defer.inlineCallbacks
    def test_origin_connection_close_ends_reuse(self):
        frontend = self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(get(b"/a", b"Connection: close\r\n"))
        data = yield client.closed
        self.assertIn(b"Connection: close", data)
        def respond(transport, data):
            transport.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
        frontend = self.start_proxy(self.start_raw_origin(lambda: ScriptedOrigin(respond)))
        client = yield self.connect()
        client.send(get() + get())
        responses = yield client.responses(2)
        self.assertEqual([r.body for r in responses], [b"x", b"x"])
        self.assertEqual((frontend.pool.created, frontend.pool.reuses), (2, 0))

    @defer.inlineCallbacks
    def test_access_log_line(self):
        self.start_proxy(self.start_web_origin())
        request = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        yield self.request(request)
        (record,) = self.access_log.entries
        self.assertEqual((record.method, record.target, record.status, record.termination), ("POST", "/echo", 200, "ok"))
        # bytes_in is the request as read, head and body
        self.assertEqual((record.backend, record.server, record.bytes_in, record.client),
                         ("app", "s1", len(request), "127.0.0.1"))
        self.assertGreater(record.bytes_out, 3)
        self.assertGreaterEqual(record.total_ms, record.response_ms)


class ScriptedOrigin(Protocol):
    """An origin whose every read is answered by ``respond(transport, data)``."""

    def __init__(self, respond):  # type: ignore[no-untyped-def]
        self.respond = respond

    def dataReceived(self, data: bytes) -> None:
        self.respond(self.transport, data)


class FailureTests(ProxyTestCase):
    def dead_port(self) -> int:
        port = reactor.listenTCP(0, ScriptedOriginFactory(), interface="127.0.0.1")
        number = port.getHost().port
        port.stopListening()
        return number

    @defer.inlineCallbacks
    def test_refused_server_is_skipped(self):
        live = self.start_web_origin()
        self.start_proxy(self.dead_port(), live, retries=2)
        client = yield self.connect()
        client.send(get(b"/x") + get(b"/y"))
        responses = yield client.responses(2)
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual([r.server for r in self.access_log.entries], ["s2", "s2"])
        self.assertEqual(self.access_log.entries[0].retries, 1)

    @defer.inlineCallbacks
    def test_no_server_is_503_and_keeps_connection(self):
        self.start_proxy(self.dead_port(), retries=1)
        client = yield self.connect()
        client.send(get() + get())
        responses = yield client.responses(2)
        self.assertEqual([r.status for r in responses], [503, 503])
        self.assertEqual(self.access_log.entries[0].termination, "no-server")

    @defer.inlineCallbacks
    def test_malformed_response_is_502(self):
        self.start_proxy(self.start_raw_origin(lambda: ScriptedOrigin(lambda t, d: t.write(b"HTTP/1.1 2x0 Nope\r\n\r\n"))))
        (response,) = yield self.request(get())
        self.assertEqual(response.status, 502)
        self.assertEqual(self.access_log.entries[0].termination, "bad-response")

    @defer.inlineCallbacks
    def test_origin_closing_before_answer_is_502(self):
        self.start_proxy(self.start_raw_origin(lambda: ScriptedOrigin(lambda t, d: t.loseConnection())))
        (response,) = yield self.request(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(response.status, 502)
        self.assertEqual(self.access_log.entries[0].termination, "server-abort")

    @defer.inlineCallbacks
    def test_truncated_response_cuts_client(self):
        def respond(transport, data):
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            transport.loseConnection()
        self.start_proxy(self.start_raw_origin(lambda: ScriptedOrigin(respond)))
        client = yield self.connect()
        client.send(get())
        data = yield client.closed
        self.assertTrue(data.endswith(b"only part"))
        self.assertEqual(parse_responses(data), [])

    @defer.inlineCallbacks
    def stale_connection(self):  # type: ignore[no-untyped-def]
        """A proxy whose one idle origin connection dies (reset) when next written to."""

        class KeepAlive(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        frontend = self.start_proxy(self.start_raw_origin(KeepAlive))
        client = yield self.connect()
        client.send(get())
        yield client.responses(1)
        (stale,) = frontend.pool._idle[frontend.backend.servers[0].key]
        stale.transport, stale._direct = ResetOnWrite(stale.transport), False  # the reset a write would meet
        return frontend, client

    @defer.inlineCallbacks
    def test_stale_keep_alive_connection_retried_for_get(self):
        frontend, client = yield self.stale_connection()
        client.send(get(b"/again"))
        responses = yield client.responses(2)
        self.assertEqual(responses[1].status, 200)
        self.assertEqual(self.access_log.entries[1].retries, 1)
        self.assertEqual(frontend.pool.created, 2)

    @defer.inlineCallbacks
    def test_stale_connection_not_retried_for_post_with_body(self):
        frontend, client = yield self.stale_connection()
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        responses = yield client.responses(2)
        self.assertEqual(responses[1].status, 502)
        self.assertEqual(self.access_log.entries[1].retries, 0)
        self.assertEqual(frontend.pool.created, 1)


class ResetOnWrite:
    """A transport that aborts its connection when written to, as a dead peer's reset would end it."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.abortConnection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ScriptedOriginFactory:
    def doStart(self):  # pragma: no cover - never connected to
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        return Protocol()
