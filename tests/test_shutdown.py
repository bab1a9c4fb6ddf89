"""Graceful stop: stop accepting, let in-flight requests finish within the grace period, cut the rest."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from rubrisproxy.service import FrontendService

from .helpers import ProxyTestCase, RawClient, get


class HeldOrigin(Protocol):
    """Answers /held only when the test says so; everything else at once."""

    held: list[HeldOrigin] = []

    def dataReceived(self, data: bytes) -> None:
        if data.startswith(b"GET /held"):
            HeldOrigin.held.append(self)
        else:
            self.answer()

    def answer(self) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class ShutdownTests(ProxyTestCase):
    @defer.inlineCallbacks
    def start_service(self, grace: float):  # type: ignore[no-untyped-def]
        HeldOrigin.held = []
        frontend = self.start_proxy(self.start_raw_origin(HeldOrigin))
        frontend.clock = self.clock = Clock()
        self.service = FrontendService(reactor, frontend, ("tcp:0:interface=127.0.0.1",), grace)
        self.service.startService()
        self.proxy_port = self.service.ports[0].getHost().port
        idle = yield self.connect()
        idle.send(get(b"/quick"))
        yield idle.responses(1)
        busy = yield self.connect()
        busy.send(get(b"/held"))
        yield self.poll(lambda: HeldOrigin.held, "the held request reaches the origin")
        return frontend, idle, busy

    @defer.inlineCallbacks
    def test_in_flight_request_finishes_idle_connection_closes(self):
        frontend, idle, busy = yield self.start_service(grace=30)
        stopped = self.service.stopService()
        yield idle.closed
        late = RawClient()
        yield self.assertFailure(
            connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), late), ConnectionRefusedError
        )
        self.assertFalse(stopped.called)
        HeldOrigin.held[0].answer()
        data = yield busy.closed
        self.assertIn(b"Connection: close", data)
        self.assertTrue(data.endswith(b"\r\n\r\nok"))
        self.clock.advance(0.1)
        yield stopped
        self.assertEqual(frontend.connections, set())

    @defer.inlineCallbacks
    def test_grace_period_cuts_what_remains(self):
        frontend, idle, busy = yield self.start_service(grace=5)
        stopped = self.service.stopService()
        yield idle.closed
        self.clock.advance(4.9)
        self.assertFalse(busy.closed.called)
        self.clock.advance(0.2)
        yield stopped
        data = yield busy.closed
        self.assertEqual(data, b"")
