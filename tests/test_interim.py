"""Three HTTP/1 conformance points, as HAProxy 2.6 handles them: an origin's interim (1xx) responses are relayed
(RFC 9110 15.2), an HTTP/1.x request or status line with x > 1 is read as 1.1 (RFC 9112 2.3), and a trailer field
naming Content-Length, dropped as trailers are, neither cuts the response nor spoils either connection."""

from __future__ import annotations

import os
import shutil

from h2.events import InformationalResponseReceived
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.config import BackendConfig, ServerConfig
from rubrisproxy.frontend import ClientConnection
from rubrisproxy.http import HTTPError, RequestParser, ResponseHead, ResponseParser
from rubrisproxy.http._response import MAX_RESPONSE_HEAD
from rubrisproxy.origin import OriginConnection

from . import test_origin_desync as desync
from .h2client import H2Client
from .helpers import MemoryAccessLog, ProxyTestCase, build_frontend, parse_responses
from .test_framing import FakeConnector, connect
from .test_origin_desync import DesyncOrigin, _Recorder

VIA = b"Via: 1.1 rubrisproxy\r\n"
EARLY_HINTS = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
    b"Keep-Alive: timeout=5\r\nProxy-Foo: 1\r\nContent-Length: 0\r\n\r\n"
)
#: What the client gets of EARLY_HINTS: the hop-by-hop headers (and those Connection lists) and the framing dropped.
EARLY_HINTS_RELAYED = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n" + VIA + b"\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OK_RELAYED = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + VIA + b"\r\nok"
TRAILER_CL = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 9\r\n\r\n"


class _Interims(_Recorder):
    def response_interim(self, head: ResponseHead) -> None:
        self.events.append(("interim", head.status, head.reason, head.forward))


def parse(data: bytes, method: bytes = b"GET") -> tuple[ResponseParser, list[tuple[object, ...]]]:
    parser, recorder = ResponseParser(), _Interims()
    parser.start(recorder, method)
    parser.feed(data)
    return parser, recorder.events


