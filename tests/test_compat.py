"""What rubrisproxy._compat relies on in Twisted and Autobahn: each test fails if an upgrade changes it (the
rest, on accept(2) and the write buffer under load, is in tests/test_hardening_conn.py)."""

from __future__ import annotations

import ast
import errno
import gc
import inspect
import io
import os
import pprint
import re
import socket
import sys
import zlib
from collections import deque
from typing import Any

from autobahn import util
from autobahn.twisted import websocket as twisted_websocket
from autobahn.twisted.websocket import WebSocketClientProtocol, WebSocketServerProtocol
from autobahn.websocket import protocol
from autobahn.websocket.protocol import WebSocketProtocol
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import RequestReceived
from hyperframe.frame import Frame, RstStreamFrame, WindowUpdateFrame
from OpenSSL import SSL
from twisted.internet import abstract, defer, reactor, task, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectingCancelledError, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, platformTrust, trustRootFromCertificates
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.scripts._twistd_unix import UnixApplicationRunner
from twisted.trial import unittest
from zope.interface import implementer

from rubrisproxy import _compat
from rubrisproxy._compat import (
    AutobahnHooks,
    BodyLengthMismatch,
    IOpenSSLTrustRoot,
    LazyFuture,
    StreamErrorFrames,
    V1Parser,
    V2Parser,
    _LeanServer,
    accepted_without_delay,
    cache_log_levels,
    cancel_pong_timeout,
    close_ended,
    close_sent,
    compresses,
    connect_open,
    connect_tcp,
    connection_lost,
    defer_autobahn_debug,
    direct_write,
    end_as_closed,
    guard_accepts,
    inbound_window_bits,
    lean_accepted,
    lean_poll,
    let_go,
    let_go_port,
    malformed_h2_request,
    message_compressed,
    native_xor,
    pause_auto_ping,
    plain_peer_host,
    prime_inflater,
    rearm_pong_timeout,
    report_start_failure,
    resume_auto_ping,
    send_queue_back,
    slim_transport,
    take_unsent,
    tcp_buffered,
    unsent,
    unwrap_endpoint,
    use_batched_timer,
)
from rubrisproxy.config import WebSocketConfig
from rubrisproxy.reuseport import ReusePortReactor
from rubrisproxy.websocket import accept_key, new_key
from rubrisproxy.websocket._legs import _AT_REST, LegFactories
from rubrisproxy.websocket._timers import BucketTimer

from .helpers import ProxyTestCase, RawClient, our_cyclic_garbage
from .test_tls_origin import make_certificates
from .test_ws_keepalive import (
    OP_PING,
    OP_PONG,
    StandInOrigin,
    StandInSession,
    Transport,
    frame,
    open_backend_leg,
    open_client_leg,
    parse_frames,
)


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


OP_TEXT, OP_RESERVED = 0x1, 0x3


class _EndingTransport:
    """Says how it was ended."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def abortConnection(self) -> None:  # noqa: N802 - Twisted's names
        self.events.append("abort")

    def loseConnection(self) -> None:  # noqa: N802
        self.events.append("lose")


class AutobahnHooksTests(unittest.TestCase):
    """Autobahn still calls the private methods :class:`AutobahnHooks` takes over, when and as the legs rely on."""

    def test_the_private_names_exist_with_the_signatures_overridden(self) -> None:
        self.assertEqual(list(inspect.signature(WebSocketProtocol._fail_connection).parameters), ["self", "code", "reason"])
        self.assertEqual(list(inspect.signature(WebSocketProtocol._connectionLost).parameters), ["self", "reason"])
        adapter = twisted_websocket.WebSocketAdapterProtocol._closeConnection
        self.assertEqual(list(inspect.signature(adapter).parameters), ["self", "abort"])

    def test_our_names_shadow_nothing_of_autobahns(self) -> None:
        ours = {name for name in vars(AutobahnHooks) if not name.startswith("__")} - {
            "_fail_connection", "_connectionLost", "_closeConnection"}
        for base in (WebSocketServerProtocol, WebSocketClientProtocol):
            self.assertEqual([name for name in ours if hasattr(base, name)], [], base)

    def test_a_protocol_error_calls_fail_connection_then_autobahns_own_closes(self) -> None:
        leg, origin, _ = open_backend_leg(WebSocketConfig(), Clock())
        calls: list[tuple[int, str]] = []
        own = leg.fail_connection

        def recorded(code: int, reason: str) -> None:
            calls.append((code, reason))
            own(code, reason)

        leg.fail_connection = recorded
        leg.dataReceived(frame(OP_RESERVED))  # reserved opcode: Autobahn's frame parser fails the connection
        self.assertEqual([code for code, _ in calls], [1002])
        self.assertTrue(leg.failedByMe)
        ((opcode, payload),) = parse_frames(origin.transport.value())  # Autobahn's close frame (failByDrop off)
        self.assertEqual((opcode, int.from_bytes(payload[:2], "big")), (0x8, 1002))
        leg.connectionLost(Failure(ConnectionLost()))

    def test_autobahn_fail_connection_is_autobahns_own(self) -> None:
        leg, origin, _ = open_backend_leg(WebSocketConfig(), Clock())
        leg.autobahn_fail_connection(1009, "too big")
        self.assertEqual((leg.state, leg.failedByMe), (leg.STATE_CLOSING, True))  # a close sent, the TCP left open
        ((opcode, payload),) = parse_frames(origin.transport.value())
        self.assertEqual((opcode, payload), (0x8, (1009).to_bytes(2, "big") + b"too big"))
        leg.connectionLost(Failure(ConnectionLost()))

    def test_autobahns_close_connection_only_aborts_or_loses_as_close_transport_does(self) -> None:
        source = inspect.getsource(twisted_websocket.WebSocketAdapterProtocol._closeConnection)
        tree = ast.parse(inspect.cleandoc("\n" + source))
        calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        self.assertEqual(calls, {"hasattr", "self.transport.abortConnection", "self.transport.loseConnection"})

    def test_drop_connection_ends_the_transport_through_close_transport(self) -> None:
        for abort in (False, True):
            leg, _, _ = open_backend_leg(WebSocketConfig(), Clock())
            calls: list[tuple[bool, int]] = []
            leg.close_transport = lambda abort, leg=leg, calls=calls: calls.append((abort, leg.state))
            leg.dropConnection(abort=abort)
            self.assertEqual(calls, [(abort, leg.STATE_CLOSED)])  # once, after Autobahn marked it closed
            leg.connectionLost(Failure(ConnectionLost()))

    def test_close_transport_by_default_is_autobahns(self) -> None:
        for abort, expected in ((True, ["abort"]), (False, ["lose"])):
            transport = _EndingTransport()
            hooks = AutobahnHooks.__new__(AutobahnHooks)
            hooks.transport = transport
            hooks.close_transport(abort)
            self.assertEqual(transport.events, expected)

    def test_connection_gone_runs_after_autobahns_cleanup_and_on_close(self) -> None:
        clock = Clock()
        leg, _, _ = open_backend_leg(WebSocketConfig(backend_ping_interval=1, backend_ping_timeout=1), clock)
        clock.advance(1.2)  # a ping out, its pong timeout pending
        self.assertIsNotNone(leg.autoPingTimeoutCall)
        events: list[Any] = []
        leg.onClose = lambda *args: events.append("onClose")
        leg.connection_gone = lambda reason: events.append(
            ("gone", leg.state, leg.autoPingTimeoutCall, leg.autoPingPendingCall, reason.type))
        leg.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(events, ["onClose", ("gone", leg.STATE_CLOSED, None, None, ConnectionLost)])


class ConnectionLostTests(unittest.TestCase):
    """``connection_lost`` is Autobahn's Twisted ``connectionLost`` but for its debug lines."""

    def test_autobahns_does_nothing_else_but_log(self) -> None:
        source = inspect.getsource(twisted_websocket.WebSocketAdapterProtocol.connectionLost)
        tree = ast.parse(inspect.cleandoc("\n" + source))
        calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        self.assertEqual(calls - {"self.log.debug", "hltype", "hlval"}, {  # hltype, hlval: debug-line arguments
            "isinstance", "_is_tls_error", "self.log.error", "_maybe_tls_reason", "str", "hasattr", "type",
            "self._connectionLost",
        })
        assigned = {ast.unparse(target) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    for target in node.targets}
        self.assertEqual(assigned, {"was_clean", "message"})  # read by its debug lines only

    def test_a_tls_error_is_logged_then_autobahns_cleanup_runs(self) -> None:
        leg, _, _ = open_backend_leg(WebSocketConfig(), Clock())
        logged: list[str] = []
        leg.log = type("Log", (), {"error": staticmethod(logged.append), "debug": staticmethod(lambda *args, **kwargs: None)})()
        events: list[Any] = []
        leg.onClose = lambda *args: events.append("onClose")
        connection_lost(leg, Failure(SSL.Error([("SSL routines", "", "bad record mac")])))
        self.assertEqual(logged, [util._maybe_tls_reason(SSL.Error([("SSL routines", "", "bad record mac")]))])
        self.assertEqual((events, leg.state), (["onClose"], leg.STATE_CLOSED))
        leg2, _, _ = open_backend_leg(WebSocketConfig(), Clock())
        leg2.log = type("Log", (), {"error": staticmethod(logged.append), "debug": staticmethod(lambda *args, **kwargs: None)})()
        connection_lost(leg2, Failure(ConnectionLost()))
        self.assertEqual((len(logged), leg2.state), (1, leg2.STATE_CLOSED))


