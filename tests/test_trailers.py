"""An origin's chunked response whose trailer section is malformed, oversized or odd, over real sockets.

Trailers are dropped (the proxy re-frames the body), so once the last chunk is read the body is complete: a trailer
section llhttp refuses, or one past 64 KiB, ends the client's response cleanly (``0\\r\\n\\r\\n``, the client
connection kept) and closes the origin connection, with a warning saying why. It used to cut the response (the
chunked body unterminated, the client connection closed) although the whole body had been relayed. An error in the
chunks themselves leaves the body unknown and still cuts it.
"""

from __future__ import annotations

import http.client
import os
import shutil

from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rubrisproxy.http import HTTPError, RequestParser, ResponseParser
from rubrisproxy.lifecycle import Termination

from .helpers import ProxyTestCase, get, run_reactor_for
from .test_origin_desync import _Recorder

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
BODY = b"2\r\nok\r\n"
#: Trailer sections (from the last chunk on) llhttp refuses, and the reason the warning gives.
REFUSED = {
    b"no-colon": (b"0\r\nX-T\r\n\r\n", "Invalid header token"),
    b"space-before-colon": (b"0\r\nX-T : 1\r\n\r\n", "Invalid header token"),
    b"bad-name": (b"0\r\nX A: 1\r\n\r\n", "Invalid header token"),
    b"empty-name": (b"0\r\n: 1\r\n\r\n", "Invalid header token"),
    b"obs-fold": (b"0\r\nX-T: a\r\n b\r\n\r\n", "Unexpected whitespace after header value"),
    b"nul-in-value": (b"0\r\nX-T: a\x00b\r\n\r\n", "Invalid header value char"),
    b"nul-in-name": (b"0\r\nX-\x00T: a\r\n\r\n", "Invalid header token"),
    b"bare-cr": (b"0\r\nX-T: a\rb\r\n\r\n", "Missing expected LF after header value"),
    b"bare-lf": (b"0\r\nX-T: a\nX-U: b\r\n\r\n", "Missing expected CR after header value"),
    b"control-char": (b"0\r\nX-T: a\x01b\r\n\r\n", "Invalid header value char"),
    b"content-length-twice": (b"0\r\nContent-Length: 9\r\nContent-Length: 8\r\n\r\n", "Duplicate Content-Length"),
    b"content-length-x": (b"0\r\nContent-Length: x\r\n\r\n", "Invalid character in Content-Length"),
    b"ext-then-bad": (b"0;ext=1\r\nX A: 1\r\n\r\n", "Invalid header token"),
    b"a-status-line": (b"0\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "Invalid header token"),
}
#: Trailer sections read and dropped: the connection is reused.
DROPPED = {
    b"none": b"0\r\n\r\n",
    b"one": b"0\r\nX-T: 1\r\n\r\n",
    b"transfer-encoding": b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"content-length": b"0\r\nContent-Length: 9\r\n\r\n",
    b"host": b"0\r\nHost: evil.example\r\n\r\n",
    b"ext": b"0;ext=1\r\nX-T: 1\r\n\r\n",
    b"ext-only": b'0;ext=1;q="a b"\r\n\r\n',
    b"many": b"0\r\n" + b"".join(b"X-T%d: %d\r\n" % (i, i) for i in range(500)) + b"\r\n",
}
#: Responses whose chunks are malformed: the body is unknown, the response is cut.
BROKEN = {
    b"last-chunk-bad-ext": HEAD + BODY + b"0;e\x01=1\r\n\r\n",
    b"no-crlf-after-data": HEAD + b"2\r\nokXX0\r\n\r\n",
}
#: What the client gets for every response with the 2-byte body, whatever its trailers.
CLIENT_SEES = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 rubrisproxy\r\n\r\n2\r\nok\r\n0\r\n\r\n"
NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nVia: 1.1 rubrisproxy\r\n\r\nnext"


class TrailerOrigin(Protocol):
    """Answers ``/NAME`` with a chunked ``ok`` and the trailer section NAME, in one write; ``/split/NAME`` with the
    trailer section in a second write; ``/endless`` with one trailer line of 1 MB and no end;
    ``/next`` with a plain response."""

    connections: list[TrailerOrigin] = []

    def connectionMade(self) -> None:
        self.buffer = b""
        self.requests: list[bytes] = []
        self.closed = False
        TrailerOrigin.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1]
            self.requests.append(path)
            self.answer(path)

    def answer(self, path: bytes) -> None:
        name = path.rpartition(b"/")[2]
        write = self.transport.write  # type: ignore[union-attr]
        if name == b"next":
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        elif name == b"endless":
            write(HEAD + BODY + b"0\r\nX-T: " + b"a" * (1 << 20))
        elif name in BROKEN:
            write(BROKEN[name])
        else:
            section = REFUSED[name][0] if name in REFUSED else DROPPED[name]
            if path.startswith(b"/split/"):
                write(HEAD + BODY)
                reactor.callLater(0.05, lambda: None if self.closed else write(section))
            else:
                write(HEAD + BODY + section)

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True


