"""Health: active TCP, HTTP and WebSocket checks with rise/fall on a Clock; passive ejection."""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web import resource

from rubrisproxy.backend import Backend, HealthChecker
from rubrisproxy.config import BackendConfig, HealthCheckConfig, PassiveCheckConfig, ServerConfig, Timeouts
from rubrisproxy.origin import OriginConnector
from rubrisproxy.settings import LiveSettings

from .helpers import ProxyTestCase, our_cyclic_garbage


class Health(resource.Resource):
    isLeaf = True
    status = 200

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        request.setResponseCode(self.status)
        return b"health"


class ActiveCheckTests(ProxyTestCase):
    def checker(self, port: int, **settings: object):  # type: ignore[no-untyped-def]
        self.clock = Clock()
        config = HealthCheckConfig(**{"interval": 2.0, "rise": 2, "fall": 3, "timeout": 1.0, **settings})  # type: ignore[arg-type]
        backend = Backend(BackendConfig("app", (ServerConfig("s1", "127.0.0.1", port),), health=config), self.clock)
        checker = HealthChecker("app", lambda: backend.servers, config, self.clock,
                                OriginConnector(reactor, LiveSettings.of(Timeouts(connect=1.0))).connect)
        checker.start()
        self.addCleanup(checker.stop)
        self.checkers = {**getattr(self, "checkers", {}), backend.servers[0]: checker}
        return backend.servers[0]

    @defer.inlineCallbacks
    def run_checks(self, server, count: int):  # type: ignore[no-untyped-def]
        """Advance the clock through ``count`` checks, waiting for each one's answer."""
        checker = self.checkers[server]
        for _ in range(count):
            seen = checker.completed
            self.clock.advance(2.0)
            yield self.poll(lambda seen=seen: checker.completed > seen, "a check result")

    @defer.inlineCallbacks
    def test_tcp_check_takes_a_dead_server_down_then_up(self):
        listener = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = listener.getHost().port
        server = self.checker(port, check="tcp")
        yield self.run_checks(server, 1)
        self.assertEqual((server.up, server.check_successes), (True, 1))
        yield listener.stopListening()
        yield self.run_checks(server, 2)
        self.assertTrue(server.up)  # fall = 3: two failures are not enough
        yield self.run_checks(server, 1)
        self.assertFalse(server.up)
        self.assertIn("cannot connect", server.last_check_problem)
        listener = reactor.listenTCP(port, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        yield self.run_checks(server, 1)
        self.assertFalse(server.up)  # rise = 2
        yield self.run_checks(server, 1)
        self.assertTrue(server.up)

    @defer.inlineCallbacks
    def test_checks_leave_nothing_for_the_cyclic_collector(self):  # type: ignore[no-untyped-def]
        """A check runs every few seconds on every server: each goes by reference counting, passed or failed."""
        root = resource.Resource()
        root.putChild(b"health", Health())
        self.collector_off()
        server = self.checker(self.start_web_origin(root), check="http", path="/health")
        yield self.run_checks(server, 2)
        self.assertTrue(server.up)
        listener = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        server = self.checker(listener.getHost().port, check="tcp")  # its clock is the one run_checks advances now
        yield self.run_checks(server, 2)
        yield listener.stopListening()
        yield self.run_checks(server, 2)  # refused
        self.assertEqual((server.check_successes, server.check_failures), (0, 2))
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_http_check_expects_the_status_range(self):
        health = Health()
        root = resource.Resource()
        root.putChild(b"health", health)
        server = self.checker(self.start_web_origin(root), check="http", path="/health", fall=1, rise=1)
        yield self.run_checks(server, 1)
        self.assertTrue(server.up)
        health.status = 503
        yield self.run_checks(server, 1)
        self.assertFalse(server.up)
        self.assertEqual(server.last_check_problem, "HTTP status 503")
        health.status = 204
        yield self.run_checks(server, 1)
        self.assertTrue(server.up)

    @defer.inlineCallbacks
    def test_websocket_check_needs_101_and_a_clean_close(self):
        factory = WebSocketServerFactory("ws://127.0.0.1")
        factory.protocol = WebSocketServerProtocol
        listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        server = self.checker(listener.getHost().port, check="websocket", fall=1, rise=1)
        yield self.run_checks(server, 1)
        self.assertEqual((server.up, server.check_successes, server.check_failures), (True, 1, 0))
        plain_http = self.checker(self.start_web_origin(), check="websocket", fall=1, rise=1)
        yield self.run_checks(plain_http, 1)
        self.assertFalse(plain_http.up)
        self.assertIn("refused with HTTP status", plain_http.last_check_problem)

    @defer.inlineCallbacks
    def test_timeout(self):
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        server = self.checker(silent.getHost().port, check="http", fall=1)
        self.clock.advance(2.0)
        yield self.poll(lambda: server.check_failures == 0, "connecting")
        self.clock.advance(1.1)
        yield self.poll(lambda: server.check_failures == 1, "the timeout")
        self.assertFalse(server.up)
        self.assertIn("no answer within 1s", server.last_check_problem)

    @defer.inlineCallbacks
    def test_an_endless_head_fails_the_check(self):
        class Endless(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"X" * 70000)

        listener = reactor.listenTCP(0, Factory.forProtocol(Endless), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        server = self.checker(listener.getHost().port, check="http", fall=1)
        yield self.run_checks(server, 1)
        self.assertFalse(server.up)
        self.assertEqual(server.last_check_problem, "answer head over 65536 bytes")


    def test_stopping_the_checks_mid_probe_says_nothing_about_the_server(self) -> None:
        silent = self.start_raw_origin(Protocol)  # accepts, never answers an HTTP check
        server = self.checker(silent, check="http", fall=1)
        self.clock.advance(2.0)  # a probe starts
        self.checkers[server].stop()  # as a reload that changes the checks does
        self.assertTrue(server.up)
        self.assertEqual(self.checkers[server].completed, 0)


class PassiveCheckTests(unittest.TestCase):
    def test_consecutive_errors_eject_for_a_cool_off(self):
        clock = Clock()
        config = BackendConfig(
            "app", (ServerConfig("s1", "127.0.0.1", 1), ServerConfig("s2", "127.0.0.1", 2)),
            passive=PassiveCheckConfig(errors=3, on_5xx=True, cool_off=30), slow_start=10,
        )
        backend = Backend(config, clock)
        bad = backend.servers[0]
        backend.report_error(bad, "refused")
        backend.report_error(bad, "refused")
        bad.consecutive_errors = 0  # a success in between resets the count
        for _ in range(3):
            backend.report_error(bad, "HTTP 502")
        self.assertFalse(bad.up)
        self.assertEqual([s.name for s in backend.usable()], ["s2"])
        clock.advance(30)
        self.assertTrue(bad.up)
        self.assertLess(bad.effective_weight, 1)  # slow start after coming back


class DownServerTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_in_flight_request_finishes_new_requests_go_elsewhere(self):
        held: list[Protocol] = []

        class Held(Protocol):
            def dataReceived(self, data: bytes) -> None:
                held.append(self)

        frontend = self.start_proxy(self.start_raw_origin(Held), self.start_web_origin())
        first = yield self.connect()
        first.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        yield self.poll(lambda: held, "the request reaches s1")
        frontend.backend.servers[0].set_up(False)
        (other,) = yield self.request(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(other.body, b"path=/next")  # s2 answered: s1 takes nothing new
        held[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        (finished,) = yield first.responses(1)
        self.assertEqual((finished.status, finished.body), (200, b"done"))