class AutobahnParserStateTests(unittest.TestCase):
    """The public-looking but undocumented attributes of Autobahn's frame parser that a leg's fast path reads
    (``data``, ``current_frame``, ``inside_message``, ``send_queue``) and the settings it copies (``CONFIG_ATTRS``)."""

    def test_an_open_idle_leg_holds_nothing(self) -> None:
        leg, _, _ = open_backend_leg(WebSocketConfig(), Clock())
        self.assertEqual((leg.data, leg.current_frame, leg.inside_message, len(leg.send_queue)), (b"", None, False, 0))
        self.assertIn("autoPingInterval", WebSocketClientProtocol.CONFIG_ATTRS)
        self.assertIn("maxFramePayloadSize", WebSocketServerProtocol.CONFIG_ATTRS)
        leg.connectionLost(Failure(ConnectionLost()))

    def test_a_partial_frame_and_a_fragmented_message_show(self) -> None:
        leg, _, session = open_backend_leg(WebSocketConfig(), Clock())
        leg.dataReceived(bytes((OP_TEXT, 2)) + b"a")  # a first fragment (no FIN), cut short: Autobahn's path
        self.assertIsNotNone(leg.current_frame)
        self.assertTrue(leg.inside_message)
        leg.dataReceived(b"b" + bytes((0x80, 1)) + b"c")  # its end, then the final continuation
        self.assertEqual((leg.current_frame, leg.inside_message), (None, False))
        self.assertEqual(session.events, [("from_backend", b"abc", False)])
        leg.connectionLost(Failure(ConnectionLost()))


class UnwrapEndpointTests(ProxyTestCase):
    def test_the_tcp_connection_talks_to_the_protocol_directly(self) -> Any:
        port = self.start_raw_origin(_Echo)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def connected(_: object) -> Any:
            transport: Any = client.transport
            wrapper = transport.protocol
            self.assertIsNot(wrapper, client)  # the endpoint's pass-through protocol
            self.assertIs(getattr(wrapper, "_wrappedProtocol", None), client)
            self.assertIs(unwrap_endpoint(client), client)
            self.assertIs(transport.protocol, client)
            self.assertFalse(transport.connector.factory.noisy)  # not the endpoint's: an empty one
            client.send(b"hello")
            return client.until(lambda data: data == b"hello").addCallback(lambda _: transport.loseConnection())

        return d.addCallback(connected).addCallback(lambda _: client.closed)

    def test_a_transport_that_is_not_tcp_is_left_alone(self) -> None:
        protocol = Protocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(unwrap_endpoint(protocol), protocol)
        self.assertIs(protocol.transport, transport)


class ConnectTcpTests(ProxyTestCase):
    """connect_tcp connects as a client endpoint and unwrap_endpoint would, without their layers."""

    def test_the_protocol_is_connected_and_the_connection_talks_to_it_directly(self) -> Any:
        port = self.start_raw_origin(_Echo)
        client = RawClient()
        d = connect_tcp(reactor, ("127.0.0.1", port), client, 5.0, lambda: AssertionError("timed out"))

        def connected(protocol: object) -> Any:
            self.assertIs(protocol, client)
            transport: Any = client.transport
            self.assertIs(transport.protocol, client)
            self.assertFalse(transport.connector.factory.noisy)  # an empty one: nothing kept alive through it
            self.assertFalse([c for c in reactor.getDelayedCalls() if c.func.__name__ == "time_out"])  # cancelled
            self.assertIn(transport, reactor.getReaders())  # reading, as Twisted's client leaves it
            self.assertNotIn(transport, reactor.getWriters())
            self.assertNotIn("doRead", vars(transport))  # its own doRead again, not doConnect
            client.send(b"hello")
            return client.until(lambda data: data == b"hello").addCallback(lambda _: transport.loseConnection())

        return d.addCallback(connected).addCallback(lambda _: client.closed)

    def test_a_lost_connection_leaves_no_cycle_with_its_connector(self) -> Any:
        port = self.start_raw_origin(_Echo)
        client = RawClient()
        d = connect_tcp(reactor, ("127.0.0.1", port), client, 5.0, lambda: AssertionError("timed out"))

        def connected(protocol: object) -> Any:
            transport: Any = client.transport
            connector = transport.connector
            self.assertIs(connector.transport, transport)
            transport.loseConnection()
            closed = client.closed.addCallback(lambda _: task.deferLater(reactor, 0, lambda: None))  # connector told next
            return closed.addCallback(lambda _: self.assertIsNone(connector.transport))

        return d.addCallback(connected)

    @defer.inlineCallbacks
    def test_a_refused_connection_fails_as_through_an_endpoint(self) -> Any:
        listening = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = listening.getHost().port
        yield listening.stopListening()  # nothing listens there now
        outcomes = yield defer.DeferredList(
            [connect_tcp(reactor, ("127.0.0.1", port), RawClient(), 5.0, lambda: AssertionError("timed out")),
             TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(RawClient))],
            consumeErrors=True)
        (ok, lean), (ok2, endpoint) = outcomes
        self.assertFalse(ok or ok2)
        self.assertEqual(lean.type, endpoint.type)
        self.assertEqual(lean.getErrorMessage(), endpoint.getErrorMessage())

    @defer.inlineCallbacks
    def test_a_refused_connection_leaves_no_cycle(self) -> Any:
        """A dead server refuses every request's connection: its factory, connector and client transport go by
        reference counting (the transport's own doConnect, bound in its dict, let go of)."""
        listening = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = listening.getHost().port
        yield listening.stopListening()
        self.collector_off()
        with self.assertRaises(ConnectionRefusedError):
            yield connect_tcp(reactor, ("127.0.0.1", port), RawClient(), 5.0, lambda: AssertionError("timed out"))
        yield task.deferLater(reactor, 0, lambda: None)  # a second event of the failed attempt's poll, if any
        self.assertEqual(our_cyclic_garbage(), [])

    def test_it_times_out_with_the_callers_error_and_stops_the_attempt(self) -> None:
        clock = MemoryReactorClock()
        d = connect_tcp(clock, ("127.0.0.1", 1), RawClient(), 5.0, lambda: ConnectionError("no connection within 5s"))
        (host, port, factory, timeout, _), = clock.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 1, None))  # the timeout is its own reactor call
        failures: list[Failure] = []
        d.addErrback(failures.append)
        clock.advance(4.9)
        self.assertEqual(failures, [])
        clock.advance(0.2)
        self.assertEqual([f.getErrorMessage() for f in failures], ["no connection within 5s"])
        self.assertTrue(clock.connectors[0].stoppedConnecting)  # type: ignore[attr-defined]

    def test_cancelled_it_stops_the_attempt(self) -> None:
        clock = MemoryReactorClock()
        d = connect_tcp(clock, ("127.0.0.1", 1), RawClient(), 5.0, lambda: AssertionError("timed out"))
        failures: list[Failure] = []
        d.addErrback(failures.append)
        d.cancel()
        self.assertEqual([f.type for f in failures], [ConnectingCancelledError])
        self.assertTrue(clock.connectors[0].stoppedConnecting)  # type: ignore[attr-defined]
        self.assertEqual(clock.getDelayedCalls(), [])
        factory = clock.tcpClients[0][2]
        factory.clientConnectionFailed(clock.connectors[0], Failure(ConnectionDone()))  # the attempt's end: nothing more
        self.assertEqual(len(failures), 1)


