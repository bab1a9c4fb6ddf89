"""Hostile message rules over real loopback sockets: framing named in Connection, Host, Forwarded, route paths.

Each test sends the exact bytes to the proxy; the origin the test starts records every
request it parsed, so a smuggled or rewritten request shows up as what the origin got.
"""

from __future__ import annotations

import httptools
from twisted.internet import defer
from twisted.internet.protocol import Protocol

from .helpers import ProxyTestCase, parse_responses, run_reactor_for

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Received:
    """One request as the origin parsed it."""

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return b", ".join(values) if values else None


class RecordingOrigin(Protocol):
    """Parses what the proxy sends, records each request, and answers each with ``answer``."""

    def __init__(self, log: list[Received], raw: list[bytes], answer: bytes) -> None:
        self.log, self.raw, self.answer = log, raw, answer
        self.parser = httptools.HttpRequestParser(self)
        self.current = Received()

    def dataReceived(self, data: bytes) -> None:
        self.raw.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.loseConnection()

    def on_url(self, url: bytes) -> None:
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.log.append(self.current)
        self.current = Received()
        self.transport.write(self.answer)


class HardeningTestCase(ProxyTestCase):
    def start_recording_origin(self, answer: bytes = OK) -> int:
        self.received: list[Received] = []
        self.raw: list[bytes] = []
        return self.start_raw_origin(lambda: RecordingOrigin(self.received, self.raw, answer))

    @defer.inlineCallbacks
    def refused(self, data: bytes, status: int = 400):  # type: ignore[no-untyped-def]
        """Send ``data``: the proxy answers ``status`` and closes; the origin gets nothing."""
        client = yield self.connect()
        client.send(data)
        received = yield client.until(lambda data: False)  # resolved by the close
        responses = parse_responses(received)
        self.assertEqual([r.status for r in responses], [status], received)
        self.assertEqual(responses[0].header(b"Connection"), b"close")
        yield run_reactor_for(3)
        self.assertEqual(self.raw, [], "the origin was sent something")


class ConnectionFramingTests(HardeningTestCase):
    """A Connection header cannot strip Content-Length, Transfer-Encoding or Host from a message."""

    @defer.inlineCallbacks
    def test_a_request_whose_connection_names_its_framing_is_refused(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())
        smuggled = b"GET /admin HTTP/1.1\r\nHost: a\r\nX-Ignore: "
        for connection in (b"content-length", b"Content-Length", b"close, content-length", b"CONTENT-LENGTH ,keep-alive"):
            yield self.refused(
                b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (connection, len(smuggled), smuggled)
            )
        for connection in (b"transfer-encoding", b"Transfer-Encoding, close"):
            yield self.refused(
                b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n" % connection
            )
        for connection in (b"keep-alive, Host", b"host", b"HOST"):
            yield self.refused(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: %s\r\n\r\n" % connection)
        # Two Connection lines: the second still counts.
        yield self.refused(
            b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: content-length\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )

    @defer.inlineCallbacks
    def test_other_listed_headers_are_still_removed_and_the_body_keeps_its_length(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())
        (response,) = yield self.request(
            b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 3\r\n\r\nabc"
        )
        self.assertEqual(response.status, 200)
        (seen,) = self.received
        self.assertEqual((seen.target, seen.body, seen.header(b"Content-Length")), (b"/x", b"abc", b"3"))
        self.assertIsNone(seen.header(b"X-Secret"))

    @defer.inlineCallbacks
    def check_response_framing(self, answer: bytes, body: bytes):  # type: ignore[no-untyped-def]
        """The origin's ``answer`` reaches the client framed, and the connection goes on with a second exchange."""
        self.start_proxy(self.start_recording_origin(answer))
        client = yield self.connect()
        client.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        (first,) = yield client.responses(1)
        self.assertEqual(first.body, body)
        self.assertTrue(first.header(b"Content-Length") is not None or first.header(b"Transfer-Encoding") == b"chunked")
        client.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        responses = yield client.responses(2)
        self.assertEqual([r.body for r in responses], [body, body])
        self.assertEqual([r.target for r in self.received], [b"/1", b"/2"])

    def test_a_response_whose_connection_names_content_length_keeps_it(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello", b"hello")

    def test_a_response_whose_connection_names_its_framing_in_any_case_keeps_it(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CONTENT-LENGTH, Transfer-Encoding\r\nContent-Length: 5\r\n\r\nhello",
            b"hello")

    def test_a_chunked_response_whose_connection_names_transfer_encoding_stays_chunked(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n", b"hello")
