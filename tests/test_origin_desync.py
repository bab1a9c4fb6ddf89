"""Bytes an origin sends past its complete response are never relayed, and its connection is never reused.

The proxy sends an origin one request at a time, so whatever follows a complete response
(a second response in the same write, a body sent with a HEAD, 204 or 304 answer) was never
asked for: relaying it would answer the client's next request, or another client's, with it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rubrisproxy.http import HTTPError, ResponseParser

from .helpers import ProxyTestCase, get, run_reactor_for

POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED"
#: What each path makes the origin write, in one write.
ANSWERS = {
    b"/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + POISON,
    b"/normal": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnormal",
    b"/nocontent": b"HTTP/1.1 204 No Content\r\nContent-Length: 47\r\n\r\n" + POISON.ljust(47, b"!"),
    b"/notmodified": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n" + POISON,
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",  # asked with HEAD: the body is unasked
    b"/headonly": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # a proper answer to HEAD
    b"/interim": (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ninterim"
    ),
    b"/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello" + POISON,
    b"/late": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate",  # the test sends the extra bytes later
}
VIA = b"Via: 1.1 rubrisproxy\r\n"
#: What the client must receive for each path, exactly.
CLIENT_SEES = {
    b"/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + VIA + b"\r\nhello",
    b"/normal": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n" + VIA + b"\r\nnormal",
    b"/nocontent": b"HTTP/1.1 204 No Content\r\n" + VIA + b"\r\n",  # a 204 has no Content-Length (RFC 9110 8.6)
    b"/notmodified": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n" + VIA + b"\r\n",
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + VIA + b"\r\n",
    b"/headonly": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + VIA + b"\r\n",
    b"/interim": (  # relayed as they came (RFC 9110 15.2), as HAProxy relays them
        b"HTTP/1.1 100 Continue\r\n" + VIA + b"\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n" + VIA + b"\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n" + VIA + b"\r\ninterim"
    ),
    b"/close": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + VIA + b"\r\nhello",
    b"/late": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n" + VIA + b"\r\nlate",
}


class DesyncOrigin(Protocol):
    """Answers each request head with the bytes its path names, in one write."""

    connections: list[DesyncOrigin] = []

    def connectionMade(self) -> None:
        self.buffer = b""
        self.requests: list[bytes] = []
        self.closed = False
        DesyncOrigin.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1]
            self.requests.append(head.split(b"\r\n")[0])
            self.transport.write(ANSWERS[path])  # type: ignore[union-attr]

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True


def request(path: bytes) -> bytes:
    method, _, path = path.rpartition(b" ")
    return get(path).replace(b"GET", method or b"GET", 1)


def at_least(size: int) -> Callable[[bytes], bool]:
    return lambda data: len(data) >= size


class OriginDesyncTests(ProxyTestCase):
    def setUp(self) -> None:
        DesyncOrigin.connections = []
        self.frontend = self.start_proxy(self.start_raw_origin(DesyncOrigin))
        self.logged: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            text = formatEvent(event)
            if "after its complete response" in text:
                self.logged.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    @defer.inlineCallbacks
    def exchange(self, client, *paths: bytes, pipelined: bool):  # type: ignore[no-untyped-def]
        """Send ``paths`` (``b"HEAD /x"`` for another method); check the client gets exactly their answers."""
        expected = client.received
        if pipelined:
            client.send(b"".join(request(p) for p in paths))
        for path in paths:
            if not pipelined:
                client.send(request(path))
            expected += CLIENT_SEES[path.rpartition(b" ")[2]]
            yield client.until(at_least(len(expected)))
        self.assertEqual(client.received, expected)

    @defer.inlineCallbacks
    def check_unasked_bytes_dropped(self, path: bytes, pipelined: bool):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        # Then two more requests: anything relayed from the unasked bytes would come before their answers.
        yield self.exchange(client, path, b"/normal", b"/normal", pipelined=pipelined)
        first = DesyncOrigin.connections[0]
        yield self.poll(lambda: first.closed, "the overrun origin connection closed")
        self.assertEqual(first.requests, [request(path).split(b"\r\n")[0]])  # never reused
        self.assertEqual(len(DesyncOrigin.connections), 2)  # the others shared one new, pooled connection
        other = yield self.connect()
        yield self.exchange(other, b"/normal", pipelined=False)  # a second client: only its own answer
        self.assertEqual(len(self.logged), 1)
        self.assertIn("app/s1 (http://127.0.0.1:", self.logged[0])
        status = int(CLIENT_SEES[path.rpartition(b" ")[2]][9:12])
        self.assertEqual([entry.status for entry in self.access_log.entries], [status, 200, 200, 200])

    def test_two_responses_in_one_write_pipelined(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"/extra", pipelined=True)

    def test_two_responses_in_one_write_one_at_a_time(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"/extra", pipelined=False)

    def test_a_204_with_a_body_pipelined(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"/nocontent", pipelined=True)

    def test_a_204_with_a_body_one_at_a_time(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"/nocontent", pipelined=False)

    def test_a_304_with_a_body(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"/notmodified", pipelined=True)

    def test_a_head_answered_with_a_body_pipelined(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"HEAD /head", pipelined=True)

    def test_a_head_answered_with_a_body_one_at_a_time(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"HEAD /head", pipelined=False)

    def test_bytes_after_a_closing_response(self):  # type: ignore[no-untyped-def]
        return self.check_unasked_bytes_dropped(b"/close", pipelined=True)

    @defer.inlineCallbacks
    def test_interim_responses_and_the_final_one_in_one_write(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        yield self.exchange(client, b"/interim", b"/interim", pipelined=True)
        yield self.exchange(client, b"/interim", b"/normal", pipelined=False)
        self.assertEqual(len(DesyncOrigin.connections), 1)  # legitimate: the connection is reused
        self.assertEqual(len(DesyncOrigin.connections[0].requests), 4)
        self.assertEqual(self.logged, [])

    @defer.inlineCallbacks
    def test_a_head_answered_without_a_body_keeps_its_connection(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        yield self.exchange(client, b"HEAD /headonly", b"/normal", b"HEAD /headonly", pipelined=True)
        self.assertEqual(len(DesyncOrigin.connections), 1)
        self.assertEqual(self.logged, [])

    @defer.inlineCallbacks
    def test_bytes_arriving_later_on_an_idle_connection(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        yield self.exchange(client, b"/late", pipelined=False)
        yield self.poll(lambda: self.frontend.pool.idle_count == 1, "the connection pooled")
        first = DesyncOrigin.connections[0]
        first.transport.write(POISON)  # type: ignore[union-attr]
        yield self.poll(lambda: first.closed, "the idle connection closed")
        self.assertEqual(self.frontend.pool.idle_count, 0)
        yield self.exchange(client, b"/normal", b"/normal", pipelined=True)
        other = yield self.connect()
        yield self.exchange(other, b"/normal", pipelined=False)
        yield run_reactor_for(3)
        self.assertNotIn(b"POISONED", client.received + other.received)
        self.assertEqual(len(DesyncOrigin.connections), 2)
        self.assertEqual(len(self.logged), 1)


class _Recorder:
    """A response handler that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def response_interim(self, head) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("interim", head.status, head.reason))

    def response_head(self, head, has_body: bool) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("head", head.status, head.reason, has_body))

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def response_end(self) -> None:
        self.events.append(("end",))

    def response_upgraded(self, head, rest: bytes) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("upgraded", rest))