class _Echo(Protocol):
    """Echoes what it reads."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class TcpBufferedTests(ProxyTestCase):
    def test_only_a_tcp_connection_is(self) -> Any:
        self.assertFalse(tcp_buffered(StringTransport()))
        port = self.start_raw_origin(Protocol)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def connected(_: object) -> None:
            self.addCleanup(client.transport.abortConnection)  # type: ignore[union-attr]
            self.assertTrue(tcp_buffered(client.transport))

        return d.addCallback(connected)


class TrustRootTests(unittest.TestCase):
    def test_the_trust_roots_twisted_makes_provide_it(self) -> None:
        ca_pem, _, _ = make_certificates()
        self.assertTrue(IOpenSSLTrustRoot.providedBy(platformTrust()))
        self.assertTrue(IOpenSSLTrustRoot.providedBy(trustRootFromCertificates([Certificate.loadPEM(ca_pem)])))


@implementer(IHalfCloseableProtocol)
class _EndsOnHalfClose(Protocol):
    """Takes the peer's half-close by ending the connection through end_as_closed."""

    def __init__(self) -> None:
        self.lost: list[Failure] = []

    def readConnectionLost(self) -> None:
        end_as_closed(self.transport)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost.append(reason)


def half_close_to(case: ProxyTestCase, server: _EndsOnHalfClose) -> Any:
    """Connect to ``server``, half-close: fires once the server closed its side too."""
    port = case.start_raw_origin(lambda: server)
    client = RawClient()
    d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

    def connected(_: object) -> Any:
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        return client.closed

    return d.addCallback(connected)


class EndAsClosedTests(ProxyTestCase):
    def test_a_half_closed_tcp_connection_is_closed_and_its_protocol_told(self) -> Any:
        server = _EndsOnHalfClose()

        def closed(_: object) -> None:
            self.assertEqual([reason.type for reason in server.lost], [ConnectionDone])

        return half_close_to(self, server).addCallback(closed)


class _ClosesOnHalfClose(_EndsOnHalfClose):
    """Takes the peer's half-close by closing through close_ended, its socket's calls recorded."""

    def connectionMade(self) -> None:
        self.calls: list[str] = []
        real = self.transport.socket  # type: ignore[attr-defined]
        calls = self.calls

        class Recorded:
            def __getattr__(self, name: str) -> Any:
                calls.append(name)
                return getattr(real, name)

        self.transport.socket = Recorded()  # type: ignore[attr-defined]

    def readConnectionLost(self) -> None:
        close_ended(self.transport)


class CloseEndedTests(ProxyTestCase):
    def test_the_socket_is_closed_without_shutdown_and_the_peer_sees_the_end(self) -> Any:
        server = _ClosesOnHalfClose()

        def closed(_: object) -> None:
            self.assertEqual([reason.type for reason in server.lost], [ConnectionDone])
            self.assertIn("close", server.calls)
            self.assertNotIn("shutdown", server.calls)

        return half_close_to(self, server).addCallback(closed)


class CacheLogLevelsTests(unittest.TestCase):
    def test_the_same_levels_in_the_same_order_each_call_a_new_iterator(self) -> None:
        before = list(LogLevel.iterconstants())
        cache_log_levels()
        cache_log_levels()
        first, second = LogLevel.iterconstants(), LogLevel.iterconstants()
        self.assertIsNot(first, second)
        self.assertEqual(list(first), before)
        self.assertEqual(list(second), before)
        self.assertEqual(before, sorted(LogLevel._enumerants.values(), key=lambda level: level._index))

    def test_an_invalid_level_is_still_refused(self) -> None:
        cache_log_levels()
        events: list[dict[str, Any]] = []
        Logger(observer=events.append).emit("not a level", "x")  # type: ignore[arg-type]
        self.assertEqual(len(events), 1)
        self.assertIs(events[0]["log_level"], LogLevel.critical)  # Twisted's failure for it
        Logger(observer=events.append).info("y")
        self.assertIs(events[1]["log_level"], LogLevel.info)


class DeferAutobahnDebugTests(unittest.TestCase):
    """Autobahn's colouring helpers are deferred: the same text if a debug line is written, nothing built if not."""

    def test_the_helpers_are_used_only_as_keyword_arguments_of_log_calls(self) -> None:
        for module in (protocol, twisted_websocket):
            source = inspect.getsource(module)
            for match in re.finditer(r"(\W)(hltype|hlval)\(", source):
                before = source[: match.start() + 1].rstrip()
                self.assertTrue(before.endswith("="), f"{module.__name__} uses {match.group(2)} outside a log call")

    def test_a_deferred_argument_formats_as_the_helper_would(self) -> None:
        defer_autobahn_debug()
        defer_autobahn_debug()  # idempotent
        for name in ("hltype", "hlval"):
            deferred = getattr(protocol, name)(self.test_a_deferred_argument_formats_as_the_helper_would)
            expected = getattr(util, name)(self.test_a_deferred_argument_formats_as_the_helper_would)
            self.assertEqual((f"{deferred}", str(deferred), "%s" % deferred), (expected,) * 3)
        for value in ([], [("a", 1)] * 30, {}, ()):
            self.assertEqual(protocol.pformat(value), pprint.pformat(value))


