"""A client that half-closes (sends its FIN) after its requests is answered, as by HAProxy and nginx; half a head
after them is dropped; half a body, or no request, then ends the connection as a close does."""

from __future__ import annotations

from twisted.internet import defer

from .helpers import ProxyTestCase, get, parse_responses


class HalfCloseTests(ProxyTestCase):
    @defer.inlineCallbacks
    def half_closed_after(self, data: bytes):  # type: ignore[no-untyped-def]
        """Connect, send ``data``, half-close; what the client received by the time the proxy closed."""
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(data)
        client.transport.loseWriteConnection()
        received = yield client.closed
        return received

    @defer.inlineCallbacks
    def test_a_request_sent_whole_is_answered_then_the_connection_closes(self):  # type: ignore[no-untyped-def]
        received = yield self.half_closed_after(get(b"/a"))
        (response,) = parse_responses(received)
        self.assertEqual((response.status, response.body), (200, b"path=/a"))
        self.assertEqual(response.header(b"connection"), b"close")
        self.assertEqual([entry.termination for entry in self.access_log.entries], ["ok"])
        yield self.poll(lambda: self.access_log.connections, "the connection's line")
        self.assertEqual(self.access_log.connections[-1].end, "client-close")

    @defer.inlineCallbacks
    def test_pipelined_requests_are_all_answered_in_order(self):  # type: ignore[no-untyped-def]
        received = yield self.half_closed_after(get(b"/a") + get(b"/b") + get(b"/c"))
        responses = parse_responses(received)
        self.assertEqual([r.body for r in responses], [b"path=/a", b"path=/b", b"path=/c"])
        self.assertEqual([r.header(b"connection") for r in responses][-1], b"close")

    @defer.inlineCallbacks
    def test_a_request_with_a_body_sent_whole_is_answered(self):  # type: ignore[no-untyped-def]
        received = yield self.half_closed_after(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        (response,) = parse_responses(received)
        self.assertEqual((response.status, response.body), (200, b"hello"))

    @defer.inlineCallbacks
    def test_a_response_streaming_when_the_client_half_closes_is_sent_whole(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(get(b"/big/3000000"))
        yield client.until(lambda data: len(data) > 100_000)
        client.transport.loseWriteConnection()  # its head went out with keep-alive: the close follows the body
        received = yield client.closed
        (response,) = parse_responses(received)
        self.assertEqual(len(response.body), 3_000_000)
        self.assertEqual([entry.termination for entry in self.access_log.entries], ["ok"])

    @defer.inlineCallbacks
    def test_half_a_head_is_a_close_without_an_answer(self):  # type: ignore[no-untyped-def]
        received = yield self.half_closed_after(b"GET /a HTTP/1.1\r\nHo")
        self.assertEqual(received, b"")
        yield self.poll(lambda: self.access_log.connections, "the connection's line")
        self.assertEqual(self.access_log.connections[-1].end, "socket-read-closed")

    @defer.inlineCallbacks
    def test_requests_sent_whole_before_half_a_head_are_answered(self):  # type: ignore[no-untyped-def]
        # As HAProxy answers them (the origin may have acted on them already); the half head is never answered.
        received = yield self.half_closed_after(get(b"/a") + get(b"/b") + b"GET /c HTTP/1.1\r\nHo")
        responses = parse_responses(received)
        self.assertEqual([r.body for r in responses], [b"path=/a", b"path=/b"])
        self.assertEqual(responses[-1].header(b"connection"), b"close")
        self.assertEqual([entry.termination for entry in self.access_log.entries], ["ok", "ok"])

    @defer.inlineCallbacks
    def test_half_a_body_ends_the_request_as_a_client_abort(self):  # type: ignore[no-untyped-def]
        received = yield self.half_closed_after(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf")
        self.assertEqual(parse_responses(received), [])
        yield self.poll(lambda: self.access_log.entries, "the request's line")
        self.assertEqual(self.access_log.entries[-1].termination, "client-abort")

    @defer.inlineCallbacks
    def test_an_idle_connection_closes_at_once(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(get(b"/a"))
        yield client.responses(1)
        client.transport.loseWriteConnection()
        yield client.closed
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        self.assertEqual(self.access_log.connections[-1].end, "client-close")