class ResponseParserOverrunTests(SynchronousTestCase):
    def parse(self, data: bytes, method: bytes = b"GET") -> tuple[ResponseParser, list[tuple[object, ...]]]:
        parser, recorder = ResponseParser(), _Recorder()
        parser.start(recorder, method)
        parser.feed(data)
        return parser, recorder.events

    def test_a_second_response_in_the_same_read_is_not_reported(self) -> None:
        parser, events = self.parse(ANSWERS[b"/extra"])
        self.assertEqual(events, [("head", 200, b"OK", True), ("body", b"hello"), ("end",)])
        self.assertEqual((parser.complete, parser.reusable, parser.overrun), (True, False, True))

    def test_a_body_after_a_204_is_not_reported(self) -> None:
        parser, events = self.parse(ANSWERS[b"/nocontent"])
        self.assertEqual(events, [("head", 204, b"No Content", False), ("end",)])
        self.assertEqual((parser.reusable, parser.overrun), (False, True))

    def test_a_body_after_a_head_answer_is_not_reported(self) -> None:
        parser, events = self.parse(ANSWERS[b"/head"], b"HEAD")
        self.assertEqual(events, [("head", 200, b"OK", False), ("end",)])
        self.assertEqual((parser.reusable, parser.overrun), (False, True))

    def test_interim_responses_leave_the_reason_and_reuse_alone(self) -> None:
        parser, events = self.parse(ANSWERS[b"/interim"])
        self.assertEqual(events, [
            ("interim", 100, b"Continue"), ("interim", 103, b"Early Hints"),
            ("head", 200, b"OK", True), ("body", b"interim"), ("end",),
        ])
        self.assertEqual((parser.reusable, parser.overrun), (True, False))

    def test_each_response_has_its_own_reason(self) -> None:
        parser, recorder = ResponseParser(), _Recorder()
        for reason in (b"Fine", b"OK"):
            parser.start(recorder, b"GET")
            parser.feed(b"HTTP/1.1 200 %s\r\nContent-Length: 0\r\n\r\n" % reason)
        self.assertEqual([e[2] for e in recorder.events if e[0] == "head"], [b"Fine", b"OK"])

    def test_the_end_is_reported_after_the_read_is_parsed(self) -> None:
        """What the handler does at the end (start the next request) never meets this read's bytes."""
        parser = ResponseParser()
        seen: list[bool] = []

        class Reuser(_Recorder):
            def response_end(self) -> None:
                seen.append(parser.reusable)
                parser.start(_Recorder(), b"GET")  # would be fed the rest if llhttp were not done

        parser.start(Reuser(), b"GET")
        parser.feed(ANSWERS[b"/extra"])
        self.assertEqual(seen, [False])

    def test_a_malformed_response_is_still_an_error(self) -> None:
        parser, recorder = ResponseParser(), _Recorder()
        parser.start(recorder, b"GET")
        with self.assertRaises(HTTPError) as caught:
            parser.feed(b"HTTP/1.1 abc OK\r\n\r\n")
        self.assertEqual(caught.exception.status, 502)


