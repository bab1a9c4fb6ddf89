"""Request parsing and strict framing, driven through StringTransport with a Clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from rubrisproxy.config import BackendConfig, Limits, ServerConfig, Timeouts
from rubrisproxy.frontend import ClientConnection, Frontend
from rubrisproxy.http import HTTPError, RequestParser
from rubrisproxy.origin import OriginConnection

from .helpers import build_frontend, parse_responses

_TERMINATIONS = {501: "not-implemented", 408: "request-timeout"}

class FakeConnector:
    """Connects origin protocols to StringTransports, synchronously."""

    connect_timeout = 1.0

    def __init__(self) -> None:
        self.connections: list[OriginConnection] = []

    def connect(self, server, protocol):  # type: ignore[no-untyped-def]
        protocol.makeConnection(StringTransport())
        self.connections.append(protocol)
        return defer.succeed(protocol)


def make_frontend(clock: Clock, limits: Limits | None = None, timeouts: Timeouts | None = None):  # type: ignore[no-untyped-def]
    timeouts = timeouts or Timeouts(client=30, http_request=10, http_keep_alive=5, connect=5, server=60)
    connector = FakeConnector()
    backend = BackendConfig(name="app", servers=(ServerConfig("s1", "127.0.0.1", 1),))
    frontend = build_frontend(clock, backend, timeouts=timeouts, limits=limits, connector=connector)
    return frontend, connector


def connect(frontend: Frontend) -> tuple[ClientConnection, StringTransport]:
    protocol = ClientConnection(frontend)
    transport = StringTransport(peerAddress=None)
    protocol.makeConnection(transport)
    return protocol, transport


class OriginConnectionTests(unittest.TestCase):
    """An origin connection derives from no Twisted class (compiled, it is a native class): Twisted drives it by
    its methods and its declared interface."""

    def test_it_is_a_half_closeable_protocol_with_its_name_as_log_prefix(self) -> None:
        frontend, connector = make_frontend(Clock())
        protocol, _ = connect(frontend)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        (origin,) = connector.connections
        self.assertIs(IHalfCloseableProtocol(origin, None), origin)  # what tcp.Connection asks on a FIN
        self.assertEqual((origin.logPrefix(), origin.transport.value()[:14]), ("OriginConnection", b"GET / HTTP/1.1"))


class RefusalTests(unittest.TestCase):
    """Each malformed request gets its status, a short body and a clean close; no origin is contacted."""

    def refuse(self, request: bytes, status: int, limits: Limits | None = None) -> None:
        frontend, connector = make_frontend(Clock(), limits)
        protocol, transport = connect(frontend)
        protocol.dataReceived(request)
        (response,) = parse_responses(transport.value())
        self.assertEqual(response.status, status, transport.value())
        self.assertEqual(response.header(b"Connection"), b"close")
        self.assertTrue(response.body.startswith(b"%d " % status))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(connector.connections, [])
        record = frontend.access_log.entries[-1]
        self.assertEqual((record.status, record.termination), (status, _TERMINATIONS.get(status, "bad-request")))

    def test_content_length_with_transfer_encoding(self):
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400)

    def test_duplicate_content_length(self):
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400)

    def test_malformed_content_length(self):
        for value in (b"3x", b"+3", b"-1", b"3, 3", b" "):
            self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\nabc", 400)

    def test_unknown_transfer_coding(self):
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501)
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501)

    def test_obs_fold(self):
        self.refuse(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", 400)

    def test_bare_cr_and_lf_in_head(self):
        self.refuse(b"GET / HTTP/1.1\nHost: a\n\n", 400)
        self.refuse(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400)

    def test_long_request_line(self):
        self.refuse(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414)

    def test_long_request_line_arriving_slowly(self):
        frontend, _ = make_frontend(Clock(), Limits(max_request_line=100))
        protocol, transport = connect(frontend)
        protocol.dataReceived(b"GET /")
        for _ in range(20):
            protocol.dataReceived(b"aaaaaaaaaa")
        self.assertEqual(parse_responses(transport.value())[0].status, 414)

    def test_large_headers(self):
        self.refuse(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 40000 + b"\r\n\r\n", 431)
        self.refuse(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: v\r\n" * 200 + b"\r\n", 431)

    def test_body_over_limit(self):
        limits = Limits(max_body_size=10)
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413, limits)

    def test_missing_or_repeated_host(self):
        self.refuse(b"GET / HTTP/1.1\r\n\r\n", 400)
        self.refuse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)

    def test_invalid_host(self):
        self.refuse(b'GET / HTTP/1.1\r\nHost: a", for=6.6.6.6;host="x\r\n\r\n', 400)

    def test_connection_naming_the_framing(self):
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close, Content-Length\r\nContent-Length: 1\r\n\r\nx", 400)

    def test_path_no_route_can_read(self):
        self.refuse(b"GET /a/..%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", 400)

    def test_unsupported_version(self):
        self.refuse(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)

    def test_unknown_method(self):
        self.refuse(b"FROB / HTTP/1.1\r\nHost: a\r\n\r\n", 501)

    def test_a_tab_after_the_method_is_a_malformed_line_not_an_unknown_method(self):
        self.refuse(b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n", 400)

    def test_unknown_expectation(self):
        self.refuse(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417)

    def test_not_origin_form(self):
        self.refuse(b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400)

    def test_connect_on_reverse_frontend(self):
        self.refuse(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501)


class ParserTests(unittest.TestCase):
    """The parser on its own: events, chunked bodies, trailers dropped."""

    class Recorder:
        def __init__(self) -> None:
            self.events: list[object] = []

        def request_head(self, head):  # type: ignore[no-untyped-def]
            self.events.append(("head", head.method, head.target, head.chunked, head.content_length))

        def request_body(self, data):  # type: ignore[no-untyped-def]
            self.events.append(("body", data))

        def request_end(self):  # type: ignore[no-untyped-def]
            self.events.append("end")

    def test_chunked_body_byte_by_byte(self):
        recorder = self.Recorder()
        parser = RequestParser(recorder)
        message = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
        for i in range(len(message)):
            parser.feed(message[i : i + 1])
        body = b"".join(e[1] for e in recorder.events if isinstance(e, tuple) and e[0] == "body")
        self.assertEqual(recorder.events[0], ("head", b"POST", b"/u", True, None))
        self.assertEqual((body, recorder.events[-1]), (b"hello", "end"))

    def test_chunked_body_over_limit(self):
        parser = RequestParser(self.Recorder(), Limits(max_body_size=4))
        with self.assertRaises(HTTPError) as caught:
            parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual(caught.exception.status, 413)

    def test_absolute_form_and_http10(self):
        recorder = self.Recorder()
        parser = RequestParser(recorder)
        parser.feed(b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\nGET / HTTP/1.0\r\n\r\n")
        self.assertEqual([e[2] for e in recorder.events if isinstance(e, tuple)], [b"http://example.com/x", b"/"])


class UpgradeWithBodyTests(unittest.TestCase):
    """An upgrade request with a body (``curl --http2 -d``: ``Upgrade: h2c`` on a POST) is never switched: it is
    relayed as a plain request with its body, as HAProxy relays it. llhttp, as httptools drives it, skips such a
    request's body; the proxy sent the origin a head promising a body that never came, and the body's bytes, held
    as if after an upgrade, were dropped: an origin answering before the body then read the next request on its
    pooled connection as that body (request smuggling)."""

    H2C = b"POST /u HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMA\r\n"

    class Recorder(ParserTests.Recorder):
        def request_head(self, head):  # type: ignore[no-untyped-def]
            super().request_head(head)
            self.events.append(("upgrade", head.upgrade))

        def request_upgraded(self, rest):  # type: ignore[no-untyped-def]
            self.events.append(("upgraded", rest))

    def parse(self, data: bytes, by_byte: bool = False) -> list[object]:
        recorder = self.Recorder()
        parser = RequestParser(recorder)
        for piece in ([data[i:i + 1] for i in range(len(data))] if by_byte else [data]):
            parser.feed(piece)
        return recorder.events

    def test_a_length_body_is_read_and_what_follows_is_a_request(self):
        for by_byte in (False, True):
            events = self.parse(self.H2C + b"Content-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n", by_byte)
            body = b"".join(e[1] for e in events if isinstance(e, tuple) and e[0] == "body")
            heads = [e for e in events if isinstance(e, tuple) and e[0] in ("head", "upgrade", "upgraded")]
            self.assertEqual(body, b"hello")
            self.assertEqual(heads, [("head", b"POST", b"/u", False, 5), ("upgrade", False),
                                     ("head", b"GET", b"/next", False, None), ("upgrade", False)])
            self.assertEqual(events.count("end"), 2)

    def test_a_chunked_body_is_read(self):
        events = self.parse(self.H2C + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual([e for e in events if e != ("upgrade", False)],
                         [("head", b"POST", b"/u", True, None), ("body", b"hello"), "end"])

    def test_a_websocket_upgrade_with_a_body_is_refused(self):
        with self.assertRaises(HTTPError) as caught:
            self.parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(caught.exception.status, 400)

    def test_an_upgrade_without_a_body_is_still_one(self):
        events = self.parse(b"GET /u HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nrest")
        self.assertEqual(events[-1], ("upgraded", b"rest"))

    def test_the_origin_gets_the_body_and_the_request_after_it_is_answered(self):
        clock = Clock()
        frontend, connector = make_frontend(clock)
        protocol, transport = connect(frontend)
        protocol.dataReceived(self.H2C + b"Content-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        (origin,) = connector.connections
        sent = origin.transport.value()
        self.assertTrue(sent.startswith(b"POST /u HTTP/1.1\r\n"), sent)
        self.assertTrue(sent.endswith(b"\r\n\r\nhello"), sent)
        self.assertNotIn(b"pgrade", sent)  # the offer to switch is the proxy's to take or leave: left
        origin.transport.clear()
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(origin.transport.value().startswith(b"GET /next HTTP/1.1\r\n"))
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        self.assertEqual([r.body for r in parse_responses(transport.value())], [b"ok", b"next"])
        self.assertFalse(transport.disconnecting)
