"""What rubrisproxy._compat relies on in Autobahn: each test fails if an upgrade changes it."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from rubrisproxy._compat import (
    V1Parser,
    V2Parser,
    cancel_pong_timeout,
    compresses,
    direct_write,
    rearm_pong_timeout,
    unsent,
    use_batched_timer,
)
from rubrisproxy.config import WebSocketConfig
from rubrisproxy.websocket._timers import BucketTimer

from .helpers import ProxyTestCase, RawClient
from .test_ws_keepalive import OP_PING, OP_PONG, frame, open_backend_leg, parse_frames


class RearmPongTimeoutTests(unittest.TestCase):
    """Autobahn treats the re-armed call as its own pending pong timeout."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.leg, self.origin, _ = open_backend_leg(WebSocketConfig(backend_ping_interval=1, backend_ping_timeout=1),
                                                    self.clock)
        self.clock.advance(1.2)
        ((opcode, self.ping),) = parse_frames(self.origin.transport.value())
        self.assertEqual(opcode, OP_PING)
        self.leg.autoPingTimeoutCall.cancel()
        self.timer = BucketTimer(self.clock)  # apart from the leg's own, to see what Autobahn does with it
        rearm_pong_timeout(self.leg, self.timer.call_later)
        self.assertEqual(self.timer.pending(), 1)

    def test_the_pong_cancels_it(self) -> None:
        self.leg.dataReceived(frame(OP_PONG, self.ping))
        self.assertEqual(self.timer.pending(), 0)
        self.assertIsNone(self.leg.autoPingTimeoutCall)

    def test_losing_the_connection_cancels_it(self) -> None:
        self.leg.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.timer.pending(), 0)

    def test_when_it_fires_the_pong_timeout_is_handled(self) -> None:
        self.clock.advance(1.2)
        self.assertTrue(self.origin.transport.disconnecting)
        self.assertIsNone(self.leg.autoPingTimeoutCall)


class UseBatchedTimerTests(unittest.TestCase):
    def test_the_factorys_protocols_arm_their_timers_on_it(self) -> None:
        clock = Clock()
        leg, origin, _ = open_backend_leg(WebSocketConfig(backend_ping_interval=0.3, backend_ping_timeout=0.3), clock)
        timer = leg.factory._batched_timer  # set by LegFactories through use_batched_timer
        self.assertIsInstance(timer, BucketTimer)
        self.assertEqual(timer.pending(), 1)  # the first auto-ping
        clock.advance(0.4)  # on the proxy's clock, to its 0.2 s bucket (txaio's would round to whole seconds)
        self.assertEqual([opcode for opcode, _ in parse_frames(origin.transport.value())], [OP_PING])

    def test_it_sets_the_attribute_autobahn_reads(self) -> None:
        class Factory:
            pass

        factory, timer = Factory(), BucketTimer(Clock())
        use_batched_timer(factory, timer)
        self.assertIs(factory._batched_timer, timer)  # type: ignore[attr-defined]


class CancelPongTimeoutTests(unittest.TestCase):
    def test_the_pending_ping_is_settled_and_the_next_one_scheduled(self) -> None:
        clock = Clock()
        leg, origin, _ = open_backend_leg(WebSocketConfig(backend_ping_interval=1, backend_ping_timeout=1), clock)
        clock.advance(1.2)
        self.assertIsNotNone(leg.autoPingTimeoutCall)
        cancel_pong_timeout(leg)
        self.assertIsNone(leg.autoPingTimeoutCall)
        clock.advance(1.2)  # past the cancelled timeout: still open, and the next ping went out
        self.assertFalse(origin.transport.disconnecting)
        self.assertEqual([opcode for opcode, _ in parse_frames(origin.transport.value())], [OP_PING, OP_PING])


class CompressesTests(unittest.TestCase):
    def test_it_says_whether_permessage_deflate_was_negotiated(self) -> None:
        for compression, extensions in ((True, b"Sec-WebSocket-Extensions: permessage-deflate\r\n"), (False, b"")):
            leg, _, _ = open_backend_leg(WebSocketConfig(compression=compression), Clock(), extensions)
            self.assertEqual(compresses(leg), compression)
            self.assertEqual(leg._deflating, compression)  # what the leg's fast paths check
            leg.connectionLost(Failure(ConnectionLost()))


class WriteBacklogTests(ProxyTestCase):
    def test_bytes_a_tcp_connection_holds_until_the_kernel_takes_them(self):  # type: ignore[no-untyped-def]
        port = self.start_raw_origin(Protocol)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def connected(_: object):  # type: ignore[no-untyped-def]
            self.addCleanup(client.transport.abortConnection)
            client.transport.write(b"x" * 1000)
            client.transport.write(b"y" * 500)
            self.assertEqual(unsent(client.transport), 1500)  # Twisted writes on the next reactor turn

            class Wrapper:  # a protocol wrapper (TLS), with the TCP connection under it
                transport = client.transport

            self.assertEqual(unsent(Wrapper()), 1500)
            return self.poll(lambda: unsent(client.transport) == 0, "the kernel took them")

        return d.addCallback(connected)

    def test_a_transport_that_cannot_say_has_none(self) -> None:
        self.assertEqual(unsent(StringTransport()), 0)


class DirectWriteTests(ProxyTestCase):
    def test_an_empty_buffer_is_skipped_and_a_queued_one_keeps_order(self):  # type: ignore[no-untyped-def]
        received = RawClient()
        port = self.start_raw_origin(lambda: received)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def connected(_: object):  # type: ignore[no-untyped-def]
            self.addCleanup(client.transport.abortConnection)
            direct_write(client.transport, b"first,")
            self.assertEqual(unsent(client.transport), 0)  # sent at once: nothing was queued ahead
            client.transport.write(b"queued,")
            direct_write(client.transport, b"last")
            self.assertEqual(unsent(client.transport), len(b"queued,last"))  # behind what was queued, not ahead
            return received.until(lambda data: data == b"first,queued,last")

        return d.addCallback(connected)


class ProxyHeaderParserTests(unittest.TestCase):
    """Twisted's private PROXY header parsers, as the proxied connection feeds them."""

    def test_v1(self) -> None:
        parser = V1Parser()
        info, rest = parser.feed(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\nGET")
        self.assertEqual((info.source.host, info.source.port, rest), ("192.0.2.1", 5000, b"GET"))

    def test_v2(self) -> None:
        header = V2Parser.PREFIX + bytes([0x21, 0x11, 0, 12]) + bytes([192, 0, 2, 1, 192, 0, 2, 2]) + (5000).to_bytes(2, "big") + (80).to_bytes(2, "big")
        info = V2Parser().feed(header)
        self.assertEqual((info[0].source.host, info[0].source.port), ("192.0.2.1", 5000))