class ResponseParserFramingTests(SynchronousTestCase):
    """A response whose framing or status line the proxy would relay wrongly is a bad response (502), as HAProxy
    treats it; a 204's Content-Length is not passed on (RFC 9110 8.6: a server MUST NOT send one)."""

    def head(self, data: bytes) -> tuple[object, ...]:
        parser, recorder = ResponseParser(), _Recorder()
        parser.start(recorder, b"GET")
        parser.feed(data)
        assert parser.head is not None
        return (parser.head.status, parser.head.forward, parser.head.chunked)

    def refused(self, data: bytes) -> str:
        parser = ResponseParser()
        parser.start(_Recorder(), b"GET")
        with self.assertRaises(HTTPError) as caught:
            parser.feed(data)
        self.assertEqual(caught.exception.status, 502)
        return caught.exception.detail

    def test_a_status_under_100_is_refused(self) -> None:
        # "099" would go out as "99": a status line with two digits.
        for status in (b"099", b"000", b"001"):
            self.assertIn("status", self.refused(b"HTTP/1.1 %s OK\r\nContent-Length: 2\r\n\r\nok" % status))

    def test_a_transfer_coding_other_than_chunked_is_refused(self) -> None:
        # The proxy removes Transfer-Encoding: a coding left on the body would reach the client unannounced, and
        # one merely ending in "chunked" would be framed one way by llhttp and another by the proxy.
        for coding in (b"gzip, chunked", b"chunked, gzip", b"identity", b"xchunked", b"gzip"):
            detail = self.refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % coding)
            self.assertIn("transfer coding", detail)

    def test_chunked_in_any_case_and_spacing_is_read(self) -> None:
        for coding in (b"chunked", b"Chunked", b" CHUNKED "):
            status, _, chunked = self.head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n0\r\n\r\n" % coding)
            self.assertEqual((status, chunked), (200, True))

    def test_a_head_answer_may_name_any_coding(self) -> None:
        parser, recorder = ResponseParser(), _Recorder()
        parser.start(recorder, b"HEAD")
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
        self.assertEqual(recorder.events, [("head", 200, b"OK", False), ("end",)])

    def test_trailers_are_dropped_and_bounded(self) -> None:
        # They were kept until the response ended: an origin sending trailer lines without end grew the proxy
        # without bound (4 GB in 6 s of a live probe).
        parser, recorder = ResponseParser(), _Recorder()
        parser.start(recorder, b"GET")
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
        self.assertEqual(recorder.events, [("head", 200, b"OK", True), ("body", b"ok"), ("end",)])
        # Past 64 KiB the section is refused; the body was complete, so the response ends there (it was a 502,
        # cutting a response already relayed: tests/test_trailers.py), its connection not reused.
        for line in (b"X-T: " + b"v" * 1000 + b"\r\n", b"v" * 1000):  # lines without end, or one
            recorder = _Recorder()
            parser.start(recorder, b"GET")
            parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: ")
            for _ in range(100):
                parser.feed(line)
            self.assertEqual(recorder.events, [("head", 200, b"OK", True), ("body", b"ok"), ("end",)])
            self.assertEqual((parser.complete, parser.reusable, parser.overrun), (True, False, True))
            self.assertEqual(parser.trailer_error, "trailer section over 65536 bytes")

    def test_a_204_content_length_is_not_passed_on(self) -> None:
        status, forward, _ = self.head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n")
        self.assertEqual((status, forward), (204, [(b"X-A", b"1")]))

    def test_a_304_and_a_head_answer_keep_their_content_length(self) -> None:
        _, forward, _ = self.head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(forward, [(b"Content-Length", b"5")])
