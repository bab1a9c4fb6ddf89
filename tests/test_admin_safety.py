"""The admin API against what a hostile web page or client sends: cross-site calls, DNS-rebinding Host names,
huge or endless bodies, slow request heads."""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.admin import RunningProxy, _channel, admin_site
from rubrisproxy.admin._channel import MAX_BODY
from rubrisproxy.config import Timeouts
from rubrisproxy.websocket import ResumeBudget

from .helpers import RawClient, parse_responses
from .test_admin import AdminCase

ADD = b'{"name": "s3", "address": "127.0.0.1:1"}'


class _Raw(AdminCase):
    """Exact requests to the admin listener."""

    @defer.inlineCallbacks
    def send(self, data: bytes):  # type: ignore[no-untyped-def]
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.admin_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(data)
        (response,) = yield client.responses(1)
        return response

    def post(self, path: bytes, headers: bytes, body: bytes = ADD, host: bytes | None = None) -> bytes:
        host = host or b"127.0.0.1:%d" % self.admin_port
        return (b"POST %s HTTP/1.1\r\nHost: %s\r\n%s%sContent-Length: %d\r\n\r\n%s"
                % (path, host, headers, self.authorization(), len(body), body))

    def authorization(self) -> bytes:
        return b"Authorization: Bearer %s\r\n" % self.token.encode() if self.token else b""

    def curl(self, *args: str):  # type: ignore[no-untyped-def]
        token = ["-H", f"Authorization: Bearer {self.token}"] if self.token else []
        return getProcessOutputAndValue("curl", ["-sS", *token, *args], env=dict(os.environ))

    def servers(self) -> list[str]:
        return [s.name for s in self.service.parts.backends["default"].servers]


class BrowserTests(_Raw):
    """A page in the operator's browser, on another site, must not drive the API."""

    @defer.inlineCallbacks
    def test_a_cross_site_form_post_adds_no_server(self):  # type: ignore[no-untyped-def]
        # What <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) on another site sends.
        cross_site = b"Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\nContent-Type: text/plain;charset=UTF-8\r\n"
        response = yield self.send(self.post(b"/backends/default/servers", cross_site))
        self.assertEqual((response.status, json.loads(response.body)["status"]), (403, 403))
        for headers, status in [
            (b"Content-Type: text/plain\r\n", 415),  # no Origin (an old browser): the type alone refuses it
            (b"Content-Type: application/x-www-form-urlencoded\r\n", 415),
            (b"", 415),
            (b"Origin: null\r\nContent-Type: application/json\r\n", 403),  # a sandboxed frame
            (b"Origin: http://evil.example\r\nContent-Type: application/json\r\n", 403),
            (b"Sec-Fetch-Site: same-site\r\nContent-Type: application/json\r\n", 403),
        ]:
            response = yield self.send(self.post(b"/backends/default/servers", headers))
            self.assertEqual(response.status, status, headers)
        response = yield self.send(self.post(b"/reload", b"Content-Type: text/plain\r\n", b""))
        self.assertEqual(response.status, 415)
        response = yield self.send(b"DELETE /backends/default/servers/s1 HTTP/1.1\r\nHost: localhost\r\n%s"
                                   b"Origin: http://evil.example\r\nContent-Type: application/json\r\n\r\n"
                                   % self.authorization())
        self.assertEqual(response.status, 403)
        self.assertEqual(self.servers(), ["s1", "s2"])

    @defer.inlineCallbacks
    def test_the_same_page_and_a_shell_still_can(self):  # type: ignore[no-untyped-def]
        own = b"Origin: http://127.0.0.1:%d\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json\r\n" % (
            self.admin_port)
        response = yield self.send(self.post(b"/backends/default/servers", own))
        self.assertEqual(response.status, 200, response.body)
        response = yield self.send(self.post(b"/backends/default/servers/s3/drain",
                                             b"Content-Type: application/json; charset=utf-8\r\n", b""))
        self.assertEqual(response.status, 200, response.body)
        out, err, code = yield self.curl("-X", "DELETE", "-H", "Content-Type: application/json",
                                         f"http://localhost:{self.admin_port}/backends/default/servers/s3")
        self.assertEqual((code, json.loads(out)["name"]), (0, "s3"), err)
        # curl -d says application/x-www-form-urlencoded
        out, err, code = yield self.curl("-X", "POST", "-d", ADD.decode(),
                                         f"http://127.0.0.1:{self.admin_port}/backends/default/servers")
        self.assertEqual(json.loads(out)["status"], 415, err)
        self.assertEqual(self.servers(), ["s1", "s2"])