class NativeXorTests(unittest.TestCase):
    def test_it_masks_as_python_does(self) -> None:
        xor = native_xor()
        if xor is None:
            raise unittest.SkipTest("Autobahn's NVX masker is not built here")
        for size in (0, 1, 3, 4, 17, 300, 16384, 70000):
            data, mask = bytes(range(256)) * (size // 256) + bytes(range(size % 256)), b"\x01\x80\xfe\x33"
            key = (mask * (size // 4 + 1))[:size]
            expected = bytes(a ^ b for a, b in zip(data, key, strict=True))
            self.assertEqual(bytes(xor(data, mask)), expected)
            self.assertEqual(bytes(xor(memoryview(b"ab" + data)[2:], mask)), expected)


class ConfiguredLegTests(unittest.TestCase):
    def test_autobahn_finds_every_setting_on_the_leg_class(self) -> None:
        """Settings are class attributes of a backend's leg classes: Autobahn's per-connection copy has none left."""
        factories = LegFactories(WebSocketConfig(max_frame_size=1234), Clock())
        for leg, base in ((factories.client_leg, WebSocketServerProtocol),
                          (factories.backend_leg, WebSocketClientProtocol)):
            self.assertEqual(leg.CONFIG_ATTRS, ())
            for name in base.CONFIG_ATTRS:
                self.assertIn(name, vars(leg))
            self.assertEqual(leg.maxFramePayloadSize, 1234)


class SlimOpenLegTests(unittest.TestCase):
    """An open leg keeps less of Autobahn's per-connection state, and behaves as before."""

    def test_autobahn_queues_only_in_send_data(self) -> None:
        source = inspect.getsource(protocol)
        appends = [m.start() for m in re.finditer(r"self\.send_queue\.append", source)]
        send_data = inspect.getsource(WebSocketProtocol.sendData)
        self.assertEqual(len(appends), send_data.count("self.send_queue.append"))
        self.assertIn("send_queue", inspect.getsource(WebSocketProtocol._connectionMade))  # where it is made

    def test_an_open_leg_is_slimmed_and_reads_the_same(self) -> None:
        leg, origin, _ = open_backend_leg(WebSocketConfig(), Clock())
        self.assertEqual(leg.send_queue, ())
        self.assertIsNone(leg._transport_details)
        self.assertNotIn("wasClean", vars(leg))
        self.assertNotIn("websocket_extensions_in_use", vars(leg))
        self.assertEqual(leg.websocket_extensions_in_use, ())  # none, shared
        self.assertLess(len(vars(leg)), 35)
        self.assertEqual((leg.wasClean, leg.closedByMe, leg.remoteCloseCode, leg.autoPingPendingSeq),
                         (False, False, None, 0))
        other, _, _ = open_backend_leg(WebSocketConfig(), Clock())
        self.assertIs(leg.trafficStats, other.trafficStats)
        origin.transport.clear()
        leg.sendMessage(b"abc", isBinary=True, sync=True)  # Autobahn's own queue: a deque is put back first
        self.assertIsInstance(leg.send_queue, deque)
        self.assertEqual(parse_frames(origin.transport.value()), [(0x2, b"abc")])
        leg.connectionLost(Failure(ConnectionLost()))
        other.connectionLost(Failure(ConnectionLost()))

    def test_send_queue_back_keeps_a_real_queue(self) -> None:
        class Leg:
            send_queue: Any = ()

        leg = Leg()
        send_queue_back(leg)
        queue = leg.send_queue
        self.assertIsInstance(queue, deque)
        send_queue_back(leg)
        self.assertIs(leg.send_queue, queue)


#: What only Autobahn's handshake parsing leaves on a leg (read by nothing once it is open).
_HANDSHAKE_ONLY = {"_wskey", "websocket_origin", "websocket_protocols", "websocket_extensions", "http_request_host",
                   "http_request_path", "websocket_key", "_switch", "_key", "_protocols"}


def _state(leg: Any) -> dict[str, Any]:
    """A leg's attributes that are plain values (not its timers, Deferreds, transport or validator)."""
    plain = (type(None), bool, int, float, str, bytes, tuple, list)
    own = {name: value for name, value in vars(leg).items() if name not in _HANDSHAKE_ONLY and isinstance(value, plain)}
    # and those kept on the class (but what it opened on, kept for opening(): a 101, or the subprotocol it chose)
    return own | {name: getattr(leg, name) for name in _AT_REST if name not in _HANDSHAKE_ONLY}


class OpenAtOnceTests(unittest.TestCase):
    """A leg opened by open_at_once is the leg Autobahn's handshake would have opened."""

    def test_a_client_leg_answers_as_autobahn_does(self) -> None:
        key = b"dGhlIHNhbXBsZSBub25jZQ=="
        for chosen, headers in ((None, {}), ("chat", {"Set-Cookie": ["a=1", "b=2"], "X-Caf\u00e9": ["\u00e9"]})):
            legs = []
            for fast in (False, True):
                factories = LegFactories(WebSocketConfig(client_ping_interval=5), Clock())
                leg = factories.client_leg()
                leg.factory = factories.server
                session, transport = StandInSession(), Transport()
                session.accept_client = lambda chosen=chosen, headers=headers: (chosen, headers)  # type: ignore[method-assign]
                leg.session = session
                leg.makeConnection(transport)
                if fast:
                    leg.answer_handshake(key)
                else:
                    offer = b"Sec-WebSocket-Protocol: chat\r\n" if chosen else b""
                    leg.dataReceived(b"GET / HTTP/1.1\r\nHost: rubrisproxy\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                                     + key + b"\r\n" + offer + b"\r\n")
                self.assertEqual(session.events, [("client_opened",)])
                legs.append((leg, transport.value()))
            (slow, slow_answer), (quick, quick_answer) = legs
            self.assertEqual(quick_answer, slow_answer)
            self.assertEqual(_state(quick), _state(slow))
            self.assertEqual(quick.websocket_protocol_in_use, chosen)
            self.assertGreater(len(vars(quick).keys() - _HANDSHAKE_ONLY), 10)
            self.assertIsNotNone(quick.autoPingPendingCall)
            self.assertTrue(quick.is_open.called)
            for leg, _ in legs:
                leg.connectionLost(Failure(ConnectionLost()))

    def test_a_backend_leg_opens_as_autobahn_does(self) -> None:
        legs = []
        for fast in (False, True):
            factories = LegFactories(WebSocketConfig(backend_ping_interval=5), Clock())
            leg = factories.backend_leg()
            leg.factory = factories.client
            session, origin, key = StandInSession(), StandInOrigin(), new_key()
            switch = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")
            leg.attach(session, origin, "chat" if fast else switch, key, ["chat"])  # type: ignore[arg-type]
            self.assertEqual(session.events, [("backend_opened", leg)])
            legs.append(leg)
        slow, quick = legs
        self.assertEqual(_state(quick), _state(slow))
        self.assertEqual(quick.websocket_protocol_in_use, "chat")
        self.assertIsNotNone(quick.autoPingPendingCall)
        for leg in legs:
            leg.connectionLost(Failure(ConnectionLost()))


class ConnectOpenTests(unittest.TestCase):
    """A backend leg connect_open opened is the leg Autobahn's connection set-up and open_at_once would have opened."""

    def _legs(self, **settings: Any) -> tuple[Any, Any, list[StandInSession]]:
        legs, sessions = [], []
        for lean in (False, True):
            factories = LegFactories(WebSocketConfig(backend_ping_interval=5), Clock())
            for name, value in settings.items():
                setattr(factories.backend_leg, name, value)
            leg = factories.backend_leg()
            leg.factory = factories.client
            session, origin = StandInSession(), StandInOrigin()
            if lean:
                leg.attach(session, origin, "chat", new_key(), ["chat"])  # type: ignore[arg-type]
            else:  # what attach did: Autobahn connects it, and its startHandshake opens it with open_at_once
                leg.prepare(session, origin, "chat", new_key(), ["chat"])  # type: ignore[arg-type]
                leg.makeConnection(origin.transport)
            self.assertEqual(session.events, [("backend_opened", leg)])
            legs.append(leg)
            sessions.append(session)
        return legs[0], legs[1], sessions

    def test_it_holds_the_same_attributes_with_the_same_values(self) -> None:
        slow, quick, _ = self._legs()
        self.assertEqual(vars(quick).keys(), vars(slow).keys())
        self.assertEqual(_state(quick), _state(slow))
        self.assertEqual(quick.peer, slow.peer)
        self.assertIs(quick.trafficStats, slow.trafficStats)
        self.assertIsNotNone(quick.autoPingPendingCall)
        self.assertEqual(quick.autoPingPendingCall.getTime(), slow.autoPingPendingCall.getTime())
        self.assertNotIn("_transport_details", vars(quick))
        self.assertTrue(quick.is_open.called)
        for leg in (slow, quick):
            leg.connectionLost(Failure(ConnectionLost()))

    def test_it_sends_and_closes_as_the_other(self) -> None:
        slow, quick, sessions = self._legs()
        for leg, session in zip((slow, quick), sessions, strict=True):
            leg.transport.clear()
            leg.sendMessage(b"abc", isBinary=True)
            leg.dataReceived(frame(0x1, b"hi"))
            leg.connectionLost(Failure(ConnectionLost()))
            self.assertEqual(parse_frames(leg.transport.value()), [(0x2, b"abc")])
            self.assertEqual(session.events[1][0], "from_backend")
            self.assertEqual(leg.state, WebSocketProtocol.STATE_CLOSED)
        slow_events, quick_events = ([tuple("leg" if arg is leg else arg for arg in event) for event in session.events]
                                     for leg, session in zip((slow, quick), sessions, strict=True))
        self.assertEqual(quick_events, slow_events)

    def test_tcp_nodelay_is_set_only_where_the_factory_asks_for_it_off(self) -> None:
        for wanted in (True, False):
            leg = LegFactories(WebSocketConfig(), Clock()).backend_leg()
            leg.tcpNoDelay = wanted
            transport = Transport()
            calls: list[bool] = []
            transport.setTcpNoDelay = calls.append  # type: ignore[method-assign]
            leg.factory = LegFactories(WebSocketConfig(), Clock()).client
            connect_open(leg, transport, 13, None, no_delay=True)
            self.assertEqual(calls, [] if wanted else [False])
            self.assertNotIn("websocket_protocol_in_use", vars(leg))  # none chosen: its class's None
            self.assertIsNone(leg.websocket_protocol_in_use)


class LazyUtf8ValidatorTests(unittest.TestCase):
    def test_autobahn_assigns_it_once_per_connection_and_only_reads_it_after(self) -> None:
        source = inspect.getsource(protocol)
        self.assertEqual(source.count("self.utf8validator ="), 1)
        self.assertIn("self.utf8validator = Utf8Validator()", inspect.getsource(WebSocketProtocol._connectionMade))

    def test_an_open_leg_makes_one_only_when_autobahns_parser_needs_it(self) -> None:
        leg, origin, session = open_backend_leg(WebSocketConfig(), Clock())
        self.assertNotIn("_utf8", vars(leg))
        leg.dataReceived(bytes((0x01, 2)) + "é".encode()[:1] + b"a")  # a first text fragment, cut inside a character
        self.assertIn("_utf8", vars(leg))
        self.assertIs(leg.utf8validator, vars(leg)["_utf8"])
        leg.dataReceived(bytes((0x80, 1)) + b"b")  # its end: invalid UTF-8 is failed with 1007
        frames = parse_frames(origin.transport.value())
        self.assertEqual(frames[-1][0], 0x8)
        self.assertEqual(int.from_bytes(frames[-1][1][:2], "big"), 1007)
        self.assertEqual(session.events, [])


class LazyFutureTests(unittest.TestCase):
    def test_autobahn_makes_both_at_init_and_only_resolves_them_after(self) -> None:
        source = inspect.getsource(protocol)
        init = inspect.getsource(WebSocketProtocol.__init__)
        for name in ("is_open", "is_closed"):
            self.assertEqual(source.count(f"self.{name} ="), 1)
            self.assertIn(f"self.{name} = txaio.create_future()", init)
        self.assertEqual(len(re.findall(r"txaio\.resolve\(self\.is_open, None\)", source)), 2)
        self.assertEqual(len(re.findall(r"txaio\.resolve\(self\.is_closed, self\)", source)), 2)

    def test_a_leg_opened_at_once_holds_neither_and_a_read_makes_them_as_they_were(self) -> None:
        factories = LegFactories(WebSocketConfig(), Clock())
        backend = factories.backend_leg()
        backend.factory = factories.client
        backend.attach(StandInSession(), StandInOrigin(), None, new_key(), [])  # type: ignore[arg-type]
        client = factories.client_leg()
        client.factory = factories.server
        session: Any = StandInSession()
        session.accept_client = lambda: (None, {})
        client.session = session
        client.makeConnection(Transport())
        client.answer_handshake(new_key())
        for leg in (backend, client):
            self.assertEqual(leg.state, WebSocketProtocol.STATE_OPEN)
            self.assertNotIn("is_open", vars(leg))
            self.assertNotIn("is_closed", vars(leg))
            self.assertTrue(leg.is_open.called)
            self.assertIsNone(leg.is_open.result)
            closed = leg.is_closed
            self.assertFalse(closed.called)
            self.assertIs(leg.is_closed, closed)  # kept once made
            results: list[object] = []
            closed.addCallback(results.append)
            leg.connectionLost(Failure(ConnectionLost()))
            self.assertEqual(results, [leg])  # Autobahn resolves the one made

    def test_a_leg_autobahn_opened_holds_no_is_closed(self) -> None:
        leg, _, _ = open_backend_leg(WebSocketConfig(), Clock())  # is_open is resolved after onOpen: kept
        self.assertNotIn("is_closed", vars(leg))
        self.assertTrue(leg.is_open.called)

    def test_a_closed_legs_future_resolved_with_it_is_dropped_and_made_again_on_a_read(self) -> None:
        leg, _, _ = open_backend_leg(WebSocketConfig(), Clock())
        self.assertFalse(leg.is_closed.called)  # read while open: made, and kept
        leg.connectionLost(Failure(ConnectionLost()))  # Autobahn resolves it with the leg; nothing waits on it
        self.assertNotIsInstance(vars(leg)["is_closed"], defer.Deferred)  # no cycle through the leg
        closed = leg.is_closed
        self.assertTrue(closed.called)
        self.assertIs(closed.result, leg)
        self.assertIs(leg.is_closed, closed)

    def test_a_closed_future_waited_on_is_kept(self) -> None:
        class Leg:
            is_closed = LazyFuture(resolved=False)

        leg = Leg()
        waited, other = defer.Deferred(), defer.Deferred()
        waited.addCallback(lambda _: None)
        for future, result in ((waited, leg), (other, "other")):
            leg.is_closed = future
            future.callback(result)
            Leg.is_closed.drop_resolved_with_leg(leg)
            self.assertIs(vars(leg)["is_closed"], future)

    def test_a_future_with_callbacks_or_another_result_is_kept(self) -> None:
        class Leg:
            is_open = LazyFuture(resolved=True)
            is_closed = LazyFuture(resolved=False)

        leg = Leg()
        leg.is_open, leg.is_closed = defer.Deferred(), defer.Deferred()
        opened, closed = leg.is_open, leg.is_closed
        closed.addCallback(lambda _: None)
        opened.callback("other")
        Leg.is_open.drop_unused(leg)
        Leg.is_closed.drop_unused(leg)
        self.assertEqual((vars(leg)["is_open"], vars(leg)["is_closed"]), (opened, closed))
        leg.is_open = defer.Deferred()
        Leg.is_open.drop_unused(leg)  # not resolved yet: kept, for Autobahn to resolve
        self.assertIn("is_open", vars(leg))


class SlimTransportTests(ProxyTestCase):
    def test_a_connection_whose_dict_outgrew_the_shared_keys_gets_a_smaller_one(self) -> Any:
        port = self.start_raw_origin(_Echo)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def connected(_: object) -> Any:
            transport: Any = client.transport
            self.addCleanup(transport.abortConnection)
            slim_transport(transport)
            self.assertNotIn(dict, [type(r) for r in gc.get_referents(transport)])  # none of its own: none made
            names = [f"_extra_{n}" for n in range(40)]  # more names than a class's shared keys take
            for name in names:
                setattr(transport, name, None)
            for name in names:
                delattr(transport, name)
            attributes = dict(vars(transport))
            before = sys.getsizeof(vars(transport))
            slim_transport(transport)
            self.assertLess(sys.getsizeof(vars(transport)), before)
            self.assertEqual(vars(transport), attributes)
            smaller = vars(transport)
            slim_transport(transport)
            self.assertIs(vars(transport), smaller)  # already its size: kept
            slim_transport(StringTransport())  # not a TCP connection: left alone
            source = inspect.getsource(abstract.FileDescriptor.doWrite)
            self.assertIn("self.dataBuffer = ", source)  # the names a flush sets
            self.assertIn("self.offset = 0", source)
            for name in ("dataBuffer", "offset"):
                vars(transport).pop(name, None)
            transport.write(b"st")  # queued until the reactor's next turn: the flush would set them
            slim_transport(transport)
            self.assertEqual((vars(transport)["dataBuffer"], vars(transport)["offset"]), (b"", 0))
            client.send(b"ill")  # reads and writes as before
            return client.until(lambda data: data == b"still")

        return d.addCallback(connected)


class TakeUnsentTests(ProxyTestCase):
    def test_the_write_buffer_is_taken_in_order_and_not_sent(self) -> Any:
        received = RawClient()
        port = self.start_raw_origin(lambda: received)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def connected(_: object) -> Any:
            self.addCleanup(client.transport.abortConnection)  # type: ignore[union-attr]
            client.transport.write(b"first,")  # type: ignore[union-attr]
            client.transport.write(b"second")  # type: ignore[union-attr]
            self.assertEqual(take_unsent(client.transport), b"first,second")
            self.assertEqual(unsent(client.transport), 0)
            client.transport.write(b"later")  # type: ignore[union-attr]  # writing again: only this goes
            return received.until(lambda data: data == b"later")

        return d.addCallback(connected)


class LetGoTests(ProxyTestCase):
    def test_the_socket_is_closed_here_without_a_fin_and_lives_on_in_a_duplicate(self) -> Any:
        received = RawClient()
        port = self.start_raw_origin(lambda: received)
        client = RawClient()
        d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        lost: list[object] = []
        client.connectionLost = lost.append  # type: ignore[method-assign]

        def connected(_: object) -> Any:
            transport: Any = client.transport
            duplicate = socket.socket(fileno=os.dup(transport.fileno()))  # as SCM_RIGHTS gives another process
            self.addCleanup(duplicate.close)
            let_go(transport)
            self.assertFalse(hasattr(transport, "socket"))
            self.assertEqual(lost, [])  # the protocol is not told
            transport.loseConnection()  # a no-op now
            duplicate.sendall(b"still here")
            return received.until(lambda data: data == b"still here")

        def still_open(_: object) -> None:
            self.assertFalse(received.closed.called)  # type: ignore[attr-defined]

        return d.addCallback(connected).addCallback(still_open)


class AutoPingPauseTests(unittest.TestCase):
    def test_paused_it_pings_no_more_and_resumed_it_pings_an_interval_later(self) -> None:
        clock = Clock()
        leg, origin, _ = open_backend_leg(WebSocketConfig(backend_ping_interval=1.0, backend_ping_timeout=5.0), clock)
        clock.advance(1.0)
        self.assertIsNotNone(leg.autoPingTimeoutCall)  # a ping went out: its pong is awaited
        pause_auto_ping(leg)
        self.assertEqual((leg.autoPingPendingCall, leg.autoPingTimeoutCall, leg.autoPingPending), (None, None, None))
        origin.transport.clear()
        clock.advance(10)
        self.assertEqual(origin.transport.value(), b"")
        resume_auto_ping(leg, leg._timer.call_later)
        clock.advance(1.0)
        self.assertEqual([opcode for opcode, _ in parse_frames(origin.transport.value())], [OP_PING])
        leg.connectionLost(Failure(ConnectionLost()))


class DeflateWindowTests(unittest.TestCase):
    def test_the_inflaters_window_and_a_primed_one(self) -> None:
        for compression in (False, True):
            leg, _, _ = open_client_leg(WebSocketConfig(compression=compression), Clock())
            self.assertEqual(inbound_window_bits(leg), 0)  # the stand-in client offered no extension
            leg.connectionLost(Failure(ConnectionLost()))
        leg, _, _ = open_backend_leg(WebSocketConfig(compression=True), Clock(),
                                     b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        self.assertEqual(inbound_window_bits(leg), 15)
        # The server compresses two messages with context takeover; the second refers to the first.
        server = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        first = b"hello hello hello, a message"
        server.compress(first), server.flush(zlib.Z_SYNC_FLUSH)
        second = server.compress(first) + server.flush(zlib.Z_SYNC_FLUSH)
        prime_inflater(leg, first)  # as if the leg had inflated the first elsewhere
        leg.dataReceived(bytes((0xC1, len(second) - 4)) + second[:-4])  # FIN, RSV1, text
        self.assertEqual(leg.session.events[-1], ("from_backend", first, False))
        self.assertTrue(message_compressed(leg))
        leg.connectionLost(Failure(ConnectionLost()))


class HandOverTests(ProxyTestCase):
    """What a live upgrade needs of Twisted's TCP internals: the write buffer taken out, a connection and a
    listening port let go of without shutting their sockets down (another process holds a copy)."""

    @defer.inlineCallbacks
    def test_take_unsent_empties_the_buffer_in_order(self):  # type: ignore[no-untyped-def]
        port = self.start_raw_origin(Protocol)
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(client.transport.abortConnection)
        client.transport.write(b"first,")
        client.transport.write(b"second")
        self.assertEqual(take_unsent(client.transport), b"first,second")
        self.assertEqual(unsent(client.transport), 0)
        self.assertEqual(take_unsent(StringTransport()), b"")

    @defer.inlineCallbacks
    def test_let_go_closes_only_this_copy_and_tells_the_protocol_nothing(self):  # type: ignore[no-untyped-def]
        server = RawClient()
        port = self.start_raw_origin(lambda: server)
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(client.transport.abortConnection)
        copy = socket.socket(fileno=os.dup(client.transport.fileno()))  # another process's copy
        self.addCleanup(copy.close)
        lost: list[object] = []
        client.connectionLost = lost.append  # type: ignore[method-assign]
        let_go(client.transport)
        self.assertEqual(lost, [])
        self.assertFalse(client.transport.connected)
        client.transport.write(b"ignored")
        client.transport.loseConnection()  # a no-op now
        copy.setblocking(True)
        copy.sendall(b"still open")
        yield server.until(lambda data: data == b"still open")
        self.assertFalse(server.closed.called)

    @defer.inlineCallbacks
    def test_let_go_port_leaves_the_socket_listening_for_its_copy(self):  # type: ignore[no-untyped-def]
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        copy = socket.socket(fileno=os.dup(port.fileno()))
        self.addCleanup(copy.close)
        let_go_port(port)
        yield self.poll(lambda: not port.connected, "the port stopped")
        copy.settimeout(5)
        client = socket.create_connection(("127.0.0.1", number), timeout=5)
        self.addCleanup(client.close)
        accepted, _ = copy.accept()  # the socket was not shut down: its copy accepts
        accepted.close()

    @defer.inlineCallbacks
    def test_let_go_port_keeps_a_unix_sockets_path(self):  # type: ignore[no-untyped-def]
        path = self.mktemp()
        port = reactor.listenUNIX(path, Factory.forProtocol(Protocol))
        copy = socket.socket(fileno=os.dup(port.fileno()))
        self.addCleanup(copy.close)
        let_go_port(port)
        yield self.poll(lambda: not port.connected, "the port stopped")
        self.assertTrue(os.path.exists(path))
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        client.connect(path)
        copy.settimeout(5)
        accepted, _ = copy.accept()
        accepted.close()


class _Contexts(Protocol):
    """Records the log context each read runs in, and fails on ``boom``."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], str]] = []
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.seen.append((dict(context.get(log.ILogContext)), self.transport.logPrefix()))  # type: ignore[attr-defined]
        if b"boom" in data:
            raise ZeroDivisionError("boom")

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost.callback(None)


class LeanPollTests(ProxyTestCase):
    """The reactor's poll with the log context inlined: every event sees what Twisted's own poll gives it."""

    def _served(self) -> Any:
        """A connection to a _Contexts server: (the client, the server, a Deferred for the client connected)."""
        server = _Contexts()
        port = self.start_raw_origin(lambda: server)
        client = RawClient()
        return client, server, connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

    @defer.inlineCallbacks
    def test_an_event_runs_in_the_context_twistds_poll_gives_it(self) -> Any:
        client, server, connected = self._served()
        yield connected
        client.send(b"stock")
        yield self.poll(lambda: len(server.seen) == 1, "the first read")
        self.assertTrue(lean_poll(reactor))
        self.addCleanup(delattr, reactor, "doIteration")
        client.send(b"lean")
        yield self.poll(lambda: len(server.seen) == 2, "the second read")
        (stock, prefix), (lean, _) = server.seen
        self.assertEqual(stock["system"], prefix)  # what Twisted's poll pushes: the outer context, system set
        self.assertEqual(lean, stock)
        client.transport.loseConnection()
        yield server.lost

    @defer.inlineCallbacks
    def test_a_failing_event_is_logged_in_its_context_and_drops_the_connection(self) -> Any:
        self.assertTrue(lean_poll(reactor))
        self.addCleanup(delattr, reactor, "doIteration")
        events: list[dict[str, Any]] = []
        log.addObserver(events.append)
        self.addCleanup(log.removeObserver, events.append)
        client, server, connected = self._served()
        yield connected
        client.send(b"boom")
        yield server.lost
        (_, prefix), = server.seen
        failures = [event for event in events if event.get("isError")]
        self.assertEqual([event["system"] for event in failures], [prefix])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_another_reactor_is_left_alone(self) -> None:
        self.assertFalse(lean_poll(Clock()))


@implementer(IHalfCloseableProtocol)
class _HalfCloses(_Contexts):
    """A _Contexts server that answers the end of its client's stream, then closes."""

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.write(b"bye")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class LeanReadTests(ProxyTestCase):
    """A lean TCP connection's read events, handled in one frame by the lean poll, as Twisted's poll handles them."""

    def setUp(self) -> None:
        self.reads: list[object] = []
        handled = _compat._lean_read

        def counted(reactor: Any, transport: Any, *rest: Any) -> None:
            self.reads.append(type(transport))
            handled(reactor, transport, *rest)

        self.patch(_compat, "_lean_read", counted)

    @defer.inlineCallbacks
    def _served(self, server: _Contexts, lean: bool = True) -> Any:
        port = listen_for(self, server)
        if lean:
            self.assertTrue(lean_accepted(port))
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        return client

    def _lean_poll(self) -> None:
        self.assertTrue(lean_poll(reactor))
        self.addCleanup(delattr, reactor, "doIteration")

    @defer.inlineCallbacks
    def test_a_read_sees_the_context_twisteds_poll_gives_it(self) -> Any:
        stock_server, lean_server = _Contexts(), _Contexts()
        stock = yield self._served(stock_server, lean=False)
        stock.send(b"stock")
        yield self.poll(lambda: stock_server.seen, "the stock read")
        self._lean_poll()
        lean = yield self._served(lean_server)
        for count, text in enumerate((b"one", b"two"), 1):
            lean.send(text)
            yield self.poll(lambda count=count: len(lean_server.seen) == count, "a lean read")
        (stock_context, _), = stock_server.seen
        (first, prefix), (second, _) = lean_server.seen
        self.assertEqual(self.reads, [_compat._LeanServer] * 2)
        self.assertEqual(first, {**stock_context, "system": prefix})  # its own system, in the same outer context
        self.assertEqual(second, first)
        self.assertNotEqual(context.get(log.ILogContext).get("system"), prefix)  # nothing left pushed
        for client in (stock, lean):
            client.transport.loseConnection()
        yield lean_server.lost

    @defer.inlineCallbacks
    def test_the_end_of_the_stream_is_a_half_close_for_a_protocol_that_takes_one(self) -> Any:
        self._lean_poll()
        server = _HalfCloses()
        client = yield self._served(server)
        client.send(b"hello")
        yield self.poll(lambda: server.seen, "the read")
        client.transport.loseWriteConnection()
        received = yield client.closed
        self.assertEqual(received, b"bye")
        yield server.lost
        self.assertIn(_compat._LeanServer, self.reads)

    @defer.inlineCallbacks
    def test_a_failing_read_is_logged_in_its_context_and_ends_the_connection(self) -> Any:
        self._lean_poll()
        events: list[dict[str, Any]] = []
        log.addObserver(events.append)
        self.addCleanup(log.removeObserver, events.append)
        server = _Contexts()
        client = yield self._served(server)
        client.send(b"boom")
        yield server.lost
        yield client.closed
        (_, prefix), = server.seen
        self.assertEqual([event["system"] for event in events if event.get("isError")], [prefix])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.reads, [_compat._LeanServer])


class _Unreadable:
    """A socket whose ``recv`` fails with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def recv(self, size: int) -> bytes:
        raise OSError(self.code, os.strerror(self.code))


class _Disconnects:
    """As much of a reactor as _lean_read uses: records each disconnection; ``fails``: raises while doing it."""

    def __init__(self, fails: bool = False) -> None:
        self.disconnected: list[tuple[object, bool]] = []
        self.fails = fails

    def _disconnectSelectable(self, selectable: object, why: object, is_read: bool) -> None:
        self.disconnected.append((why, is_read))
        if self.fails:
            raise ZeroDivisionError("connectionLost failed")


class LeanReadFailureTests(unittest.TestCase):
    """What a lean read does when the socket fails, or when ending the connection does."""

    def _read(self, reactor: _Disconnects, code: int) -> list[dict[Any, Any]]:
        transport = _compat._LeanServer.__new__(_compat._LeanServer)
        transport.socket = _Unreadable(code)  # type: ignore[assignment]
        transport.logstr = "Proto,1,127.0.0.1"
        contexts: list[dict[Any, Any]] = []
        _compat._lean_read(reactor, transport, contexts, {log.ILogContext: {"system": "-"}})
        return contexts

    def test_nothing_to_read_is_no_event(self) -> None:
        reactor = _Disconnects()
        self.assertEqual(self._read(reactor, errno.EWOULDBLOCK), [])
        self.assertEqual(reactor.disconnected, [])

    def test_a_failed_read_loses_the_connection(self) -> None:
        reactor = _Disconnects()
        self.assertEqual(self._read(reactor, errno.ECONNRESET), [])
        (why, is_read), = reactor.disconnected
        self.assertIsInstance(why, ConnectionLost)
        self.assertTrue(is_read)

    def test_a_failing_end_is_logged_and_the_poll_goes_on(self) -> None:
        reactor = _Disconnects(fails=True)
        self.assertEqual(self._read(reactor, errno.ECONNRESET), [])
        self.assertEqual(len(reactor.disconnected), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class _ClosesWhenSent(Protocol):
    """Answers its first read and closes through close_sent; ``then`` is written after the close began."""

    def __init__(self, then: bytes = b"") -> None:
        self.then = then
        self.lost: list[Failure] = []
        self.lost_in_close = False
        self.ended: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        direct_write(self.transport, b"answer")
        close_sent(self.transport)
        self.lost_in_close = bool(self.lost)
        close_sent(self.transport)  # a second close changes nothing
        if self.then:
            self.transport.write(self.then)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost.append(reason)
        self.ended.callback(None)


class CloseSentTests(ProxyTestCase):
    """close_sent ends a TCP connection as loseConnection would, a reactor turn later, without a write event."""

    @defer.inlineCallbacks
    def _exchange(self, server: _ClosesWhenSent) -> Any:
        port = self.start_raw_origin(lambda: server)
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        client.send(b"ask")
        received = yield client.closed
        yield server.ended
        return received

    @defer.inlineCallbacks
    def test_the_connection_ends_cleanly_after_what_was_sent_and_not_inside_the_caller(self) -> Any:
        server = _ClosesWhenSent()
        received = yield self._exchange(server)
        self.assertEqual(received, b"answer")
        self.assertFalse(server.lost_in_close)
        self.assertEqual([reason.type for reason in server.lost], [ConnectionDone])
        self.assertTrue(server.transport.disconnecting)  # type: ignore[union-attr]
        # close(2) without shutdown(2) first: the client above still saw the whole answer and a clean end
        self.assertFalse(server.transport._shouldShutdown)  # type: ignore[union-attr]

    @defer.inlineCallbacks
    def test_what_is_written_meanwhile_is_sent_before_the_close(self) -> Any:
        server = _ClosesWhenSent(then=b" and more" * 100_000)  # more than the kernel takes at once
        received = yield self._exchange(server)
        self.assertEqual(received, b"answer" + b" and more" * 100_000)
        self.assertEqual([reason.type for reason in server.lost], [ConnectionDone])


class _Closing:
    """As much of a TCP transport as close_sent reads, on a Clock; ``fails``: its end raises."""

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0
    producer = None

    def __init__(self, reactor: Clock, ended: list[str], name: str, fails: bool = False) -> None:
        self.reactor, self.ended, self.name, self.fails = reactor, ended, name, fails
        self.connected, self.disconnecting, self.reading = 1, 0, True

    def stopReading(self) -> None:
        self.reading = False

    def connectionLost(self, reason: Failure) -> None:
        self.connected = 0
        if self.fails:
            raise ZeroDivisionError(self.name)
        self.ended.append(self.name)


class CloseSentBatchTests(unittest.TestCase):
    """The connections close_sent closes in one reactor turn end in one call of the next, in order."""

    def test_one_call_ends_them_in_order_and_a_failing_one_is_logged(self) -> None:
        clock, ended = Clock(), []
        transports = [_Closing(clock, ended, "a"), _Closing(clock, ended, "b", fails=True), _Closing(clock, ended, "c")]
        for transport in transports:
            close_sent(transport)
            close_sent(transport)  # a second close changes nothing
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertEqual([(t.reading, t.disconnecting) for t in transports], [(False, 1)] * 3)
        self.assertEqual(ended, [])
        clock.advance(0)
        self.assertEqual(ended, ["a", "c"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        close_sent(_Closing(clock, ended, "d"))  # a later turn: a call of its own
        other = Clock()
        close_sent(_Closing(other, ended, "e"))  # another reactor's turn is its own
        self.assertEqual((len(clock.getDelayedCalls()), len(other.getDelayedCalls())), (1, 1))
        other.advance(0)
        clock.advance(0)
        self.assertEqual(ended, ["a", "c", "e", "d"])


def listen_for(case: ProxyTestCase, server: Protocol) -> Any:
    """A TCP port on loopback whose one connection talks to ``server``, stopped with ``case``."""
    factory = Factory.forProtocol(lambda: server)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    case.addCleanup(port.stopListening)
    return port


class AcceptedWithoutDelayTests(ProxyTestCase):
    """A guarded TCP port's listening socket has TCP_NODELAY, which what it accepts inherits (Linux)."""

    @defer.inlineCallbacks
    def _accepted(self, guard: bool) -> Any:
        server = _Contexts()
        port = listen_for(self, server)
        if guard:
            self.assertTrue(guard_accepts(port, lambda error: None, lambda: None, lambda: None))
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        client.send(b"x")
        while not server.seen:
            yield deferLater(reactor, 0.01)
        self.addCleanup(client.transport.loseConnection)
        return server.transport

    @defer.inlineCallbacks
    def test_a_connection_a_guarded_port_accepts_has_tcp_nodelay_on(self) -> Any:
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("accepted sockets inherit TCP_NODELAY on Linux")
        transport = yield self._accepted(guard=True)
        self.assertTrue(accepted_without_delay(transport))
        self.assertTrue(transport.getTcpNoDelay())

    @defer.inlineCallbacks
    def test_an_unguarded_port_s_connection_is_not_said_to(self) -> Any:
        transport = yield self._accepted(guard=False)
        self.assertFalse(accepted_without_delay(transport))
        self.assertFalse(transport.getTcpNoDelay())
        self.assertFalse(accepted_without_delay(StringTransport()))

    @defer.inlineCallbacks
    def test_a_guarded_port_accepts_sockets_as_socket_accept_makes_them(self) -> Any:
        guarded = (yield self._accepted(guard=True)).socket
        plain = (yield self._accepted(guard=False)).socket

        def kind(sock: socket.socket) -> tuple[Any, ...]:
            return (type(sock), sock.family, sock.type, sock.proto, sock.gettimeout(), sock.get_inheritable(),
                    sock.getsockname()[0], sock.getpeername()[0])

        self.assertEqual(kind(guarded), kind(plain))

    @defer.inlineCallbacks
    def test_plain_peer_host_is_what_get_peer_says(self) -> Any:
        transport = yield self._accepted(guard=False)
        self.assertEqual(plain_peer_host(transport), transport.getPeer().host)
        self.assertIsNone(plain_peer_host(StringTransport()))
        transport.TLS = True  # what startTLS sets, as the connection starts to provide ISSLTransport
        self.assertIsNone(plain_peer_host(transport))


class _Ends(Protocol):
    """One side of a connection, which says how it ended (the type of its failure)."""

    def __init__(self) -> None:
        self.ended: defer.Deferred[type] = defer.Deferred()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.ended.callback(reason.type)


class _ClientEnds(_Ends):
    """The client side (a class of its own: the server's repr names its protocol's)."""


class _Prefixed(_Ends):
    def logPrefix(self) -> str:
        return "prefixed"


class _NoReactor:
    """A reactor that is not told of the connection (a lean connection built only to be looked at)."""

    def addReader(self, reader: object) -> None:
        pass


class LeanAcceptedTests(ProxyTestCase):
    """A port given lean_accepted builds connections that read, log, print and end as Twisted's tcp.Server."""

    @defer.inlineCallbacks
    def _pair(self, lean: bool) -> Any:
        server = _Ends()
        port = listen_for(self, server)
        if lean:
            self.assertTrue(lean_accepted(port))
        client = _ClientEnds()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        while server.transport is None:
            yield deferLater(reactor, 0.01)
        return port, server, client

    @defer.inlineCallbacks
    def _closed(self, *pairs: Any) -> Any:
        for _, server, client in pairs:
            server.transport.loseConnection()
            yield defer.gatherResults([server.ended, client.ended])

    @defer.inlineCallbacks
    def test_a_lean_connection_has_what_a_tcp_server_has(self) -> Any:
        leaned = yield self._pair(lean=True)
        stocked = yield self._pair(lean=False)
        (port, lean, _), (stock_port, stock, _) = leaned, stocked
        self.assertIsInstance(lean.transport, tcp.Server)
        self.assertIsNot(type(lean.transport), tcp.Server)
        self.assertIs(type(stock.transport), tcp.Server)
        own = set(vars(lean.transport)) - {"_protocol_name", "_port_number"}
        self.assertEqual(own, set(vars(stock.transport)) - {"repstr"})
        for name in own - {"socket", "fileno", "protocol", "client", "hostname", "sessionno", "server", "logstr"}:
            self.assertEqual(getattr(lean.transport, name), getattr(stock.transport, name), name)
        self.assertEqual(lean.transport.hostname, stock.transport.hostname)
        self.assertEqual(lean.transport.getPeer().host, stock.transport.getPeer().host)
        self.assertEqual(lean.transport.socket.gettimeout(), stock.transport.socket.gettimeout())
        self.assertEqual(repr(lean.transport), f"<_Ends #{lean.transport.sessionno} on {port.getHost().port}>")
        self.assertEqual(repr(stock.transport), f"<_Ends #{stock.transport.sessionno} on {stock_port.getHost().port}>")
        self.assertEqual(lean.transport.logPrefix(), f"_Ends,{lean.transport.sessionno},127.0.0.1")
        self.assertIs(port._logger, port._logger)  # kept: the same Logger each time
        self.assertEqual((port._logger.namespace, port._logger.source), ("twisted.internet.tcp.Port", port))
        self.assertIsNot(stock_port._logger, stock_port._logger)  # a new one on each read
        self.assertEqual(stock.transport.logPrefix(), f"_Ends,{stock.transport.sessionno},127.0.0.1")
        with socket.socket() as sock:  # a protocol's own logPrefix is asked
            prefixed = _LeanServer(sock, _Prefixed(), ("127.0.0.1", 1), port, 7, _NoReactor())
            self.assertEqual(prefixed.logstr, "prefixed,7,127.0.0.1")
        yield self._closed(leaned, stocked)
        self.assertEqual(repr(lean.transport), f"<_Ends #{lean.transport.sessionno} on {port.getHost().port}>")

    @defer.inlineCallbacks
    def _ending(self, lean: bool, abort: bool) -> Any:
        _, server, client = yield self._pair(lean)
        transport = server.transport
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()
        served, seen = yield defer.gatherResults([server.ended, client.ended])
        gone = [name for name in ("protocol", "socket", "fileno") if hasattr(transport, name)]
        return served, seen, gone, transport.connected, transport.disconnected

    @defer.inlineCallbacks
    def test_a_lean_connection_closes_and_aborts_as_a_tcp_server(self) -> Any:
        for abort in (False, True):
            lean = yield self._ending(lean=True, abort=abort)
            stock = yield self._ending(lean=False, abort=abort)
            self.assertEqual(lean, stock)
            self.assertEqual(lean[1], ConnectionLost if abort else ConnectionDone)  # a reset, or a FIN

    @defer.inlineCallbacks
    def test_a_factory_that_reads_no_address_is_given_none(self) -> Any:
        addresses: list[object] = []

        class _Reads(Factory):
            noisy = False

            def buildProtocol(self, addr: object) -> Protocol:
                addresses.append(addr)
                return _Ends()

        class _Ignores(_Reads):
            builds_without_address = True

        for factory in (_Reads(), _Ignores()):
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
            self.addCleanup(port.stopListening)
            self.assertTrue(lean_accepted(port))
            client = _ClientEnds()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
            while len(addresses) < (1 if type(factory) is _Reads else 2):
                yield deferLater(reactor, 0.01)
            client.transport.loseConnection()  # type: ignore[union-attr]
            yield client.ended
        self.assertEqual(addresses[0].host, "127.0.0.1")  # type: ignore[attr-defined]
        self.assertIsNone(addresses[1])

    def test_only_a_tcp_port_is_made_lean(self) -> None:
        self.assertFalse(lean_accepted(object()))
        shared = ReusePortReactor(reactor).listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(shared.stopListening)
        self.assertTrue(lean_accepted(shared))  # a worker's SO_REUSEPORT listener: a tcp.Port of its own class
        path = self.mktemp()
        port = reactor.listenUNIX(path, Factory.forProtocol(Protocol))  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.assertFalse(lean_accepted(port))


class MalformedH2RequestTests(unittest.SynchronousTestCase):
    """h2's header checks (``h2.utilities.validate_headers``), run on a request's list apart from h2's frame reading."""

    GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/")]

    def test_a_well_formed_request_passes(self) -> None:
        self.assertIsNone(malformed_h2_request([*self.GET, (b"x-a", b"b"), (b"te", b"trailers")]))
        websocket = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
                     (b":authority", b"a.test"), (b":path", b"/ws"), (b"sec-websocket-version", b"13")]
        self.assertIsNone(malformed_h2_request(websocket))

    def test_what_h2_refuses_is_named(self) -> None:
        for headers in ([*self.GET, (b"X-A", b"b")], [*self.GET, (b"connection", b"close")], self.GET[:3],
                        [*self.GET, (b"x-a", b" b")], [*self.GET, (b"x-a", b"\x00")]):
            problem = malformed_h2_request(headers)
            self.assertIsInstance(problem, str, headers)
            self.assertTrue(problem, headers)


class StreamErrorFramesTests(unittest.SynchronousTestCase):
    """h2's connection with a body that is not its Content-Length a stream error, not the connection's."""

    def test_the_stream_is_reset_and_its_bytes_still_count_against_the_connection(self) -> None:
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        server = StreamErrorFrames(H2Configuration(client_side=False, header_encoding=None))
        client.initiate_connection()
        server.initiate_connection()
        server.receive_data(client.data_to_send())
        server.data_to_send()
        client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/"),
                                (b"content-length", b"5")])
        for last in (False, False, True):  # 48,000 bytes: enough for h2 to open the connection's window again
            client.send_data(1, b"x" * 16000, end_stream=last)
        events = server.receive_data(client.data_to_send())
        self.assertEqual([type(e) for e in events][:2], [RequestReceived, BodyLengthMismatch])
        self.assertEqual(events[1].stream_id, 1)
        sent, frames = server.data_to_send(), []
        while sent:
            frame, length = Frame.parse_frame_header(memoryview(sent[:9]))
            frame.parse_body(memoryview(sent[9:9 + length]))
            frames.append(frame)
            sent = sent[9 + length:]
        resets = [f for f in frames if isinstance(f, RstStreamFrame)]
        # The stream is reset for its malformed body; its later frames each get h2's STREAM_CLOSED answer.
        self.assertEqual((resets[0].stream_id, resets[0].error_code), (1, ErrorCodes.PROTOCOL_ERROR))
        self.assertEqual({(f.stream_id, f.error_code) for f in resets[1:]}, {(1, ErrorCodes.STREAM_CLOSED)})
        # Every byte is given back to the connection's window, the first frame's (the one reset) too.
        self.assertEqual(sum(f.window_increment for f in frames if isinstance(f, WindowUpdateFrame) and f.stream_id == 0),
                         48000)
        self.assertEqual(server.state_machine.state.name, "SERVER_OPEN")  # the connection goes on


class StartFailureReportTests(unittest.TestCase):
    """``report_start_failure`` speaks twistd's status pipe, which its options hold while it daemonizes."""

    def test_twistds_waiting_parent_reads_a_failed_start(self):
        read, write = os.pipe()
        options: dict[str, Any] = {"statusPipe": write}
        report_start_failure(options, "frontend web cannot listen on tcp:80: Permission denied")
        self.assertIsNone(options["statusPipe"])
        printed = io.StringIO()
        self.patch(sys, "__stderr__", printed)
        try:
            self.assertEqual(UnixApplicationRunner({})._waitForStart(read), 1)
        finally:
            os.close(read)
        self.assertIn("frontend web cannot listen on tcp:80: Permission denied", printed.getvalue())

    def test_twistd_keeps_the_daemons_status_pipe_in_its_options(self):
        self.assertIn('self.config["statusPipe"] = self.daemonize(', inspect.getsource(UnixApplicationRunner))

    def test_nothing_to_report_without_a_daemon(self):
        options = {"nodaemon": 1}
        report_start_failure(options, "frontend web cannot listen")
        report_start_failure(None, "frontend web cannot listen")
        self.assertEqual(options, {"nodaemon": 1})
