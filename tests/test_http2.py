"""HTTP/2 on the client side: streams through the HTTP/1.1 origin pool, flow control, the limits and defences
against hostile frames, timeouts, GOAWAY on drain, and clients nobody here wrote (curl, nghttp, h2load)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from typing import Any

from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rubrisproxy.clients import ClientRegistry
from rubrisproxy.config import (
    CertificateFiles,
    ClientsConfig,
    CommandLine,
    Http2Config,
    ListenerTLSConfig,
    WebSocketConfig,
    load_config,
)
from rubrisproxy.frontend import Frontend, FrontendRules, PeerSettings, connection_factory, drain
from rubrisproxy.frontend._h2head import response_head
from rubrisproxy.frontend._h2response import HIGH_WATER
from rubrisproxy.lifecycle import ConnectionEnd, LifecycleHandlers
from rubrisproxy.listening import ListeningService, ListenSettings
from rubrisproxy.reload import Reloader
from rubrisproxy.service import build_service

from .browser import find_chromium, spawn, start_devtools, wait_exit
from .eio.harness import spawn_server
from .h2client import PREFACE, H2Client
from .helpers import ProxyTestCase, run_reactor_for
from .test_lifecycle import Recorder
from .test_rules import frontend_config
from .tlscerts import CertificateAuthority, spki_hash
from .wsecho import EchoBackendFactory, listen_echo_backend

CHILD_GUARD = 30.0


class _Silent(Protocol):
    """An origin that reads requests and never answers."""

    connections: list[_Silent] = []

    def connectionMade(self) -> None:
        _Silent.connections.append(self)


class H2Case(ProxyTestCase):
    def setUp(self) -> None:
        self.origin = self.start_web_origin()
        _Silent.connections = []

    def proxy(self, http2: Http2Config | None = None, **overrides: Any) -> Frontend:
        frontend = self.start_proxy(self.origin, **overrides)
        if http2 is not None:
            frontend.http2 = http2
        self.frontend = frontend
        return frontend

    @defer.inlineCallbacks
    def h2(self, client: H2Client | None = None):  # type: ignore[no-untyped-def]
        client = client or H2Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        return client

    def done(self, client: H2Client, *streams: int):  # type: ignore[no-untyped-def]
        return self.poll(lambda: all(client.answer(s).ended or client.answer(s).reset is not None for s in streams),
                         f"streams {streams} answered")


class ResponseHeadTests(SynchronousTestCase):
    def test_a_204_carries_no_content_length(self) -> None:
        """An origin's length on a 204 would make HTTP/2 clients refuse the stream (RFC 9110 8.6)."""
        head = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: b\r\n\r\n"
        self.assertEqual(response_head(head, len(head) - 4), (204, [(b":status", b"204"), (b"x-a", b"b")]))
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        self.assertEqual(response_head(head, len(head) - 4), (200, [(b":status", b"200"), (b"content-length", b"5")]))