class TokenBrowserTests(BrowserTests):
    token = "a-long-enough-admin-token"


class HostTests(_Raw):
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own name as Host."""

    @defer.inlineCallbacks
    def test_without_a_token_only_loopback_host_names_are_served(self):  # type: ignore[no-untyped-def]
        port = self.admin_port
        for host in (b"evil.example:%d" % port, b"evil.example", b"127.0.0.1.evil.example:%d" % port, b"10.0.0.1",
                     b"[::ffff:7f00:1]x", b"localhost.evil.example"):
            reads = [b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)
                     for path in (b"/backends", b"/", b"/stats.json", b"/stats.csv", b"/metrics")]
            for request in (*reads,
                            self.post(b"/backends/default/servers", b"Content-Type: application/json\r\n", host=host)):
                response = yield self.send(request)
                self.assertEqual(response.status, 403, request)
        for host in (b"127.0.0.1:%d" % port, b"localhost:%d" % port, b"LOCALHOST.", b"[::1]:%d" % port, b"127.0.0.2",
                     b"admin.localhost:%d" % port):
            response = yield self.send(b"GET /backends HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
            self.assertEqual(response.status, 200, host)
        self.assertEqual(self.servers(), ["s1", "s2"])


    @defer.inlineCallbacks
    def refused(self, data: bytes):  # type: ignore[no-untyped-def]
        """Send ``data``; the answer must be 400, then the connection's end."""
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.admin_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(data)
        received = yield client.closed
        (response,) = parse_responses(received)
        self.assertEqual((response.status, json.loads(response.body)["status"]), (400, 400), data)
        self.assertIn(b"one Host", response.body)

    @defer.inlineCallbacks
    def test_several_host_headers_or_none_are_400(self):  # type: ignore[no-untyped-def]
        for hosts in (b"Host: evil.com\r\nHost: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nHost: evil.com\r\n",
                      b"Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n", b""):
            for version in (b"1.1", b"1.0"):
                yield self.refused(b"GET /backends HTTP/%s\r\n%s%s\r\n" % (version, hosts, self.authorization()))
            yield self.refused(b"GET /healthz HTTP/1.1\r\n%s\r\n" % hosts)
        add = self.post(b"/backends/default/servers", b"Content-Type: application/json\r\n")
        yield self.refused(add.replace(b"\r\n", b"\r\nHost: evil.com\r\n", 1))
        self.assertEqual(self.servers(), ["s1", "s2"])


class TokenHostTests(_Raw):
    token = "a-long-enough-admin-token"

    test_several_host_headers_or_none_are_400 = HostTests.test_several_host_headers_or_none_are_400
    refused = HostTests.refused

    @defer.inlineCallbacks
    def test_with_a_token_any_host_name_is_served_to_whoever_has_it(self):  # type: ignore[no-untyped-def]
        response = yield self.send(b"GET /backends HTTP/1.1\r\nHost: admin.example:%d\r\nAuthorization: Bearer %s\r\n\r\n"
                                   % (self.admin_port, self.token.encode()))
        self.assertEqual(response.status, 200)
        response = yield self.send(b"GET /backends HTTP/1.1\r\nHost: admin.example\r\n\r\n")
        self.assertEqual(response.status, 401)