class TrailerSectionTests(ProxyTestCase):
    def setUp(self) -> None:
        TrailerOrigin.connections = []
        self.frontend = self.start_proxy(self.start_raw_origin(TrailerOrigin))
        self.warnings: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            text = formatEvent(event)
            if "trailer section" in text:
                self.warnings.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def served(self, path: bytes) -> TrailerOrigin:
        """The origin connection that answered ``path``."""
        return next(origin for origin in TrailerOrigin.connections if path in origin.requests)

    @defer.inlineCallbacks
    def answered(self, path: bytes):  # type: ignore[no-untyped-def]
        """GET ``path`` then ``/next`` on one client connection: what the client got, and whether it stayed open."""
        client = yield self.connect()
        client.send(get(path))
        yield client.until(lambda data: data.endswith(b"0\r\n\r\n"))
        client.send(get(b"/next"))
        yield client.until(lambda data: data.endswith(b"next"))
        return client.received, client.transport.connected

    @defer.inlineCallbacks
    def test_a_refused_trailer_section_ends_the_response_and_closes_the_origin_connection(self):  # type: ignore[no-untyped-def]
        for prefix in (b"/", b"/split/"):
            for name, (_, reason) in REFUSED.items():
                self.warnings = []
                received, connected = yield self.answered(prefix + name)
                self.assertEqual((received, connected), (CLIENT_SEES + NEXT, True), (prefix, name))
                served = self.served(prefix + name)
                yield self.poll(lambda: served.closed, "the origin connection closed")  # noqa: B023
                self.assertEqual(served.requests[-1], prefix + name)  # not reused
                self.assertEqual(len(self.warnings), 1, (prefix, name))
                self.assertIn(f"bad trailer section ({reason})", self.warnings[0])
                self.assertIn("app/s1 (http://127.0.0.1:", self.warnings[0])
        self.assertEqual({entry.termination for entry in self.access_log.entries}, {Termination.OK.value})
        self.assertEqual({entry.status for entry in self.access_log.entries}, {200})

    @defer.inlineCallbacks
    def test_a_trailer_section_without_end_is_bounded_and_ends_the_response(self):  # type: ignore[no-untyped-def]
        received, connected = yield self.answered(b"/endless")
        self.assertEqual((received, connected), (CLIENT_SEES + NEXT, True))
        served = self.served(b"/endless")
        yield self.poll(lambda: served.closed, "the origin connection closed")
        self.assertEqual(served.requests, [b"/endless"])
        self.assertEqual(len(self.warnings), 1)
        self.assertIn("bad trailer section (trailer section over 65536 bytes)", self.warnings[0])

    @defer.inlineCallbacks
    def test_a_dropped_trailer_section_keeps_the_origin_connection(self):  # type: ignore[no-untyped-def]
        for prefix in (b"/", b"/split/"):
            for name in DROPPED:
                received, connected = yield self.answered(prefix + name)
                self.assertEqual((received, connected), (CLIENT_SEES + NEXT, True), (prefix, name))
                self.assertEqual(self.served(prefix + name).requests[-2:], [prefix + name, b"/next"])  # reused
        self.assertEqual(len(TrailerOrigin.connections), 1)
        self.assertEqual(self.warnings, [])

    @defer.inlineCallbacks
    def test_malformed_chunks_still_cut_the_response(self):  # type: ignore[no-untyped-def]
        for name in BROKEN:
            client = yield self.connect()
            client.send(get(b"/" + name))
            yield client.closed
            self.assertTrue(client.received.startswith(CLIENT_SEES[:-len(b"0\r\n\r\n")]), name)
            self.assertFalse(client.received.endswith(b"0\r\n\r\n"), name)
        self.assertEqual(self.warnings, [])


