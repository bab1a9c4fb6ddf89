"""HAProxy-named timeouts, driven by a Clock: http-request, http-keep-alive, client, server, connect."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from rubrisproxy.config import BackendConfig, ServerConfig, Timeouts

from .helpers import build_frontend, parse_responses
from .test_framing import connect, make_frontend

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class TimeoutTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.frontend, self.connector = make_frontend(self.clock)
        self.protocol, self.transport = connect(self.frontend)

    def test_http_request_timeout_answers_408(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost:")
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertEqual(parse_responses(self.transport.value())[0].status, 408)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.frontend.access_log.entries[-1].termination, "request-timeout")

    def test_silent_connection_closed_without_response(self):
        self.clock.advance(10.1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")

    def test_keep_alive_timeout_closes_idle_connection(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        (origin,) = self.connector.connections
        origin.dataReceived(OK)
        self.assertEqual(parse_responses(self.transport.value())[0].status, 200)
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.frontend.pool.idle_count, 1)

    def test_keep_alive_then_slow_head_is_http_request_timeout(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.connector.connections[0].dataReceived(OK)
        self.clock.advance(4)
        self.protocol.dataReceived(b"GET /slow HTTP/1.1\r\n")
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1.1)
        self.assertEqual(parse_responses(self.transport.value())[1].status, 408)

    def test_server_timeout_answers_504_and_drops_origin(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        (origin,) = self.connector.connections
        self.clock.advance(59)
        origin.dataReceived(b"HTTP/1.1 200 OK\r\n")  # activity resets the timer
        self.clock.advance(59)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(1.1)
        self.assertEqual(parse_responses(self.transport.value())[0].status, 504)
        self.assertTrue(origin.transport.disconnecting)
        self.assertEqual(self.frontend.pool.idle_count, 0)
        self.assertEqual(self.frontend.access_log.entries[-1].termination, "server-timeout")

    def test_client_timeout_during_request_body(self):
        self.protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
        (origin,) = self.connector.connections
        self.clock.advance(29)
        self.protocol.dataReceived(b"678")  # progress resets it
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1.1)
        self.assertEqual(parse_responses(self.transport.value())[0].status, 408)
        self.assertTrue(origin.transport.disconnecting)
        self.assertEqual(self.frontend.access_log.entries[-1].termination, "client-timeout")

    def test_stalled_reader_runs_client_timeout_not_server_timeout(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        (origin,) = self.connector.connections
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        origin.gate.pauseProducing()  # what the client transport does when its buffer fills
        self.assertEqual(origin.transport.producerState, "paused")
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        origin.gate.resumeProducing()
        origin.gate.pauseProducing()
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnected or self.transport.disconnecting)
        self.assertEqual(self.frontend.access_log.entries[-1].termination, "client-timeout")


class ConnectTimeoutTests(unittest.TestCase):
    def test_connect_timeout_tries_next_then_503(self):
        reactor = MemoryReactorClock()
        timeouts = Timeouts(connect=5)
        servers = (ServerConfig("s1", "127.0.0.1", 1), ServerConfig("s2", "127.0.0.1", 2))
        frontend = build_frontend(reactor, BackendConfig(name="app", servers=servers, retries=1), timeouts=timeouts)
        pool = frontend.pool
        protocol, transport = connect(frontend)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual([c[1] for c in reactor.tcpClients], [1])
        reactor.advance(5.1)
        self.assertEqual([c[1] for c in reactor.tcpClients], [1, 2])
        self.assertEqual(transport.value(), b"")
        reactor.advance(5.1)
        self.assertEqual(parse_responses(transport.value())[0].status, 503)
        record = frontend.access_log.entries[-1]
        self.assertEqual((record.termination, record.retries), ("connect-timeout", 1))  # two attempts: one retry
        self.assertEqual(pool.connecting, 0)


class PartialHeadTests(unittest.TestCase):
    def answered_once(self, clock):
        """A client connection whose first request was answered a second ago: (its protocol, its transport)."""
        frontend, connector = make_frontend(clock)
        protocol, transport = connect(frontend)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        connector.connections[0].dataReceived(OK)
        clock.advance(1)
        return protocol, transport

    def test_a_single_byte_after_keep_alive_starts_http_request(self):
        clock = Clock()
        protocol, transport = self.answered_once(clock)
        protocol.dataReceived(b"G")
        clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertEqual(parse_responses(transport.value())[1].status, 408)

    def test_empty_lines_after_keep_alive_start_http_request(self):
        # An empty line starts no request (RFC 9112 2.2), but it ends the keep-alive wait: http-request times
        # what follows, and more empty lines do not restart it (a client sending one now and then is not kept).
        clock = Clock()
        protocol, transport = self.answered_once(clock)
        protocol.dataReceived(b"\r\n")
        clock.advance(5)
        protocol.dataReceived(b"\n")
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(parse_responses(transport.value())), 1)  # nothing was asked: closed without a 408