class InterimParserTests(SynchronousTestCase):
    def test_interim_heads_are_reported_with_their_end_to_end_headers(self) -> None:
        parser, events = parse(CONTINUE + PROCESSING + EARLY_HINTS + OK)
        self.assertEqual(events, [
            ("interim", 100, b"Continue", []),
            ("interim", 102, b"Processing", []),
            ("interim", 103, b"Early Hints", [(b"Link", b"</a.css>; rel=preload")]),
            ("head", 200, b"OK", True), ("body", b"ok"), ("end",),
        ])
        self.assertEqual((parser.complete, parser.reusable, parser.overrun), (True, True, False))

    def test_an_interim_status_llhttp_would_read_a_body_after_is_refused(self) -> None:
        # After a 1xx but 100, 102 and 103, llhttp frames a body by these headers (RFC 9110 8.6 and RFC 9112 6.1
        # forbid them there): it would reach the client before any response head.
        for framing in (b"Content-Length: 3", b"Transfer-Encoding: chunked"):
            with self.assertRaises(HTTPError) as caught:
                parse(b"HTTP/1.1 199 Odd\r\n%s\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" % framing)
            self.assertEqual(caught.exception.status, 502)
        _, events = parse(b"HTTP/1.1 199 Odd\r\nX-A: 1\r\n\r\n" + OK)
        self.assertEqual(events[0], ("interim", 199, b"Odd", [(b"X-A", b"1")]))
        for status in (b"100 Continue", b"102 Processing", b"103 Early Hints"):  # never a body: the headers dropped
            parser, events = parse(b"HTTP/1.1 %s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n%s" % (status, OK))
            self.assertEqual([e[:2] for e in events], [("interim", int(status[:3])), ("head", 200), ("body", b"ok"), ("end",)])
            self.assertEqual((events[0][3], parser.reusable), ([], True))

    def test_an_unasked_101_is_no_interim_response(self) -> None:
        parser, recorder = ResponseParser(), _Interims()
        parser.start(recorder, b"GET")
        with self.assertRaises(HTTPError) as caught:
            parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nHELLO")
        self.assertEqual((caught.exception.status, recorder.events), (502, []))

    def test_a_flood_of_interim_responses_is_bounded_by_the_head_limit(self) -> None:
        parser, recorder = ResponseParser(), _Interims()
        parser.start(recorder, b"GET")
        with self.assertRaises(HTTPError) as caught:
            for _ in range(MAX_RESPONSE_HEAD // 1000 + 2):
                parser.feed(CONTINUE * 40)  # 1000 bytes a read
        self.assertEqual(caught.exception.status, 502)
        self.assertLessEqual(len(recorder.events), (MAX_RESPONSE_HEAD + 1000) // len(CONTINUE))  # one read past it

    def test_a_later_http1_status_line_reads_as_11(self) -> None:
        parser, events = parse(b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert parser.head is not None
        self.assertEqual((parser.head.version, parser.reusable), (b"1.1", True))
        parser, _ = parse(b"HTTP/1.9 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parser.reusable, False)
        for version in (b"3.0", b"0.5", b"9.9"):
            with self.assertRaises(HTTPError) as caught:
                parse(b"HTTP/%s 200 OK\r\nContent-Length: 2\r\n\r\nok" % version)
            self.assertEqual(caught.exception.status, 502)

    def test_a_trailer_naming_content_length_is_dropped_as_any_trailer(self) -> None:
        parser, events = parse(TRAILER_CL)
        self.assertEqual(events, [("head", 200, b"OK", True), ("body", b"ok"), ("end",)])
        self.assertEqual((parser.complete, parser.reusable, parser.overrun), (True, True, False))

    def test_content_length_with_transfer_encoding_in_a_head_is_still_refused(self) -> None:
        both = (b"Content-Length: 5\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: chunked\r\nContent-Length: 5")
        for fields in both:
            for method, status in ((b"GET", b"200 OK"), (b"HEAD", b"200 OK"), (b"GET", b"304 Not Modified"),
                                   (b"GET", b"204 No Content")):
                with self.assertRaises(HTTPError) as caught:
                    parse(b"HTTP/1.1 %s\r\n%s\r\n\r\n0\r\n\r\n" % (status, fields), method)
                self.assertEqual(caught.exception.status, 502)


class RequestVersionTests(SynchronousTestCase):
    def head(self, data: bytes):  # type: ignore[no-untyped-def]
        heads = []

        class Handler:
            request_head = heads.append

            def request_body(self, data: bytes) -> None: ...
            def request_end(self) -> None: ...
            def request_upgraded(self, rest: bytes) -> None: ...

        RequestParser(Handler()).feed(data)
        return heads[0]

    def test_a_later_http1_request_reads_as_11(self) -> None:
        for minor in range(2, 10):
            head = self.head(b"GET / HTTP/1.%d\r\nHost: a\r\n\r\n" % minor)
            self.assertEqual((head.version, head.wants_close), (b"1.1", False))
        self.assertTrue(self.head(b"GET / HTTP/1.2\r\nHost: a\r\nConnection: close\r\n\r\n").wants_close)
        with self.assertRaises(HTTPError) as caught:
            self.head(b"GET / HTTP/1.2\r\n\r\n")  # a Host is required as of HTTP/1.1
        self.assertEqual(caught.exception.status, 400)

    def test_the_version_sent_is_kept_beside_the_one_served(self) -> None:
        for sent in (b"1.0", b"1.1", b"1.2", b"1.9"):
            head = self.head(b"GET / HTTP/%s\r\nHost: a\r\n\r\n" % sent)
            self.assertEqual(head.version, b"1.0" if sent == b"1.0" else b"1.1")
            self.assertEqual(getattr(head.version, "sent", None), sent.decode() if sent > b"1.1" else None)

    def test_another_major_version_is_505(self) -> None:
        for version in (b"2.0", b"3.0", b"0.9", b"0.5", b"9.1"):
            with self.assertRaises(HTTPError) as caught:
                self.head(b"GET / HTTP/%s\r\nHost: a\r\n\r\n" % version)
            self.assertEqual(caught.exception.status, 505, version)


class ExchangeTests(SynchronousTestCase):
    """Through a frontend on StringTransports: what the client's bytes are, exactly."""

    def setUp(self) -> None:
        self.connector = FakeConnector()
        self.access_log = MemoryAccessLog()
        backend = BackendConfig(name="app", servers=(ServerConfig("s1", "127.0.0.1", 1),))
        self.frontend = build_frontend(Clock(), backend, connector=self.connector, access_log=self.access_log)

    def ask(self, request: bytes) -> tuple[ClientConnection, StringTransport, OriginConnection]:
        protocol, transport = connect(self.frontend)
        protocol.dataReceived(request)
        return protocol, transport, self.connector.connections[-1]

    def test_an_http11_client_gets_the_interim_responses_first(self) -> None:
        _, transport, origin = self.ask(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        origin.dataReceived(CONTINUE)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n" + VIA + b"\r\n")  # as it comes
        origin.dataReceived(PROCESSING + EARLY_HINTS + OK)
        self.assertEqual(transport.value(), (
            b"HTTP/1.1 100 Continue\r\n" + VIA + b"\r\nHTTP/1.1 102 Processing\r\n" + VIA + b"\r\n"
            + EARLY_HINTS_RELAYED + OK_RELAYED
        ))
        self.assertFalse(transport.disconnecting)
        (record,) = self.access_log.entries
        self.assertEqual(record.status, 200)  # the final status only
        self.assertEqual(record.bytes_out, len(transport.value()))

    def test_an_http10_client_gets_none(self) -> None:
        _, transport, origin = self.ask(b"GET / HTTP/1.0\r\n\r\n")
        origin.dataReceived(CONTINUE + EARLY_HINTS + OK)
        (response,) = parse_responses(transport.value())
        self.assertEqual((response.status, response.body), (200, b"ok"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_after_the_proxys_own_100_the_origins_is_not_relayed(self) -> None:
        protocol, transport, origin = self.ask(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")  # the proxy's, once connected
        protocol.dataReceived(b"hello")
        origin.dataReceived(CONTINUE + EARLY_HINTS + OK)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n" + EARLY_HINTS_RELAYED + OK_RELAYED)

    def test_without_expect_the_origins_100_is_relayed(self) -> None:
        _, transport, origin = self.ask(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        origin.dataReceived(CONTINUE + OK)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n" + VIA + b"\r\n" + OK_RELAYED)

    def test_an_http12_request_is_served_as_11(self) -> None:
        protocol, transport, origin = self.ask(b"GET /a HTTP/1.2\r\nHost: a\r\n\r\n")
        self.assertTrue(origin.transport.value().startswith(b"GET /a HTTP/1.1\r\n"))
        origin.transport.clear()
        origin.dataReceived(OK)
        protocol.dataReceived(b"GET /b HTTP/1.2\r\nHost: a\r\n\r\n")
        self.assertTrue(origin.transport.value().startswith(b"GET /b HTTP/1.1\r\n"))  # the same connection
        origin.dataReceived(b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(transport.value(), OK_RELAYED * 2)
        self.assertFalse(transport.disconnecting)
        self.assertEqual([r.version for r in self.access_log.entries], ["1.2"] * 2)  # logged as the client wrote it

    def test_a_trailer_naming_content_length_leaves_both_connections_reusable(self) -> None:
        protocol, transport, origin = self.ask(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        origin.transport.clear()
        origin.dataReceived(TRAILER_CL)
        self.assertEqual(transport.value(), (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + VIA + b"\r\n2\r\nok\r\n0\r\n\r\n"
        ))
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(self.connector.connections), 1)
        self.assertTrue(origin.transport.value().startswith(b"GET /next HTTP/1.1\r\n"))
        origin.dataReceived(OK)
        self.assertEqual([(r.status, r.body) for r in parse_responses(transport.value())], [(200, b"ok")] * 2)
        self.assertEqual([r.termination for r in self.access_log.entries], ["ok", "ok"])


_CURL_ANSWERS = {
    b"/early": CONTINUE + EARLY_HINTS + OK,
    b"/trailer": TRAILER_CL,
    b"/next": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
}


class _H2Client(H2Client):
    """Keeps the headers of the informational responses too."""

    def __init__(self) -> None:
        super().__init__()
        self.interim_headers: list[list[tuple[bytes, bytes]]] = []

    def _event(self, event: object) -> None:
        if isinstance(event, InformationalResponseReceived):
            self.interim_headers.append(list(event.headers))
        super()._event(event)


class RealClientTests(ProxyTestCase):
    """Clients nobody here wrote (curl, nghttp) and the h2 library, against the proxy in front of a raw origin."""

    def setUp(self) -> None:
        DesyncOrigin.connections = []
        self.patch(desync, "ANSWERS", _CURL_ANSWERS)  # what DesyncOrigin answers, by path
        self.start_proxy(self.start_raw_origin(DesyncOrigin))

    def run_tool(self, tool: str, *args: str):  # type: ignore[no-untyped-def]
        path = shutil.which(tool)
        if path is None:
            if os.environ.get("CI"):
                raise AssertionError(f"no {tool}")
            raise self.skipTest(f"{tool} is not installed")
        return getProcessOutputAndValue(path, list(args), env=dict(os.environ))

    def curl(self, *args: str):  # type: ignore[no-untyped-def]
        return self.run_tool("curl", "-sS", "--max-time", "10", *args)

    @defer.inlineCallbacks
    def test_an_http2_client_gets_informational_headers(self):  # type: ignore[no-untyped-def]
        client = _H2Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        stream = client.request(b"/early")
        yield self.poll(lambda: client.answer(stream).ended, "the stream answered")
        answer = client.answer(stream)
        self.assertEqual((answer.informational, answer.status, answer.body), ([b"100", b"103"], 200, b"ok"))
        self.assertIn((b"link", b"</a.css>; rel=preload"), client.interim_headers[1])
        self.assertNotIn(b"x-hop", dict(client.interim_headers[1]))

    @defer.inlineCallbacks
    def test_nghttp_sees_the_early_hints(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.run_tool("nghttp", "-v", f"http://127.0.0.1:{self.proxy_port}/early")
        self.assertEqual(code, 0, err)
        self.assertIn(b":status: 103", out)
        self.assertLess(out.index(b":status: 103"), out.index(b":status: 200"))

    @defer.inlineCallbacks
    def test_curl_sees_the_early_hints(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.curl("-v", f"http://127.0.0.1:{self.proxy_port}/early")
        self.assertEqual((code, out), (0, b"ok"), err)
        self.assertIn(b"< HTTP/1.1 100 Continue", err)
        self.assertIn(b"< HTTP/1.1 103 Early Hints\r\n< Link: </a.css>; rel=preload", err)
        self.assertLess(err.index(b"< HTTP/1.1 103"), err.index(b"< HTTP/1.1 200 OK"))

    @defer.inlineCallbacks
    def test_curl_http10_sees_no_interim_response(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.curl("-v", "--http1.0", f"http://127.0.0.1:{self.proxy_port}/early")
        self.assertEqual((code, out), (0, b"ok"), err)
        self.assertNotIn(b"< HTTP/1.1 10", err)

    @defer.inlineCallbacks
    def test_curl_reuses_the_connection_after_a_trailer_naming_content_length(self):  # type: ignore[no-untyped-def]
        url = f"http://127.0.0.1:{self.proxy_port}"
        out, err, code = yield self.curl("-v", f"{url}/trailer", f"{url}/next")
        self.assertEqual((code, out), (0, b"oknext"), err)
        self.assertIn(b"Re-using existing connection", err)
        self.assertEqual(len(DesyncOrigin.connections), 1)
        self.assertEqual(len(DesyncOrigin.connections[0].requests), 2)


class LoggedVersionTests(ProxyTestCase):
    """The access log records the HTTP version the client wrote (an HTTP/1.2 request is served as 1.1, logged 1.2)."""

    @defer.inlineCallbacks
    def test_the_access_log_says_what_the_client_sent(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_web_origin())
        client = yield self.connect()
        for sent in (b"1.1", b"1.2", b"1.9", b"1.0"):
            client.send(b"GET / HTTP/%s\r\nHost: test\r\n\r\n" % sent)
        responses = yield client.responses(4)
        self.assertEqual([response.status for response in responses], [200] * 4)
        yield self.poll(lambda: len(self.access_log.entries) == 4, "four requests logged")
        self.assertEqual([entry.version for entry in self.access_log.entries], ["1.1", "1.2", "1.9", "1.0"])

    @defer.inlineCallbacks
    def test_an_upgrade_with_a_body_keeps_its_version(self):  # type: ignore[no-untyped-def]
        # Parsed again without its Upgrade (RequestParser._skip): from the version it came with.
        self.start_proxy(self.start_web_origin())
        responses = yield self.request(b"POST / HTTP/1.2\r\nHost: test\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
                                       b"Content-Length: 2\r\n\r\nok")
        self.assertEqual(responses[0].status, 200)
        yield self.poll(lambda: len(self.access_log.entries) == 1, "the request logged")
        self.assertEqual(self.access_log.entries[0].version, "1.2")