class RealClientTests(ProxyTestCase):
    """curl and Python's http.client get the whole response and keep their connection."""

    def setUp(self) -> None:
        TrailerOrigin.connections = []
        self.start_proxy(self.start_raw_origin(TrailerOrigin))

    @defer.inlineCallbacks
    def test_curl_raw_gets_the_last_chunk_and_reuses_its_connection(self):  # type: ignore[no-untyped-def]
        curl = shutil.which("curl")
        if curl is None:
            if os.environ.get("CI"):
                raise AssertionError("no curl")
            raise self.skipTest("curl is not installed")
        url = f"http://127.0.0.1:{self.proxy_port}"
        for name in (b"no-colon", b"obs-fold", b"content-length-twice", b"split/bare-cr"):
            out, err, code = yield getProcessOutputAndValue(
                curl, ["-sS", "--max-time", "10", "--raw", "-v", f"{url}/{name.decode()}", f"{url}/next"],
                env=dict(os.environ))
            self.assertEqual((code, out), (0, b"2\r\nok\r\n0\r\n\r\nnext"), err)
            self.assertIn(b"Re-using existing connection", err)

    @defer.inlineCallbacks
    def test_python_http_client_reads_the_body_and_reuses_its_connection(self):  # type: ignore[no-untyped-def]
        port = self.proxy_port

        def fetch() -> list[tuple[int, bytes]]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                got = []
                for path in ("/bad-name", "/split/content-length-x", "/next"):
                    connection.request("GET", path)
                    response = connection.getresponse()
                    got.append((response.status, response.read()))
                return got
            finally:
                connection.close()

        got = yield deferToThread(fetch)
        self.assertEqual(got, [(200, b"ok"), (200, b"ok"), (200, b"next")])
        yield run_reactor_for(1)


class RequestTrailerTests(ProxyTestCase):
    """A client's chunked request whose trailer section does not end: refused once past the header size limit (one
    endless trailer line used to grow the proxy, quadratically in time: llhttp keeps a field until its end)."""

    @defer.inlineCallbacks
    def test_an_endless_trailer_line_is_refused(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        client.send(b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: ")
        client.send(b"a" * (1 << 20))
        received = yield client.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 431 "), received[:200])


class TrailerCountTests(SynchronousTestCase):
    """Only the trailer section is counted: reads ending just past a chunk's line (its data to come) are not."""

    def test_reads_ending_at_chunk_lines_are_not_trailer_bytes(self) -> None:
        parser, recorder = ResponseParser(), _Recorder()
        parser.start(recorder, b"GET")
        parser.feed(HEAD + b"400\r\n")
        data = b"d" * 1024
        for _ in range(200):  # 200 KiB of data, each read ending just past the next chunk's line
            parser.feed(data + b"\r\n400\r\n")
        parser.feed(data + b"\r\n")
        for _ in range(200):  # and each line in a read of its own
            parser.feed(b"400\r\n")
            parser.feed(data + b"\r\n")
        parser.feed(b"0\r\n")
        parser.feed(b"X-T: " + b"t" * 60000 + b"\r\n")
        parser.feed(b"\r\n")
        self.assertEqual(recorder.events[-1], ("end",))
        self.assertEqual((parser.complete, parser.reusable, parser.trailer_error), (True, True, ""))

    def test_a_malformed_chunk_after_the_first_is_still_a_502(self) -> None:
        for tail in (b"2\r\nokXX0\r\n\r\n", b"zz\r\nok\r\n0\r\n\r\n", b"0;e\x01=1\r\n\r\n"):
            parser = ResponseParser()
            parser.start(_Recorder(), b"GET")
            parser.feed(HEAD + BODY)
            with self.assertRaises(HTTPError) as caught:
                parser.feed(tail)
            self.assertEqual(caught.exception.status, 502, tail)
            self.assertEqual(parser.trailer_error, "")

    def test_requests_after_a_chunked_one_are_not_trailer_bytes(self) -> None:
        ended = []

        class Handler:
            def request_head(self, head: object) -> None: ...
            def request_body(self, data: bytes) -> None: ...
            def request_end(self) -> None:
                ended.append(True)
            def request_upgraded(self, rest: bytes) -> None: ...

        parser = RequestParser(Handler())
        parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 2000)  # 58 KB, past the header size limit
        self.assertEqual(len(ended), 2001)