class RequestTests(H2Case):
    @defer.inlineCallbacks
    def test_get_by_prior_knowledge_is_logged_as_http2(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        stream = client.request(b"/hello?x=1")
        yield self.done(client, stream)
        answer = client.answer(stream)
        self.assertEqual((answer.status, answer.body), (200, b"path=/hello?x=1"))
        self.assertEqual(answer.headers[b"via"], b"1.1 rubrisproxy")
        self.assertNotIn(b"connection", answer.headers)
        (record,) = self.access_log.entries
        self.assertEqual((record.version, record.method, record.target, record.status, record.termination),
                         ("2.0", "GET", "/hello?x=1", 200, "ok"))

    @defer.inlineCallbacks
    def test_streams_are_multiplexed_on_the_origin_pool(self):  # type: ignore[no-untyped-def]
        frontend = self.proxy()
        client = yield self.h2()
        streams = [client.request(b"/s%d" % i) for i in range(20)]
        yield self.done(client, *streams)
        for i, stream in enumerate(streams):
            self.assertEqual(client.answer(stream).body, b"path=/s%d" % i)
        self.assertEqual(len(frontend.connections), 1)
        (connection,) = frontend.connections
        self.assertEqual((connection.requests, connection.responses), (20, 20))

    @defer.inlineCallbacks
    def test_origin_sees_host_forwarding_and_joined_cookies(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        stream = client.request(b"/headers", headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2"),
                                                      (b"x-forwarded-for", b"6.6.6.6")])
        yield self.done(client, stream)
        lines = client.answer(stream).body.split(b"\n")
        self.assertIn(b"Host: example.test", lines)
        self.assertIn(b"Cookie: a=1; b=2", lines)
        self.assertIn(b"X-Forwarded-For: 127.0.0.1", lines)
        self.assertIn(b"Via: 2.0 rubrisproxy", lines)

    @defer.inlineCallbacks
    def test_request_body_larger_than_the_windows(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        body = bytes(range(256)) * 1200  # 300 KiB: several windows' worth
        stream = client.request(b"/echo", method=b"POST", end=False)
        left = client.send_body(stream, body)
        self.assertTrue(left, "the client's window covered it all")
        while left:
            yield self.poll(lambda: client.h2.local_flow_control_window(stream) > 0, "the window opened")
            left = client.send_body(stream, left)
        yield self.done(client, stream)
        self.assertEqual(client.answer(stream).body, body)

    @defer.inlineCallbacks
    def test_a_bad_request_is_refused_on_its_stream_only(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        bad = client.request(b"/x", headers=[(b"expect", b"something")])
        good = client.request(b"/after")
        yield self.done(client, bad, good)
        self.assertEqual(client.answer(bad).status, 417)
        self.assertEqual(client.answer(good).body, b"path=/after")

    @defer.inlineCallbacks
    def test_a_request_line_the_origin_would_read_otherwise_is_refused(self):  # type: ignore[no-untyped-def]
        """What an HTTP/1.1 origin's request line is made of: nothing in a method or path may split it."""
        self.proxy()
        client = yield self.h2()
        bad = [client.request(path, method=method) for method, path in (
            (b"GET", b"/p10 HTTP/1.0"), (b"GET", b"/a b"), (b"GET /admin", b"/x"), (b"GET", b"/tab\tx"),
            (b"GET", b"/ctl\x01x"), (b"GET", b"/del\x7fx"), (b"G(T", b"/x"), (b"GET", b"http://evil.example/abs"),
        )]
        good = client.request(b"/after")
        yield self.done(client, *bad, good)
        self.assertEqual([client.answer(stream).status for stream in bad], [400] * len(bad))
        self.assertEqual(client.answer(good).body, b"path=/after")
        self.assertEqual([record.target for record in self.access_log.entries if record.status == 200], ["/after"])

    @defer.inlineCallbacks
    def test_a_reset_stream_aborts_its_exchange_not_the_others(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        self.proxy()
        client = yield self.h2()
        stream = client.request(b"/slow")
        yield self.poll(lambda: _Silent.connections, "the origin got the request")
        client.reset(stream)
        yield self.poll(lambda: self.access_log.entries, "the exchange ended")
        self.assertEqual(self.access_log.entries[0].termination, "client-abort")
        self.assertFalse(client.lost)

    @defer.inlineCallbacks
    def test_a_request_refused_as_it_starts_whose_body_came_with_it(self):  # type: ignore[no-untyped-def]
        """HEADERS and DATA with END_STREAM in one read, answered at its start (a CONNECT: 501): the stream is
        closed both ways by the answer, and no RST_STREAM follows."""
        self.proxy(http2=Http2Config(websocket=False))
        client = yield self.h2()
        stream = client.request(b"/", method=b"CONNECT", body=b"body", headers=[(b":protocol", b"websocket")])
        after = client.request(b"/after")
        yield self.done(client, stream, after)
        self.assertEqual((client.answer(stream).status, client.answer(stream).reset), (501, None))
        self.assertEqual(client.answer(after).body, b"path=/after")
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_expect_100_continue(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        stream = client.request(b"/echo", method=b"POST", end=False, headers=[(b"expect", b"100-continue")])
        yield self.poll(lambda: client.answer(stream).informational, "100 Continue")
        self.assertEqual(client.answer(stream).informational, [b"100"])
        client.send_body(stream, b"the body")
        yield self.done(client, stream)
        self.assertEqual((client.answer(stream).status, client.answer(stream).body), (200, b"the body"))

    @defer.inlineCallbacks
    def test_head_and_204_end_without_body(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        head = client.request(b"/x", method=b"HEAD")
        empty = client.request(b"/status/204")
        yield self.done(client, head, empty)
        self.assertEqual((client.answer(head).status, client.answer(head).body), (200, b""))
        self.assertEqual((client.answer(empty).status, client.answer(empty).body), (204, b""))


class FlowControlTests(H2Case):
    @defer.inlineCallbacks
    def test_a_stream_that_is_not_read_pauses_its_origin_only(self):  # type: ignore[no-untyped-def]
        """The client never acknowledges: the big response fills its window and the proxy's hold, its origin's
        reads pause, and a small response on another stream still comes."""
        frontend = self.proxy()
        # As browsers do, the connection's window is wide; but this client never acknowledges a stream's data.
        client = yield self.h2(H2Client(acknowledge=False, window=10_000_000))
        big = client.request(b"/big/4000000")
        yield self.poll(lambda: len(client.answer(big).body) >= 65535, "the first window's worth")
        yield run_reactor_for(20)
        (connection,) = frontend.connections
        stream = connection.relay.streams[big]  # type: ignore[union-attr]
        self.assertLessEqual(stream._held_size, HIGH_WATER + 65536)
        origin = stream.exchange.connection
        self.assertTrue(origin.gate.paused, "the origin's reads go on")
        small = client.request(b"/small")
        yield self.done(client, small)
        self.assertEqual(client.answer(small).body, b"path=/small")
        self.assertEqual(len(client.answer(big).body), 65535)  # the stream's window, no more
        self.assertTrue(origin.gate.paused)

    @defer.inlineCallbacks
    def test_a_slow_origin_stops_the_request_body_at_the_window(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        self.proxy(http2=Http2Config(initial_window_size=16384))
        client = yield self.h2()
        stream = client.request(b"/upload", method=b"POST", end=False)
        left = client.send_body(stream, b"x" * 10_000_000, end=False)
        yield run_reactor_for(50)
        left = client.send_body(stream, left, end=False)
        # The origin reads nothing more once its socket buffers are full: the client is held at its window.
        self.assertGreater(len(left), 5_000_000)


class DefenceTests(H2Case):
    @defer.inlineCallbacks
    def closed_with(self, client: H2Client, code: ErrorCodes):  # type: ignore[no-untyped-def]
        yield self.poll(lambda: client.lost, "the connection closed")
        self.assertIsNotNone(client.goaway, "no GOAWAY")
        self.assertEqual(client.goaway.error_code, code)

    def raw_client(self) -> H2Client:
        return H2Client()

    @defer.inlineCallbacks
    def test_rapid_reset_is_answered_with_enhance_your_calm(self):  # type: ignore[no-untyped-def]
        self.proxy(http2=Http2Config(max_resets=50))
        client = yield self.h2()
        for _ in range(60):
            stream = client.request(b"/reset")
            client.reset(stream)
        yield self.closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        self.assertEqual(self.frontend.connection_ends, {"protocol-read-error": 1})

    @defer.inlineCallbacks
    def test_settings_flood(self):  # type: ignore[no-untyped-def]
        self.proxy(http2=Http2Config(max_control_frames=100))
        client = yield self.h2()
        client.raw(SettingsFrame(0).serialize() * 150)
        yield self.closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    @defer.inlineCallbacks
    def test_ping_flood(self):  # type: ignore[no-untyped-def]
        self.proxy(http2=Http2Config(max_control_frames=100))
        client = yield self.h2()
        client.raw(PingFrame(0, opaque_data=b"12345678").serialize() * 150)
        yield self.closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    @defer.inlineCallbacks
    def test_empty_data_flood(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        self.proxy(http2=Http2Config(max_control_frames=100))
        client = yield self.h2()
        stream = client.request(b"/upload", method=b"POST", end=False)
        client.raw(DataFrame(stream).serialize() * 150)
        yield self.closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    @defer.inlineCallbacks
    def test_a_long_download_is_no_flood(self):  # type: ignore[no-untyped-def]
        """A client acknowledging a large response sends many WINDOW_UPDATE frames: they are not counted."""
        self.proxy(http2=Http2Config(max_control_frames=10))
        client = yield self.h2()
        stream = client.request(b"/big/3000000")
        yield self.done(client, stream)
        self.assertEqual(len(client.answer(stream).body), 3000000)
        self.assertIsNone(client.goaway)

    @defer.inlineCallbacks
    def test_continuation_flood(self):  # type: ignore[no-untyped-def]
        """HEADERS without END_HEADERS then CONTINUATION frames without end: h2 stops after 64 of them."""
        self.proxy()
        client = yield self.h2()
        client.raw(HeadersFrame(1, data=b"\x82", flags=["END_STREAM"]).serialize())
        client.raw(ContinuationFrame(1, data=b"\x00" * 100).serialize() * 100)
        yield self.closed_with(client, ErrorCodes.PROTOCOL_ERROR)

    @defer.inlineCallbacks
    def test_too_many_concurrent_streams(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        self.proxy(http2=Http2Config(max_concurrent_streams=3))
        client = yield self.h2()
        yield self.poll(lambda: client.h2.remote_settings.max_concurrent_streams == 3, "the proxy's SETTINGS")
        for _ in range(3):
            client.request(b"/slow")
        client.raw_request(7, b"/one-more")  # a client that ignores the limit
        yield self.closed_with(client, ErrorCodes.PROTOCOL_ERROR)

    @defer.inlineCallbacks
    def test_oversized_header_list(self):  # type: ignore[no-untyped-def]
        self.proxy(max_header_size=4096)
        client = yield self.h2()
        client.h2.remote_settings.max_header_list_size = 1 << 20  # ignore the proxy's limit
        client.request(b"/big-headers", headers=[(b"x-big", b"v" * 8000)])
        yield self.closed_with(client, ErrorCodes.ENHANCE_YOUR_CALM)

    @defer.inlineCallbacks
    def test_reset_of_unknown_streams_counts_too(self):  # type: ignore[no-untyped-def]
        self.proxy(http2=Http2Config(max_resets=10))
        client = yield self.h2()
        client.raw(b"".join(RstStreamFrame(i, error_code=8).serialize() for i in range(1, 60, 2)))
        yield self.poll(lambda: client.lost, "the connection closed")
        self.assertIsNotNone(client.goaway)

    @defer.inlineCallbacks
    def test_an_oversized_frame_is_refused_before_it_is_all_read(self):  # type: ignore[no-untyped-def]
        """h2 would buffer a frame up to its 16 MiB length before checking it against SETTINGS_MAX_FRAME_SIZE."""
        self.proxy()
        client = yield self.h2()
        client.raw(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"x" * 40000)
        yield self.closed_with(client, ErrorCodes.FRAME_SIZE_ERROR)
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        self.assertEqual(self.frontend.connection_ends, {"protocol-read-error": 1})

    @defer.inlineCallbacks
    def test_an_oversized_frame_is_refused_at_its_header(self):  # type: ignore[no-untyped-def]
        """Its 9-byte header says enough: the client is not waited for until http-request (nor 16 KiB) runs out."""
        self.proxy()
        client = yield self.h2()
        client.raw(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01")  # DATA of 16385 bytes, over the 16384 allowed
        yield self.closed_with(client, ErrorCodes.FRAME_SIZE_ERROR)
        self.assertEqual(self.frontend.connection_ends, {"protocol-read-error": 1})

    @defer.inlineCallbacks
    def test_a_malformed_frame(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        client.raw(b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"x" * 5)  # SETTINGS of 5 bytes
        yield self.poll(lambda: client.lost, "the connection closed")
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        self.assertEqual(self.frontend.connection_ends, {"protocol-read-error": 1})


class _Opening(Protocol):
    """Sends the preface and then ``first`` (what should be the client's SETTINGS frame); keeps what comes back."""

    def __init__(self, first: bytes) -> None:
        self.first, self.received, self.lost = first, b"", False

    def connectionMade(self) -> None:
        self.transport.write(PREFACE + self.first)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object) -> None:
        self.lost = True

    def goaway(self) -> GoAwayFrame | None:
        at = 0
        while at + 9 <= len(self.received):
            frame, length = Frame.parse_frame_header(memoryview(self.received[at:at + 9]))
            frame.parse_body(memoryview(self.received[at + 9:at + 9 + length]))
            if isinstance(frame, GoAwayFrame):
                return frame
            at += 9 + length
        return None


class OpeningTests(H2Case):
    @defer.inlineCallbacks
    def refused(self, first: bytes):  # type: ignore[no-untyped-def]
        self.proxy()
        client = _Opening(first)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield self.poll(lambda: client.lost, "the connection closed")
        goaway = client.goaway()
        self.assertIsNotNone(goaway, "no GOAWAY")
        self.assertEqual(goaway.error_code, ErrorCodes.PROTOCOL_ERROR)
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        self.assertEqual(self.frontend.connection_ends, {"protocol-read-error": 1})

    def test_a_first_frame_that_is_not_settings_is_refused_at_once(self):  # type: ignore[no-untyped-def]
        """RFC 9113 3.4: the preface ends with a SETTINGS frame. A PING in its place is not answered, nor is the client
        waited for until ``timeout http-request``."""
        return self.refused(PingFrame(0, opaque_data=b"12345678").serialize())

    def test_a_settings_acknowledgement_first_is_refused(self):  # type: ignore[no-untyped-def]
        return self.refused(SettingsFrame(0, flags=["ACK"]).serialize())

    def test_a_first_headers_frame_is_refused(self):  # type: ignore[no-untyped-def]
        return self.refused(HeadersFrame(1, data=b"\x82\x84\x86", flags=["END_STREAM", "END_HEADERS"]).serialize())

    @defer.inlineCallbacks
    def test_settings_a_byte_at_a_time_are_taken(self):  # type: ignore[no-untyped-def]
        """The first frame's header may arrive in pieces: the connection waits for all nine bytes."""
        self.proxy()
        client = H2Client(split=len(PREFACE) + 4)
        client = yield self.h2(client)
        stream = client.request(b"/")
        yield self.done(client, stream)
        self.assertEqual(client.answer(stream).status, 200)


_GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.test"), (b":path", b"/")]
#: RFC 9113 8.2 and 8.3: what makes a request malformed, each a stream error, never the connection's.
MALFORMED = {
    "an upper-case name": [*_GET, (b"X-Upper", b"1")],
    "a NUL in a value": [*_GET, (b"x-a", b"a\x00b")],
    "a CR in a value": [*_GET, (b"x-a", b"a\rb")],
    "a connection header": [*_GET, (b"connection", b"keep-alive")],
    "transfer-encoding": [*_GET, (b"transfer-encoding", b"chunked")],
    "upgrade": [*_GET, (b"upgrade", b"websocket")],
    "te other than trailers": [*_GET, (b"te", b"gzip")],
    "a pseudo-header after a field": [*_GET[:3], (b"x-a", b"b"), _GET[3]],
    "no :path": _GET[:3],
    "an unknown pseudo-header": [*_GET, (b":foo", b"bar")],
    "a repeated pseudo-header": [*_GET, (b":path", b"/again")],
    "a response pseudo-header": [*_GET, (b":status", b"200")],
}


class MalformedRequestTests(H2Case):
    @defer.inlineCallbacks
    def test_a_malformed_request_is_refused_on_its_stream_alone(self):  # type: ignore[no-untyped-def]
        """HAProxy answers each on its stream; ending the connection would cut every other request on it (a load
        balancer's connection carries many clients')."""
        self.proxy()
        client = yield self.h2()
        refused = {}
        for case, headers in MALFORMED.items():
            before = client.request(b"/before")
            refused[case] = client.malformed_request(headers)
            after = client.request(b"/after")
            yield self.done(client, before, refused[case], after)
            self.assertEqual((client.answer(before).status, client.answer(after).status), (200, 200), case)
        self.assertEqual({case: client.answer(stream).status for case, stream in refused.items()},
                         dict.fromkeys(MALFORMED, 400))
        self.assertIsNone(client.goaway)
        self.assertFalse(client.lost)
        self.assertEqual(self.frontend.connection_ends, {})

    @defer.inlineCallbacks
    def test_a_body_that_is_not_its_content_length_resets_its_stream_alone(self):  # type: ignore[no-untyped-def]
        """RFC 9113 8.1.1: a malformed request, a stream error; h2 alone would end the connection."""
        self.proxy()
        client = yield self.h2()
        for body, length in ((b"x" * 10, b"5"), (b"x" * 5, b"10")):
            before = client.request(b"/before")
            bad = client.request(b"/upload", method=b"POST", body=body, headers=[(b"content-length", length)])
            after = client.request(b"/after")
            yield self.done(client, before, bad, after)
            self.assertEqual(client.answer(bad).reset, ErrorCodes.PROTOCOL_ERROR, length)
            self.assertEqual((client.answer(before).status, client.answer(after).status), (200, 200))
        self.assertIsNone(client.goaway)
        self.assertFalse(client.lost)

    @defer.inlineCallbacks
    def test_a_malformed_request_does_not_cut_a_response_in_progress(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2()
        big = client.request(b"/big/3000000")
        bad = client.malformed_request(MALFORMED["an upper-case name"])
        yield self.done(client, big, bad)
        self.assertEqual(len(client.answer(big).body), 3000000)
        self.assertEqual(client.answer(bad).status, 400)


class TimeoutTests(H2Case):
    @defer.inlineCallbacks
    def test_an_idle_connection_is_closed_after_http_keep_alive(self):  # type: ignore[no-untyped-def]
        self.proxy(http_keep_alive=0.3)
        client = yield self.h2()
        stream = client.request(b"/one")
        yield self.done(client, stream)
        yield self.poll(lambda: client.lost, "the idle connection closed", ticks=2000)
        self.assertEqual(client.goaway.error_code, ErrorCodes.NO_ERROR)
        yield self.poll(lambda: not self.frontend.connections, "the connection gone")
        self.assertEqual(self.frontend.connection_ends, {"timeout": 1})

    @defer.inlineCallbacks
    def test_a_silent_preface_is_closed_after_http_request(self):  # type: ignore[no-untyped-def]
        """A connection that sent the preface and a HEADERS frame without END_HEADERS, then nothing."""
        self.proxy(http_request=0.3)
        client = yield self.h2()
        client.raw(HeadersFrame(1, data=b"\x82").serialize())
        yield self.poll(lambda: client.lost, "closed", ticks=2000)

    @defer.inlineCallbacks
    def test_a_stalled_upload_times_out_with_408(self):  # type: ignore[no-untyped-def]
        self.proxy(client=0.3)
        client = yield self.h2()
        stream = client.request(b"/echo", method=b"POST", end=False)
        yield self.poll(lambda: client.answer(stream).headers, "an answer", ticks=2000)
        self.assertEqual(client.answer(stream).status, 408)
        self.assertEqual(self.access_log.entries[0].termination, "client-timeout")


class DrainTests(H2Case):
    @defer.inlineCallbacks
    def test_drain_sends_goaway_lets_the_stream_finish_and_refuses_new_ones(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        frontend = self.proxy()
        client = yield self.h2()
        stream = client.request(b"/slow")
        yield self.poll(lambda: _Silent.connections, "the origin got the request")
        drained = drain(frontend, grace=5, spread=0, close_code=1001)
        yield self.poll(lambda: client.goaway is not None, "GOAWAY")
        self.assertEqual((client.goaway.error_code, client.goaway.last_stream_id), (0, stream))
        self.assertFalse(client.lost)
        # h2 reads nothing after a GOAWAY (it closes its side): what follows is read as bytes.
        late = stream + 2
        client.raw_request(late, b"/late")
        refused = RstStreamFrame(late, error_code=ErrorCodes.REFUSED_STREAM).serialize()
        yield self.poll(lambda: refused in client.received, "the late stream refused")
        _Silent.connections[-1].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        yield self.poll(lambda: client.received.endswith(b"done" + DataFrame(stream, flags=["END_STREAM"]).serialize())
                        or b"done" in client.received, "the stream's answer")
        yield drained
        self.assertTrue(client.lost)
        self.assertEqual(frontend.connection_ends, {"server-close": 1})


class InteropTests(H2Case):
    @defer.inlineCallbacks
    def run_child(self, argv: list[str]):  # type: ignore[no-untyped-def]
        if shutil.which(argv[0]) is None:
            raise SkipTest(f"no {argv[0]} binary")
        child = yield defer.Deferred.fromCoroutine(wait_exit(self, spawn(self, argv[0], argv), CHILD_GUARD))
        self.assertEqual(child.exit_code, 0, child.describe())
        return child

    @defer.inlineCallbacks
    def test_curl_prior_knowledge(self):  # type: ignore[no-untyped-def]
        self.proxy()
        child = yield self.run_child(["curl", "-sS", "-v", "--http2-prior-knowledge",
                                      f"http://127.0.0.1:{self.proxy_port}/curl"])
        self.assertEqual(child.out, b"path=/curl")
        self.assertIn(b"< HTTP/2 200", child.err)

    @defer.inlineCallbacks
    def test_curl_h2c_upgrade_is_answered_in_http1(self):  # type: ignore[no-untyped-def]
        self.proxy()
        child = yield self.run_child(["curl", "-sS", "-v", "--http2", f"http://127.0.0.1:{self.proxy_port}/h2c"])
        self.assertEqual(child.out, b"path=/h2c")
        self.assertIn(b"< HTTP/1.1 200", child.err)

    @defer.inlineCallbacks
    def test_curl_posts_a_body(self):  # type: ignore[no-untyped-def]
        self.proxy()
        path = self.mktemp()
        body = bytes(range(256)) * 2000
        with open(path, "wb") as f:
            f.write(body)
        child = yield self.run_child(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{path}",
                                      f"http://127.0.0.1:{self.proxy_port}/echo"])
        self.assertEqual(child.out, body)

    @defer.inlineCallbacks
    def test_nghttp(self):  # type: ignore[no-untyped-def]
        self.proxy()
        child = yield self.run_child(["nghttp", "-v", f"http://127.0.0.1:{self.proxy_port}/nghttp"])
        self.assertIn(b"path=/nghttp", child.out)
        self.assertIn(b":status: 200", child.out)

    @defer.inlineCallbacks
    def test_h2load_many_streams_on_few_connections(self):  # type: ignore[no-untyped-def]
        self.proxy()
        child = yield self.run_child(["h2load", "-n", "200", "-c", "4", "-m", "10",
                                      f"http://127.0.0.1:{self.proxy_port}/load"])
        self.assertIn(b"200 succeeded, 0 failed, 0 errored", child.out)
        self.assertEqual(len(self.access_log.entries), 200)
        self.assertEqual({e.version for e in self.access_log.entries}, {"2.0"})


class ProxiedTests(H2Case):
    """Behind a load balancer: a PROXY header, then HTTP/2; each stream's client is the one it names, and a
    trusted proxy's forwarding headers are believed per stream."""

    @defer.inlineCallbacks
    def test_proxy_header_then_prior_knowledge(self):  # type: ignore[no-untyped-def]
        self.proxy(peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "v1", "x-forwarded-for"))
        client = yield self.h2(H2Client(prefix=b"PROXY TCP4 192.0.2.7 192.0.2.1 5555 443\r\n"))
        stream = client.request(b"/headers")
        yield self.done(client, stream)
        lines = client.answer(stream).body.split(b"\n")
        self.assertIn(b"X-Forwarded-For: 192.0.2.7", lines)
        self.assertEqual(self.access_log.entries[0].client, "192.0.2.7")

    @defer.inlineCallbacks
    def test_a_trusted_proxy_names_each_stream_s_client(self):  # type: ignore[no-untyped-def]
        self.proxy(peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "x-forwarded-for"))
        client = yield self.h2()
        one = client.request(b"/one", headers=[(b"x-forwarded-for", b"198.51.100.1")])
        two = client.request(b"/two", headers=[(b"x-forwarded-for", b"198.51.100.2")])
        yield self.done(client, one, two)
        self.assertEqual(sorted(e.client for e in self.access_log.entries), ["198.51.100.1", "198.51.100.2"])


class PrefaceTests(H2Case):
    @defer.inlineCallbacks
    def test_a_frontend_without_http2_answers_the_preface_with_400(self):  # type: ignore[no-untyped-def]
        self.proxy(http2=replace(Http2Config(), enabled=False))
        (response,) = yield self.request(PREFACE)
        self.assertEqual(response.status, 400)

    @defer.inlineCallbacks
    def test_the_preface_split_over_reads(self):  # type: ignore[no-untyped-def]
        self.proxy()
        client = yield self.h2(H2Client(split=12))
        yield self.poll(lambda: not client.split, "the rest of the preface sent")
        stream = client.request(b"/split")
        yield self.done(client, stream)
        self.assertEqual(client.answer(stream).body, b"path=/split")


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (payload under 126 bytes)."""
    mask = b"\x01\x02\x03\x04"
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WebSocketTests(H2Case):
    """WebSockets over HTTP/2 (RFC 8441): the extended CONNECT is answered 200 and its stream carries the
    frames; the backend gets an HTTP/1.1 upgrade."""

    mode = "tunnel"

    def start_ws(self) -> EchoBackendFactory:
        backend = EchoBackendFactory()
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)
        self.origin = port.getHost().port
        self.proxy(websocket=WebSocketConfig(mode=self.mode, client_ping_interval=0, backend_ping_interval=0))
        return backend

    @defer.inlineCallbacks
    def connect_ws(self, client: H2Client):  # type: ignore[no-untyped-def]
        yield self.poll(lambda: client.h2.remote_settings.enable_connect_protocol, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
        stream = client.request(b"/chat", method=b"CONNECT", end=False, headers=[
            (b":protocol", b"websocket"), (b"sec-websocket-version", b"13"), (b"origin", b"http://example.test"),
        ])
        yield self.poll(lambda: client.answer(stream).headers, "the answer to the extended CONNECT")
        return stream

    @defer.inlineCallbacks
    def test_echo_then_close(self):  # type: ignore[no-untyped-def]
        backend = self.start_ws()
        client = yield self.h2()
        stream = yield self.connect_ws(client)
        self.assertEqual(client.answer(stream).status, 200)
        self.assertNotIn(b"sec-websocket-accept", client.answer(stream).headers)
        self.assertEqual(len(backend.handshakes), 1)
        client.send_body(stream, ws_frame(b"hello over h2"), end=False)
        yield self.poll(lambda: b"hello over h2" in client.answer(stream).body, "the echo")
        self.assertEqual(client.answer(stream).body, b"\x81\x0dhello over h2")
        client.send_body(stream, ws_frame(b"y" * 120) * 40, end=False)  # 4,800 bytes each way: more than any head
        yield self.poll(lambda: client.answer(stream).body.count(b"y" * 120) == 40, "the 40 echoes")
        other = client.request(b"/beside")  # the connection still carries requests
        yield self.done(client, other)
        self.assertTrue(client.answer(other).status)  # the WebSocket server's own page
        client.send_body(stream, ws_frame(b"\x03\xe8", opcode=8), end=True)  # close 1000, then END_STREAM
        yield self.poll(lambda: client.answer(stream).ended or client.answer(stream).reset is not None, "the end")
        yield self.poll(lambda: len(self.access_log.entries) == 2, "the WebSocket logged")
        record = [e for e in self.access_log.entries if e.target == "/chat"][0]
        self.assertEqual((record.version, record.method, record.status), ("2.0", "GET", 101))
        # Its bytes each way, as for a WebSocket over HTTP/1.1: the frames that crossed the stream.
        self.assertGreaterEqual(record.bytes_in, 40 * len(ws_frame(b"y" * 120)))
        self.assertGreaterEqual(record.bytes_out, 40 * 122)
        self.assertFalse(client.lost)

    @defer.inlineCallbacks
    def test_a_websocket_whose_client_connection_is_lost_logs_its_bytes(self):  # type: ignore[no-untyped-def]
        """A browser closed mid-WebSocket: its connection is lost, not its stream reset; the frames still count."""
        self.start_ws()
        client = yield self.h2()
        stream = yield self.connect_ws(client)
        client.send_body(stream, ws_frame(b"y" * 120) * 40, end=False)
        yield self.poll(lambda: client.answer(stream).body.count(b"y" * 120) == 40, "the 40 echoes")
        client.transport.abortConnection()
        yield self.poll(lambda: [e for e in self.access_log.entries if e.target == "/chat"], "the WebSocket logged")
        (record,) = [e for e in self.access_log.entries if e.target == "/chat"]
        self.assertGreaterEqual((record.bytes_in, record.bytes_out), (40 * len(ws_frame(b"y" * 120)), 40 * 122))
        self.assertEqual(record.termination, "client-abort")

    @defer.inlineCallbacks
    def test_without_websocket_setting_an_extended_connect_is_refused(self):  # type: ignore[no-untyped-def]
        self.start_ws()
        self.frontend.http2 = Http2Config(websocket=False)
        client = yield self.h2()
        yield self.poll(lambda: client.h2.remote_settings.max_concurrent_streams == 100, "the proxy's SETTINGS")
        self.assertFalse(client.h2.remote_settings.enable_connect_protocol)
        stream = client.request(b"/chat", method=b"CONNECT", end=False, headers=[
            (b":protocol", b"websocket"), (b"sec-websocket-version", b"13")])
        yield self.poll(lambda: client.answer(stream).headers, "the answer")
        self.assertEqual(client.answer(stream).status, 501)

    @defer.inlineCallbacks
    def test_a_reset_stream_ends_the_websocket(self):  # type: ignore[no-untyped-def]
        backend = self.start_ws()
        client = yield self.h2()
        stream = yield self.connect_ws(client)
        yield self.poll(lambda: backend.open, "the backend's WebSocket open")
        client.reset(stream)
        yield self.poll(lambda: self.access_log.entries, "the WebSocket logged")
        yield self.poll(lambda: not self.frontend.websockets, "the relay ended")
        self.assertFalse(client.lost)


class SessionWebSocketTests(WebSocketTests):
    mode = "session"


class ChromiumTests(H2Case):
    """Headless Chromium over https: the page comes over h2, and its WebSocket goes over HTTP/2 too (an
    extended CONNECT on a stream of the same connection: logged as version 2.0)."""

    mode = "session"

    @defer.inlineCallbacks
    def test_page_and_websocket_over_h2(self):  # type: ignore[no-untyped-def]
        backend = EchoBackendFactory()
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)
        self.origin = port.getHost().port
        frontend = self.proxy(websocket=WebSocketConfig(mode=self.mode, client_ping_interval=0,
                                                        backend_ping_interval=0))
        authority = CertificateAuthority()
        key_pem, cert_pem = authority.issue("127.0.0.1", ips=("127.0.0.1",))
        files = {}
        for name, data in (("key", key_pem), ("cert", cert_pem)):
            files[name] = os.path.abspath(self.mktemp())
            with open(files[name], "wb") as f:
                f.write(data)
        settings = ListenerTLSConfig(certificates=(CertificateFiles(cert=files["cert"], key=files["key"]),))
        listening = ListeningService(reactor, "frontend web", connection_factory(frontend),
                                     ListenSettings(("tcp:0:interface=127.0.0.1",), settings, "frontends.web"))
        listening.startService()
        self.addCleanup(listening.stopService)
        https = listening.ports[0].getHost().port
        if find_chromium() is None:
            raise SkipTest("no Chromium binary (apt-get install chromium)")
        devtools = yield defer.Deferred.fromCoroutine(
            start_devtools(self, f"--ignore-certificate-errors-spki-list={spki_hash(cert_pem)}"))
        yield defer.Deferred.fromCoroutine(devtools.open_page(f"https://127.0.0.1:{https}/page"))
        protocol = yield defer.Deferred.fromCoroutine(devtools.until(
            "document.readyState == 'complete' && performance.getEntries()[0].nextHopProtocol", CHILD_GUARD))
        self.assertEqual(protocol, "h2")
        echoed = yield defer.Deferred.fromCoroutine(devtools.evaluate(
            f"new Promise((ok, fail) => {{ const ws = new WebSocket('wss://127.0.0.1:{https}/chat');"
            "ws.onopen = () => ws.send('hello from chromium ' + 'x'.repeat(4000));"
            " ws.onmessage = (e) => { ok(e.data); ws.close(); };"
            "ws.onerror = () => fail('websocket error'); })"))
        self.assertEqual(echoed, "hello from chromium " + "x" * 4000)
        yield self.poll(lambda: [e for e in self.access_log.entries if e.target == "/chat"], "the WebSocket logged",
                        ticks=2000)
        (record,) = [e for e in self.access_log.entries if e.target == "/chat"]
        self.assertEqual((record.version, record.status), ("2.0", 101))  # an extended CONNECT on a stream
        self.assertEqual({e.version for e in self.access_log.entries}, {"2.0"})
        # The frames each way count in its bytes: the 4,000-byte message and its echo, more than any head.
        self.assertGreaterEqual((record.bytes_in, record.bytes_out), (4000 + 8, 4000 + 4))


class TunnelChromiumTests(ChromiumTests):
    mode = "tunnel"


RELOAD_CONFIG = """
[frontends.web]
listen = ["tcp:0:interface=127.0.0.1"]
backend = "app"
{web_extra}

[frontends.other]
listen = ["tcp:0:interface=127.0.0.1"]
backend = "app"

[backends.app]
servers = ["127.0.0.1:{origin}"]
"""


class ReloadTests(H2Case):
    def start(self, web: bool = True, web_extra: str = "") -> None:
        self.path = getattr(self, "path", None) or self.mktemp()
        text = RELOAD_CONFIG.format(origin=self.origin, web_extra=web_extra)
        if not web:
            text = text.replace('[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n', "")
        with open(self.path, "w") as f:
            f.write(text)

    @defer.inlineCallbacks
    def test_a_reload_that_removes_the_frontend_sends_goaway(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Silent)
        self.start()
        command_line = CommandLine(config_path=self.path, access_log="off")
        service = build_service(load_config(command_line), reactor, command_line)
        service.startService()
        self.addCleanup(service.stopService)
        self.proxy_port = service.parts.frontends["web"].ports[0].getHost().port
        client = yield self.h2()
        stream = client.request(b"/slow")
        yield self.poll(lambda: _Silent.connections, "the origin got the request")
        self.start(web=False)
        Reloader(service.parts, command_line).reload()
        yield self.poll(lambda: client.goaway is not None, "GOAWAY")
        self.assertEqual((client.goaway.error_code, client.goaway.last_stream_id), (0, stream))
        _Silent.connections[-1].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        yield self.poll(lambda: client.lost, "closed once its stream is answered")
        self.assertIn(b"ok", client.received)
        yield task.deferLater(reactor, 0.2, lambda: None)  # the frontend's drain sees it gone

    @defer.inlineCallbacks
    def test_a_reload_sets_the_settings_of_new_connections(self):  # type: ignore[no-untyped-def]
        self.start()
        command_line = CommandLine(config_path=self.path, access_log="off")
        service = build_service(load_config(command_line), reactor, command_line)
        service.startService()
        self.addCleanup(service.stopService)
        self.proxy_port = service.parts.frontends["web"].ports[0].getHost().port
        before = yield self.h2()
        yield self.poll(lambda: before.h2.remote_settings.max_concurrent_streams == 100, "the first SETTINGS")
        self.start(web_extra="[frontends.web.http2]\nmax-concurrent-streams = 7\n")
        Reloader(service.parts, command_line).reload()
        after = yield self.h2()
        yield self.poll(lambda: after.h2.remote_settings.max_concurrent_streams == 7, "the new SETTINGS")
        self.assertEqual(before.h2.remote_settings.max_concurrent_streams, 100)


class LimitTests(H2Case):
    @defer.inlineCallbacks
    def test_max_reads_counts_streams(self):  # type: ignore[no-untyped-def]
        frontend = self.proxy()
        frontend.max_reads = 3
        client = yield self.h2()
        streams = [client.request(b"/s%d" % i) for i in range(3)]
        yield self.poll(lambda: client.goaway is not None, "GOAWAY")
        self.assertEqual((client.goaway.error_code, client.goaway.last_stream_id), (0, streams[-1]))
        # h2 reads nothing after a GOAWAY (it closes its side): the answers that follow it are read as bytes.
        yield self.poll(lambda: client.lost, "closed after the last stream allowed")
        for i in range(3):
            self.assertIn(b"path=/s%d" % i, client.received)
        yield self.poll(lambda: not frontend.connections, "the connection gone")
        self.assertEqual(frontend.connection_ends, {"max-reads": 1})


class ObserverTests(H2Case):
    """Lifecycle handlers and client sessions see an HTTP/2 connection and its streams as they see an
    HTTP/1.1 connection and its requests."""

    @defer.inlineCallbacks
    def test_handlers_and_sessions(self):  # type: ignore[no-untyped-def]
        frontend = self.proxy()
        recorder = Recorder()
        frontend.handlers = LifecycleHandlers.of((recorder,))
        frontend.clients = ClientRegistry("web", ClientsConfig(identify=("connection",)), reactor)
        self.addCleanup(frontend.clients.stop)
        client = yield self.h2()
        streams = [client.request(b"/s%d" % i) for i in range(3)]
        yield self.done(client, *streams)
        (session,) = frontend.clients.sessions.values()
        self.assertEqual((session.requests, session.outstanding), (3, 0))
        client.transport.loseConnection()
        yield self.poll(lambda: recorder.ended, "the connection's end reported")
        (info, end) = recorder.ended[0]
        self.assertEqual((info.requests, info.responses, end), (3, 3, ConnectionEnd.CLIENT_CLOSE))
        self.assertEqual(len(recorder.opened), 1)
        self.assertEqual(frontend.clients.sessions, {})
        self.assertEqual(frontend.terminations, {"ok": 3})
        self.assertEqual(frontend.responses, {("2xx", "origin"): 3})


class SessionResumeTests(H2Case):
    """A WebSocket session opened over HTTP/2 survives its backend's loss as one over HTTP/1.1 does."""

    @defer.inlineCallbacks
    def test_backend_killed_session_moves_to_the_other(self):  # type: ignore[no-untyped-def]
        backends = [EchoBackendFactory() for _ in range(2)]
        listeners = [listen_echo_backend(factory) for factory in backends]
        for listener in listeners:
            self.addCleanup(lambda listener=listener: listener.stopListening() if listener.connected else None)
        frontend = self.start_proxy(*[listener.getHost().port for listener in listeners], websocket=WebSocketConfig(
            mode="session", client_ping_interval=0, backend_ping_interval=0, resume_timeout=5))
        client = yield self.h2()
        yield self.poll(lambda: client.h2.remote_settings.enable_connect_protocol, "the proxy's SETTINGS")
        stream = client.request(b"/chat", method=b"CONNECT", end=False, headers=[
            (b":protocol", b"websocket"), (b"sec-websocket-version", b"13")])
        client.send_body(stream, ws_frame(b"one"), end=False)
        yield self.poll(lambda: b"one" in client.answer(stream).body, "the first echo")
        (first,) = [i for i, factory in enumerate(backends) if factory.open]
        listeners[first].stopListening()
        for protocol in list(backends[first].open):
            protocol.transport.abortConnection()  # the server process dies
        yield self.poll(lambda: frontend.backend.resumes == 1, "the session moved")  # what was in flight is lost
        client.send_body(stream, ws_frame(b"two"), end=False)
        yield self.poll(lambda: b"two" in client.answer(stream).body, "the echo from the other backend", ticks=2000)
        self.assertEqual(frontend.backend.resumes, 1)
        self.assertTrue(backends[1 - first].open)
        self.assertFalse(client.answer(stream).ended or client.answer(stream).reset is not None)
        self.assertFalse(client.lost)


class _Truncating(Protocol):
    """Answers with a Content-Length of 200000, sends half, and closes."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 100000)
        self.transport.loseConnection()


class _Garbage(Protocol):
    """Answers with something that is not HTTP."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"NOT HTTP AT ALL\r\n\r\n")


class OriginFailureTests(H2Case):
    @defer.inlineCallbacks
    def test_a_response_broken_off_is_delivered_as_far_as_it_went_then_reset(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Truncating)
        self.proxy()
        client = yield self.h2()
        stream = client.request(b"/cut")
        yield self.done(client, stream)
        answer = client.answer(stream)
        self.assertEqual((answer.status, len(answer.body), answer.reset), (200, 100000, ErrorCodes.INTERNAL_ERROR))
        self.assertFalse(answer.ended)
        self.assertFalse(client.lost)

    @defer.inlineCallbacks
    def test_a_bad_response_is_answered_502_on_its_stream(self):  # type: ignore[no-untyped-def]
        self.origin = self.start_raw_origin(_Garbage)
        self.proxy()
        client = yield self.h2()
        stream = client.request(b"/bad")
        yield self.done(client, stream)
        answer = client.answer(stream)
        self.assertEqual((answer.status, answer.ended, answer.reset), (502, True, None))


class EngineIOTests(H2Case):
    """Engine.IO long polling over HTTP/2 streams: a session whose server is removed has its long poll, waiting
    on one stream, answered at once when its next request (on another stream) finds the server gone."""

    @defer.inlineCallbacks
    def test_a_long_poll_on_a_stream_is_told_at_once(self):  # type: ignore[no-untyped-def]
        servers = [spawn_server(self, name) for name in ("A", "B")]
        ports = yield defer.gatherResults([server.port for server in servers])
        frontend = self.start_proxy(*ports)
        client = yield self.h2()
        handshake = client.request(b"/socket.io/?EIO=4&transport=polling")
        yield self.done(client, handshake)
        sid = json.loads(client.answer(handshake).body[1:])["sid"].encode()
        (opened,) = self.access_log.entries
        poll = client.request(b"/socket.io/?EIO=4&transport=polling&sid=" + sid)
        yield self.poll(lambda: frontend.pool.in_use, "the long poll waiting at its server")
        self.assertFalse(client.answer(poll).headers)
        frontend.backend.remove_server(opened.server)  # alive: the long poll would wait for its next ping
        post = client.request(b"/socket.io/?EIO=4&transport=polling&sid=" + sid, method=b"POST", body=b"3")
        yield self.done(client, post, poll)
        self.assertEqual((client.answer(post).status, client.answer(poll).status), (400, 400))
        gone = [e.termination for e in self.access_log.entries if b"sid=" + sid in e.target.encode()]
        self.assertEqual(gone, ["session-gone", "session-gone"])


class RulesTests(H2Case):
    """HTTP rules apply to each stream as to an HTTP/1.1 request; a rule's answer ends its stream only."""

    def with_rules(self, **keys: Any) -> Frontend:
        frontend = self.proxy()
        frontend.rules = FrontendRules.of(frontend_config(**keys), reactor)
        return frontend

    @defer.inlineCallbacks
    def test_header_rules_and_request_id(self):  # type: ignore[no-untyped-def]
        self.with_rules(**{
            "unique-id-header": "X-Request-ID",
            "http-request": [{"action": "set-header", "name": "X-Client", "value": "%[src]/%[fe_name]"}],
            "http-response": [{"action": "add-header", "name": "X-Served", "value": "%[srv_name]"}],
        })
        client = yield self.h2()
        stream = client.request(b"/headers", headers=[(b"x-request-id", b"forged"), (b"x-client", b"forged")])
        yield self.done(client, stream)
        answer = client.answer(stream)
        lines = answer.body.lower().split(b"\n")  # the origin's names are its own case
        self.assertIn(b"x-client: 127.0.0.1/web", lines)
        self.assertNotIn(b"x-request-id: forged", lines)
        self.assertEqual(answer.headers[b"x-served"], b"s1")
        (record,) = self.access_log.entries
        self.assertIn(b"x-request-id: %s" % record.request_id.encode(), lines)
        self.assertEqual(record.version, "2.0")

    @defer.inlineCallbacks
    def test_a_rate_limited_stream_leaves_the_others_alone(self):  # type: ignore[no-untyped-def]
        self.with_rules(**{"http-request": [{"action": "rate-limit", "requests": 1, "period": "1h"}]})
        client = yield self.h2()
        first = client.request(b"/echo", method=b"POST", end=False)  # admitted, still in flight
        yield self.poll(lambda: self.access_log.entries == [] and self.frontend.requests == 1, "the first admitted")
        limited = client.request(b"/")
        yield self.done(client, limited)
        self.assertEqual(client.answer(limited).status, 429)
        self.assertIsNotNone(client.answer(limited).headers.get(b"retry-after"))
        client.send_body(first, b"still here")
        yield self.done(client, first)
        self.assertEqual((client.answer(first).status, client.answer(first).body), (200, b"still here"))
        self.assertEqual(sorted(r.termination for r in self.access_log.entries), ["ok", "rate-limited"])
