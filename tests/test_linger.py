"""Lingering close: a client that may still be sending as the proxy closes gets its response, then a FIN, and
what it sends after is read and discarded until it closes, within bounds (time, idle time, bytes)."""

from __future__ import annotations

import gc
import socket
import time

from twisted.internet import defer, reactor, task, threads
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from rubrisproxy.config import BackendConfig, ConfigError, Limits, Timeouts, config_from_document
from rubrisproxy.frontend import ClientConnection
from rubrisproxy.frontend._phase import Phase

from .helpers import ProxyTestCase, build_frontend, get, our_cyclic_garbage, parse_responses
from .test_framing import make_frontend
from .test_tls_listen import TLSListenerCase

TIMEOUTS = Timeouts(client=30, http_request=10, http_keep_alive=5, connect=5, server=60, linger=30, linger_idle=5)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TOO_LARGE = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"


class HalfClosingTransport(StringTransport):
    """A StringTransport that can shut its write side, as TCP's does (the test says when the FIN went out:
    ``writeConnectionLost``)."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class LingerTests(unittest.TestCase):
    """The phase moves and the bounds, to the second, with a Clock."""

    def setUp(self) -> None:
        self.connect(Limits(max_body_size=1000))

    def connect(self, limits: Limits, timeouts: Timeouts = TIMEOUTS) -> None:
        self.clock = Clock()
        self.frontend, self.connector = make_frontend(self.clock, limits, timeouts)
        self.protocol = ClientConnection(self.frontend)
        self.transport = HalfClosingTransport()
        self.protocol.makeConnection(self.transport)

    def fin_sent(self) -> None:
        """What Twisted does once what was written is sent: the FIN goes out."""
        self.assertTrue(self.transport.write_closed)
        self.protocol.writeConnectionLost()

    def lost(self) -> None:
        """The transport closed as it was asked: its protocol hears of it (at once, or after an abort)."""
        aborted = self.transport.disconnected  # what StringTransport.abortConnection sets
        self.protocol.connectionLost(Failure(ConnectionAborted() if aborted else ConnectionDone()))

    def refuse_upload(self) -> None:
        self.protocol.dataReceived(TOO_LARGE + b"x" * 5000)
        (response,) = parse_responses(self.transport.value())
        self.assertEqual(response.status, 413)
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.assertFalse(self.transport.disconnecting)  # the read side stays open
        self.assertEqual(self.transport.producerState, "producing")  # reading, whatever the refusal paused

    def assert_ended(self, end: str) -> None:
        self.assertIs(self.protocol._phase, Phase.LOST)
        (record,) = self.frontend.access_log.connections
        self.assertEqual(record.end, end)
        self.assertEqual(self.frontend.connections, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no timer left behind

    def test_a_refused_upload_is_answered_then_read_to_the_clients_end_of_stream(self):
        self.refuse_upload()
        self.fin_sent()
        late = b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n" + b"y" * 1000
        for _ in range(10):
            self.clock.advance(1)
            self.protocol.dataReceived(late)  # discarded, unparsed
        self.assertEqual(len(parse_responses(self.transport.value())), 1)
        self.assertEqual(self.connector.connections, [])
        self.assertIn(self.protocol, self.frontend.connections)  # still open, for drain and shutdown limits
        self.protocol.readConnectionLost()  # the client closed its side
        self.assertTrue(self.transport.disconnecting)
        self.lost()
        self.assert_ended("protocol-read-error")  # what closed it, not how the lingering ended
        self.assertEqual(self.frontend.access_log.connections[0].bytes_in, len(TOO_LARGE) + 5000 + 10 * len(late))

    def test_a_client_that_sends_nothing_more_and_never_closes_is_closed_after_linger_idle(self):
        self.refuse_upload()
        self.clock.advance(20)  # the FIN is not out: the response is still being sent, timed by timeout client
        self.assertFalse(self.transport.disconnecting)
        self.fin_sent()  # linger-idle runs from here
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)  # closed, not aborted: what was sent is still delivered
        self.lost()
        self.assert_ended("protocol-read-error")

    def test_a_client_that_takes_none_of_the_response_is_cut_after_timeout_client(self):
        self.refuse_upload()
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnected)  # aborted: the response will not go
        self.lost()
        self.assert_ended("protocol-read-error")

    def test_a_slow_sender_is_closed_after_linger_in_all(self):
        self.refuse_upload()
        self.fin_sent()
        for _ in range(7):  # a byte each 4 s: under linger-idle each time (slowloris)
            self.clock.advance(4)
            self.protocol.dataReceived(b"x")
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1.9)  # 29.9 s after the FIN
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.lost()
        self.assert_ended("protocol-read-error")

    def test_a_client_that_never_stops_sending_is_cut_after_linger_bytes(self):
        self.connect(Limits(max_body_size=1000, linger_bytes=100_000))
        self.refuse_upload()
        self.fin_sent()
        chunk = b"z" * 16384
        for _ in range(6):  # 98 304 bytes, 5000 of them read with the request
            self.protocol.dataReceived(chunk)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.dataReceived(chunk)
        self.assertTrue(self.transport.disconnected)  # aborted
        self.lost()
        self.assert_ended("protocol-read-error")

    def test_linger_bytes_counts_from_the_close_even_before_the_fin(self):
        self.connect(Limits(max_body_size=1000, linger_bytes=10_000))
        self.refuse_upload()
        self.protocol.dataReceived(b"z" * 10_001)
        self.assertTrue(self.transport.disconnected)

    def test_linger_bytes_0_turns_lingering_off(self):
        self.connect(Limits(max_body_size=1000, linger_bytes=0))
        self.protocol.dataReceived(TOO_LARGE + b"x" * 5000)
        self.assertIs(self.protocol._phase, Phase.CLOSING)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.write_closed)

    def test_a_close_asked_by_a_client_that_sent_nothing_more_is_not_lingering(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.connector.connections[0].dataReceived(OK)
        self.assertIs(self.protocol._phase, Phase.CLOSING)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.write_closed)
        self.assertIsNone(self.protocol._linger)

    def test_requests_pipelined_after_connection_close_are_never_answered_and_linger(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + get(b"/2") + get(b"/3"))
        self.connector.connections[0].dataReceived(OK)
        self.assertEqual(len(parse_responses(self.transport.value())), 1)
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.assertEqual(len(self.connector.connections), 1)

    def test_requests_read_after_max_reads_are_never_answered_and_linger(self):
        self.frontend.max_reads = 1
        self.protocol.dataReceived(get(b"/1") + get(b"/2"))
        self.connector.connections[0].dataReceived(OK)
        self.assertEqual(len(parse_responses(self.transport.value())), 1)
        self.assertIs(self.protocol._phase, Phase.LINGERING)

    def test_half_a_request_read_after_max_reads_lingers(self):
        self.frontend.max_reads = 1
        self.protocol.dataReceived(get(b"/1") + b"GET /2 HT")
        self.connector.connections[0].dataReceived(OK)
        self.assertIs(self.protocol._phase, Phase.LINGERING)

    def test_half_a_request_read_behind_a_refused_request_lingers(self):
        """A request refused once parsed (a 400 for its target) closes the connection: half a head already read
        behind it is never answered, and closing at once would answer what the client still sends with a reset."""
        self.protocol.dataReceived(b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n" + b"GET /2 HT")
        self.assertEqual([r.status for r in parse_responses(self.transport.value())], [400])
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.assertTrue(self.transport.write_closed)

    def test_half_a_request_read_behind_a_close_delimited_response_lingers(self):
        """An HTTP/1.0 request answered with a body the close delimits: half a head behind it lingers too."""
        self.protocol.dataReceived(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + b"GET /2 HT")
        self.connector.connections[0].dataReceived(b"HTTP/1.1 200 OK\r\n\r\nok")
        self.connector.connections[0].connectionLost(Failure(ConnectionDone()))
        response = self.transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\nok"), response)
        self.assertIs(self.protocol._phase, Phase.LINGERING)

    def test_an_answer_before_the_body_is_read_lingers_and_a_drain_leaves_it_so(self):
        self.protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\n\r\n" + b"x" * 100)
        self.connector.connections[0].dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertEqual(parse_responses(self.transport.value())[0].status, 403)
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.protocol.drain()
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.assertFalse(self.transport.disconnecting)

    def test_a_503_with_no_server_while_the_body_is_in_flight_lingers(self):
        frontend = build_frontend(self.clock, BackendConfig(name="app"), timeouts=TIMEOUTS)
        protocol, transport = ClientConnection(frontend), HalfClosingTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\n\r\n" + b"x" * 100)
        self.assertEqual([r.status for r in parse_responses(transport.value())], [503])
        self.assertIs(protocol._phase, Phase.LINGERING)
        self.assertTrue(transport.write_closed)

    def test_a_refused_upgrade_whose_client_sent_on_without_waiting_lingers(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\nearly bytes")
        self.connector.connections[0].dataReceived(OK)  # refused: no hand-over
        self.assertEqual(len(parse_responses(self.transport.value())), 1)
        self.assertIs(self.protocol._phase, Phase.LINGERING)

    def test_a_half_read_head_at_shutdown_lingers_and_shutdown_leaves_it_lingering(self):
        self.protocol.dataReceived(b"GET / HTTP/1.1\r\nHo")
        self.protocol.drain()
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.protocol.drain()  # a second drain (or a close) changes nothing
        self.protocol.close()
        self.assertIs(self.protocol._phase, Phase.LINGERING)
        self.assertFalse(self.transport.disconnecting)
        self.fin_sent()
        self.protocol.readConnectionLost()
        self.lost()
        self.assert_ended("server-close")

    def test_an_idle_connection_at_shutdown_is_not_lingering(self):
        self.protocol.dataReceived(get(b"/"))
        self.connector.connections[0].dataReceived(OK)
        self.protocol.drain()
        self.assertIs(self.protocol._phase, Phase.CLOSING)
        self.assertTrue(self.transport.disconnecting)

    def test_the_client_closing_before_the_fin_is_out_closes_once_the_response_is_sent(self):
        self.refuse_upload()
        self.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)  # Twisted sends what it holds, then closes
        self.lost()
        self.assert_ended("protocol-read-error")

    def test_a_client_that_closed_its_side_and_reads_nothing_is_still_cut_after_timeout_client(self):
        self.refuse_upload()
        self.protocol.readConnectionLost()
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(30.1)  # what it holds would never go: no timer would leave it open for ever
        self.assertTrue(self.transport.disconnected)
        self.lost()
        self.assert_ended("protocol-read-error")

    def test_a_lingering_connection_leaves_no_cyclic_garbage(self):
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        self.refuse_upload()
        self.fin_sent()
        self.protocol.readConnectionLost()
        self.lost()
        del self.protocol, self.transport
        self.assertEqual(our_cyclic_garbage(), [])


class LingerConfigTests(unittest.TestCase):
    def test_the_bounds_are_read_with_their_keys(self):
        config = config_from_document({"timeouts": {"linger": "10s", "linger-idle": "2s"}, "limits": {"linger-bytes": "1m"}})
        self.assertEqual((config.timeouts.linger, config.timeouts.linger_idle), (10.0, 2.0))
        self.assertEqual(config.limits.linger_bytes, 1 << 20)

    def test_a_bad_bound_is_refused_naming_its_key(self):
        for section, key, value in (("timeouts", "linger", "soon"), ("timeouts", "linger-idle", 0),
                                    ("limits", "linger-bytes", "-1")):
            with self.assertRaises(ConfigError) as caught:
                config_from_document({section: {key: value}})
            self.assertIn(f"{section}.{key}", str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))


class Uploader:
    """A client over a real socket, blocking, run in a thread: sends a head and then body bytes for ``seconds``
    whatever comes back, reading what does; it never stops early, as a client that sends its whole body first."""

    def __init__(self, port: int, head: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(head)
        self.received = b""
        self.fin = False
        self.send_error: OSError | None = None

    def upload(self, seconds: float) -> None:
        self.sock.settimeout(0.01)
        chunk = b"x" * 16384
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(0.002)  # at most 8 MB/s: under linger-bytes in the time it sends
            try:
                self.sock.sendall(chunk)
            except TimeoutError:
                pass
            except OSError as error:  # a reset (ECONNRESET, EPIPE): what lingering prevents
                self.send_error = error
                return
            self._read()

    def _read(self) -> None:
        while not self.fin:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return
            if not data:
                self.fin = True
            self.received += data

    def finish(self) -> None:
        """Read the rest (to the proxy's FIN), then close."""
        self.sock.settimeout(5)
        while not self.fin:
            data = self.sock.recv(65536)
            self.fin = not data
            self.received += data
        self.sock.close()


class LingerOverLoopbackTests(ProxyTestCase):
    """The same over 127.0.0.1: the client gets its whole 413 and a FIN, never a reset, while it goes on
    sending; the proxy closes once the client does, or after the bound."""

    limits = Limits(max_body_size=1000)

    @defer.inlineCallbacks
    def test_a_client_uploading_on_gets_its_413_and_a_fin_then_the_proxy_closes_after_it(self):
        frontend = self.start_proxy(self.start_web_origin())
        self.collector_off()
        client = Uploader(self.proxy_port, b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n")
        yield threads.deferToThread(client.upload, 0.5)  # well after the proxy answered
        self.assertIsNone(client.send_error)
        self.assertTrue(client.fin)  # the proxy shut its side: a FIN
        (response,) = parse_responses(client.received)
        self.assertEqual(response.status, 413)
        self.assertEqual(response.body, b"413 Content Too Large\n")
        (connection,) = frontend.connections
        self.assertIs(connection._phase, Phase.LINGERING)
        self.assertGreater(connection.bytes_in, 1_000_000)  # it read what came, and discarded it
        yield threads.deferToThread(client.finish)
        yield self.settle(frontend)
        (record,) = self.access_log.connections
        self.assertEqual(record.end, "protocol-read-error")
        del connection
        self.assertEqual(our_cyclic_garbage(), [])  # freed by reference counting

    @defer.inlineCallbacks
    def test_a_client_that_stops_sending_but_never_closes_is_closed_after_linger_idle(self):
        frontend = self.start_proxy(self.start_web_origin(), linger_idle=0.3)
        client = Uploader(self.proxy_port, b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n")
        yield threads.deferToThread(client.upload, 0.2)
        self.assertIsNone(client.send_error)
        began = reactor.seconds()
        yield self.settle(frontend)  # the proxy closes, the client having done nothing
        self.assertGreater(reactor.seconds() - began, 0.1)
        yield threads.deferToThread(client.finish)
        self.assertEqual(parse_responses(client.received)[0].status, 413)


class LingerOverTLSTests(TLSListenerCase):
    """On TLS the close sends close_notify and reads on: a client that goes on sending, and answers the close_notify
    with its own (as Twisted's TLS does), is let go of at once, not held until ``timeout client`` unread."""

    @defer.inlineCallbacks
    def test_a_tls_client_uploading_on_gets_its_413_and_the_connection_ends_with_its_close_notify(self):
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]',
                          more='\n[limits]\nmax-body-size = "1k"\n[timeouts]\nclient = "30s"\n')
        frontend = self.running.frontend
        client = yield self.tls_client(port)
        client.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n")
        sending = task.LoopingCall(client.send, b"x" * 16384)
        sending.start(0.005)
        self.addCleanup(lambda: sending.running and sending.stop())
        began = reactor.seconds()
        received = yield client.closed.addTimeout(10, reactor)
        self.assertEqual(parse_responses(received)[0].status, 413)
        yield self.poll(lambda: not frontend.connections, "the proxy let go of it")
        self.assertLess(reactor.seconds() - began, 5)  # not timeout client