class BodyLimitTests(AdminCase):
    """A body over the limit is answered 413 from its head: nothing is read, spooled or authorized first."""

    token = "a-long-enough-admin-token"

    @defer.inlineCallbacks
    def connect(self):  # type: ignore[no-untyped-def]
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.admin_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        return client

    @defer.inlineCallbacks
    def test_a_500_mb_content_length_is_413_before_the_body(self):  # type: ignore[no-untyped-def]
        for expect, body in ((b"Expect: 100-continue\r\n", b""), (b"", b""), (b"", b"x" * 300_000)):
            client = yield self.connect()
            client.send(b"POST /backends/default/servers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 500000000\r\n%s\r\n%s" % (expect, body))
            # Answered from the head and closed, the bytes sent meanwhile dropped (not a reset that loses the answer).
            received = yield client.closed
            (response,) = parse_responses(received)
            self.assertEqual((response.status, json.loads(response.body)["status"]), (413, 413))
            self.assertNotIn(b"100 Continue", received)

    @defer.inlineCallbacks
    def test_curl_with_a_big_body_gets_413(self):  # type: ignore[no-untyped-def]
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b" " * (MAX_BODY * 4))
        out, err, code = yield getProcessOutputAndValue("curl", [
            "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json",
            "--data-binary", f"@{path}", f"http://127.0.0.1:{self.admin_port}/reload"], env=dict(os.environ))
        self.assertEqual(out, b"413", err)

    @defer.inlineCallbacks
    def test_a_chunked_body_is_cut_at_the_limit(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        client.send(b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (8192, b" " * 8192)
        for _ in range(MAX_BODY // 8192 + 1):
            if client.transport.connected:
                client.send(chunk)
        received = yield client.closed
        (response,) = parse_responses(received)
        self.assertEqual(response.status, 413)

    @defer.inlineCallbacks
    def test_a_body_at_the_limit_is_read(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        body = b"{" + b" " * (MAX_BODY - 2) + b"}"
        client.send(b"POST /backends/default/servers/s1/weight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (self.token.encode(), len(body), body))
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 400)  # read and parsed: no weight in it
        self.assertIn(b"weight", response.body)


class TimeoutTests(SynchronousTestCase):
    """The admin listener's request and idle timeouts, on a clock."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        proxy = RunningProxy([], {}, ResumeBudget())
        site = admin_site(proxy, None, Timeouts(http_request=10, client=30), self.clock)
        self.channel = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def test_a_head_sent_a_byte_at_a_time_is_cut_off(self) -> None:
        for byte in b"GET /backends HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"z" * 20:
            self.assertEqual(self.transport.disconnected, self.clock.seconds() >= 10)
            if not self.transport.disconnected:
                self.channel.dataReceived(bytes([byte]))
            self.clock.advance(0.25)  # each byte well within the idle timeout
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.transport.value(), b"")
        self.channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_refused_body_is_dropped_until_the_client_closes_or_the_linger_ends(self) -> None:
        class HalfClosing(StringTransport):
            write_closed = False

            def loseWriteConnection(self) -> None:
                self.write_closed = True

        transport = HalfClosing()
        channel = self.channel
        channel.connectionLost(None)
        channel = admin_site(RunningProxy([], {}, ResumeBudget()), None, Timeouts(), self.clock).buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n"))
        self.assertTrue(transport.write_closed)
        answered = transport.value()
        channel.dataReceived(b"x" * 100_000 + b"GET /backends HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(transport.value(), answered)  # dropped, nothing parsed
        self.clock.advance(_channel.LINGER)
        self.assertTrue(transport.disconnected)
        channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_each_request_gets_its_own_time_and_so_does_waiting_for_the_next(self) -> None:
        self.clock.advance(9)
        self.channel.dataReceived(b"GET /backends HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertIn(b"200 OK", self.transport.value())
        self.clock.advance(9)
        self.channel.dataReceived(b"GET /frontends HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(self.transport.value().count(b"200 OK"), 2)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnected)
        self.channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
