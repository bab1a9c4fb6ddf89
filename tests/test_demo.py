"""The demo origins: bounded endpoints, a stop that can stop only its own origin, the restart, and demo mode."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from rubrisproxy.config import DEMO_ADMIN_LISTEN, CommandLine, load_config, loopback_only
from rubrisproxy.demo import MAX_BODY, MAX_KIB, RESTART_DELAY, DemoAdminService, DemoOrigin, OriginState, demo_site
from rubrisproxy.demo._stream import BlockProducer
from rubrisproxy.service import build_service

from .helpers import ProxyTestCase, get
from .wsecho import connect_client


def post(path: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: demo\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (path, content_type, len(body), body))


class OriginCase(ProxyTestCase):
    """One demo origin, ``a``, on a loopback port, its restart timed by a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.origin = DemoOrigin("a", reactor, clock=self.clock)
        self.proxy_port = self.origin.start()  # the helpers' requests go to ``proxy_port``
        self.addCleanup(self.origin.shut)

    def json_of(self, response: Any) -> Any:
        return json.loads(response.body)


class EndpointTests(OriginCase):
    @defer.inlineCallbacks
    def test_bad_stream_parameters_are_400(self):
        # Before: kib=abc was a 500 with a traceback, and any size up to 1 GiB was built in memory.
        for query in (b"abc", b"-1", b"1e3", b"", b"%d" % (MAX_KIB + 1), b"99999999999", b"64&kib=64", b"%00"):
            (response,) = yield self.request(get(b"/stream?kib=" + query))
            self.assertEqual(response.status, 400, query)
            self.assertIn(b"kib must be one whole number from 0 to 65536", response.body)
            self.assertNotIn(b"Traceback", response.body)

    @defer.inlineCallbacks
    def test_stream_sends_what_it_says(self):
        (response,) = yield self.request(get(b"/stream?kib=130"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"133120")
        self.assertEqual(response.body, (b"x" * 1023 + b"\n") * 130)
        (response,) = yield self.request(get(b"/stream?kib=0"))
        self.assertEqual((response.status, response.body), (200, b""))

    @defer.inlineCallbacks
    def test_echo_is_bounded(self):
        (response,) = yield self.request(post(b"/echo", b"hello", b"text/plain"))
        self.assertEqual((response.status, response.body), (200, b"hello"))
        self.assertEqual(response.header(b"x-demo-origin"), b"a")
        (response,) = yield self.request(post(b"/echo", b"x" * (MAX_BODY + 1), b"text/plain"))
        self.assertEqual(response.status, 413)

    @defer.inlineCallbacks
    def test_info_names_the_origin(self):
        (response,) = yield self.request(get(b"/api/info"))
        self.assertEqual(self.json_of(response),
                         {"origin": "a", "port": self.proxy_port, "stats": None, "restart_delay": RESTART_DELAY})

    @defer.inlineCallbacks
    def test_websocket_says_which_origin_and_session(self):
        client = connect_client(self.proxy_port, "/ws", headers={"X-Rubris-Session": "abc123; resume=2"})
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        client.sendMessage(b"hi")
        yield client.wait_messages(2)
        self.clock.advance(1.0)
        messages = yield client.wait_messages(3)
        hello, echo, tick = (json.loads(payload) for payload, _ in messages[:3])
        self.assertEqual(hello, {"kind": "hello", "origin": "a", "session": "abc123", "resume": "2"})
        self.assertEqual((echo["kind"], echo["text"], echo["origin"]), ("echo", "hi", "a"))
        self.assertEqual((tick["kind"], tick["n"]), ("tick", 1))
        client.sendClose(1000)
        yield client.closed
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the ticker stopped


    @defer.inlineCallbacks
    def test_websocket_refuses_a_plain_get_and_a_message_over_its_limit(self):
        (response,) = yield self.request(get(b"/ws"))
        self.assertEqual(response.status, 426)  # before: Autobahn's own status page, 200
        self.assertIn(b"WebSocket endpoint", response.body)
        client = connect_client(self.proxy_port, "/ws")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        client.sendMessage(b"x" * (64 * 1024 + 1))
        wasClean, code, _ = yield client.closed
        self.assertEqual((wasClean, code), (True, 1009))  # a close the proxy passes on, not a dropped connection


class StopTests(OriginCase):
    @defer.inlineCallbacks
    def test_stop_refuses_anything_but_its_own_name_as_json(self):
        cases = [
            (get(b"/api/stop"), 405),
            (post(b"/api/stop", b'{"origin": "a"}', b"text/plain"), 415),  # a cross-site form cannot send JSON
            (post(b"/api/stop", b'{"origin": "a"}', b"application/x-www-form-urlencoded"), 415),
            (post(b"/api/stop", b"{"), 400),
            (post(b"/api/stop", b"[]"), 400),
            (post(b"/api/stop", b'{"origin": 1}'), 400),
            (post(b"/api/stop", b'{"origin": "a", "pad": "' + b"x" * 1024 + b'"}'), 413),
            (post(b"/api/stop", b'{"origin": "b"}'), 409),
            (post(b"/api/stop", b'{"origin": "../a"}'), 409),
            (post(b"/api/stop", b'{"origin": "a"}').replace(b"Host: demo", b"Host: demo\r\nOrigin: http://evil.example"),
             403),
            (post(b"/api/stop", b'{"origin": "a"}').replace(b"Host: demo", b"Host: demo\r\nOrigin: null"), 403),
        ]
        for request, status in cases:
            (response,) = yield self.request(request)
            self.assertEqual(response.status, status, request)
        self.assertIs(self.origin.state, OriginState.UP)
        (response,) = yield self.request(get(b"/api/info"))
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_stop_answers_then_drops_everything_and_comes_back(self):
        idle = yield self.connect()
        idle.send(get(b"/api/info"))
        yield idle.responses(1)
        socket = connect_client(self.proxy_port, "/ws")
        self.addCleanup(lambda: socket.transport.abortConnection() if socket.transport.connected else None)
        yield socket.opened
        stop = post(b"/api/stop", b'{"origin": "a"}').replace(b"Host: demo", b"Host: demo\r\nOrigin: http://demo")
        (response,) = yield self.request(stop)
        self.assertEqual(response.status, 202)
        self.assertEqual(self.json_of(response), {"origin": "a", "stopped": True, "restart_in": RESTART_DELAY})
        self.assertIs(self.origin.state, OriginState.DOWN)
        wasClean, code, _ = yield socket.closed
        self.assertFalse(wasClean)  # dropped as by a crash: no close handshake
        self.assertEqual(code, 1006)
        yield self.poll(lambda: not idle.transport.connected, "the idle connection dropped")
        yield self.assertFailure(self.connect(), ConnectionRefusedError)
        self.clock.advance(RESTART_DELAY)
        self.assertIs(self.origin.state, OriginState.UP)
        (response,) = yield self.request(get(b"/api/info"))
        self.assertEqual(self.json_of(response)["port"], self.proxy_port)  # the same port as before

    @defer.inlineCallbacks
    def test_shut_cancels_the_restart(self):
        (response,) = yield self.request(post(b"/api/stop", b'{"origin": "a"}'))
        self.assertEqual(response.status, 202)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        yield self.origin.shut()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(RESTART_DELAY)
        self.assertIs(self.origin.state, OriginState.SHUT)
        yield self.assertFailure(self.connect(), ConnectionRefusedError)


class FakeRequest:
    """What :class:`BlockProducer` uses of a request, recording it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None
        self.finished = False
        self.gone: defer.Deferred[None] = defer.Deferred()

    def notifyFinish(self) -> defer.Deferred[None]:
        return self.gone

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True


class BlockProducerTests(unittest.TestCase):
    def test_writes_only_when_the_consumer_asks(self):
        request = FakeRequest()
        producer = BlockProducer(request, 100)
        verifyObject(IPullProducer, producer)
        producer.start()
        self.assertIs(request.producer, producer)
        self.assertFalse(request.streaming)
        self.assertEqual(request.written, [])  # nothing until the transport asks
        producer.resumeProducing()
        self.assertEqual([len(w) for w in request.written], [64 * 1024])
        producer.resumeProducing()
        self.assertEqual([len(w) for w in request.written], [64 * 1024, 36 * 1024])
        self.assertFalse(request.finished)
        producer.resumeProducing()
        self.assertTrue(request.finished)
        self.assertIsNone(request.producer)

    def test_stops_when_the_client_goes(self):
        request = FakeRequest()
        producer = BlockProducer(request, MAX_KIB)
        producer.start()
        producer.resumeProducing()
        request.gone.errback(ConnectionRefusedError())  # the connection was lost
        producer.resumeProducing()
        self.assertEqual(len(request.written), 1)
        self.assertFalse(request.finished)


class DemoModeTests(ProxyTestCase):
    def test_default_listener_is_loopback(self):
        config = load_config(CommandLine())
        self.assertEqual(config.frontends[0].listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertTrue(all(loopback_only(e) for e in config.frontends[0].listen))
        self.assertTrue(loopback_only(DEMO_ADMIN_LISTEN))

    def test_demo_mode_opens_the_stats_page_on_loopback_unless_an_admin_listener_is_set(self):
        service = build_service(load_config(CommandLine(listen=["tcp:0:interface=127.0.0.1"])), reactor)
        admin = service.getServiceNamed("admin")
        self.assertIsInstance(admin, DemoAdminService)
        self.assertEqual(admin.endpoints, ("tcp:9000:interface=127.0.0.1",))
        service = build_service(load_config(CommandLine(backends=["127.0.0.1:1"])), reactor)
        self.assertRaises(KeyError, service.getServiceNamed, "admin")  # not in demo mode: no admin listener

    @defer.inlineCallbacks
    def test_demo_mode_has_two_origins_and_the_stats_page(self):
        config = load_config(CommandLine(listen=["tcp:0:interface=127.0.0.1"], admin=["tcp:0:interface=127.0.0.1"],
                                         access_log="off"))
        service = build_service(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        demo = service.getServiceNamed("demo")
        servers = {s.name: s.config.port for s in service.parts.backends["default"].servers}
        self.assertEqual(servers, {f"demo-{o.name}": o.port_number for o in demo.origins})
        self.assertEqual(len(servers), 2)
        self.proxy_port = service.getServiceNamed("frontend:default").ports[0].getHost().port
        admin_port = service.getServiceNamed("admin").ports[0].getHost().port
        seen = set()
        for _ in range(2):  # round robin
            (response,) = yield self.request(get(b"/api/info"))
            answer = json.loads(response.body)
            self.assertEqual(answer["stats"], f"http://127.0.0.1:{admin_port}/")
            seen.add(answer["origin"])
        self.assertEqual(seen, {"a", "b"})

    @defer.inlineCallbacks
    def test_demo_admin_port_taken_is_a_warning(self):
        taken = reactor.listenTCP(0, demo_site(DemoOrigin("x", reactor)), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        admin = DemoAdminService(reactor, demo_site(DemoOrigin("y", reactor)),
                                 f"tcp:{taken.getHost().port}:interface=127.0.0.1")
        admin.privilegedStartService()
        admin.startService()
        self.assertEqual(admin.ports, [])
        self.assertTrue(any("no stats page" in e.get("log_format", "") for e in events))
        yield admin.stopService()
