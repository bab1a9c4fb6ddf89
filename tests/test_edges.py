"""Edge cases of relaying: early answers, HTTP/1.0 keep-alive, absolute and asterisk targets, chunked origins."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.protocol import Protocol

from .helpers import ProxyTestCase, get


class Scripted(Protocol):
    """An origin answering each read with ``reply(data)``; keeps what it received."""

    received: list[bytes]

    def __init__(self, reply):  # type: ignore[no-untyped-def]
        self.reply = reply
        Scripted.received = []

    def dataReceived(self, data: bytes) -> None:
        Scripted.received.append(data)
        answer = self.reply(data)
        if answer:
            self.transport.write(answer)


class EdgeTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_origin_answering_before_the_body_ends_closes_both_sides(self):
        early = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nno\n"
        frontend = self.start_proxy(self.start_raw_origin(lambda: Scripted(lambda data: early)))
        client = yield self.connect()
        client.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        (response,) = yield client.responses(1)
        self.assertEqual((response.status, response.header(b"Connection")), (413, b"close"))
        yield client.closed
        yield self.settle(frontend)
        self.assertEqual(frontend.pool.idle_count, 0)  # the origin connection, mid-request, is not reused

    @defer.inlineCallbacks
    def test_http10_keep_alive(self):
        self.start_proxy(self.start_web_origin())
        request = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        responses = yield self.request(request + request.replace(b"/a", b"/b"), 2)
        self.assertEqual([r.body for r in responses], [b"path=/a", b"path=/b"])
        self.assertEqual(responses[0].header(b"Connection"), b"keep-alive")

    @defer.inlineCallbacks
    def test_absolute_form_becomes_origin_form(self):
        self.start_proxy(self.start_raw_origin(lambda: Scripted(
            lambda data: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")))
        yield self.request(b"GET http://app.example:8080/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        head = Scripted.received[0]
        self.assertTrue(head.startswith(b"GET /x?y=1 HTTP/1.1\r\n"))
        self.assertIn(b"\r\nHost: app.example:8080\r\n", head)

    @defer.inlineCallbacks
    def test_options_asterisk(self):
        self.start_proxy(self.start_raw_origin(lambda: Scripted(
            lambda data: b"HTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n")))
        (response,) = yield self.request(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual((response.status, response.header(b"Allow")), (200, b"GET"))
        self.assertTrue(Scripted.received[0].startswith(b"OPTIONS * HTTP/1.1\r\n"))

    @defer.inlineCallbacks
    def test_chunked_origin_rechunked_with_trailers_dropped(self):
        body = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Checksum: 1\r\n\r\n"
        self.start_proxy(self.start_raw_origin(lambda: Scripted(
            lambda data: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" + body)))
        responses = yield self.request(get() + get(), 2)
        self.assertEqual([r.body for r in responses], [b"wikipedia", b"wikipedia"])
        self.assertEqual(responses[0].header(b"Transfer-Encoding"), b"chunked")
        self.assertIsNone(responses[0].header(b"Trailer"))
