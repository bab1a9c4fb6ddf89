"""Graceful stop: stop accepting, let in-flight requests finish within the grace period, cut the rest."""

from __future__ import annotations

from random import Random

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial import unittest

from rubrisproxy.config import FrontendConfig
from rubrisproxy.frontend import drain
from rubrisproxy.listening import FrontendService, Shutdown

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
        config = FrontendConfig(name=frontend.name, listen=("tcp:0:interface=127.0.0.1",))
        self.service = FrontendService(reactor, frontend, config, Shutdown(grace, 0.0, 1001))
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


class SpreadCloseTests(unittest.TestCase):
    """WebSockets closed at random moments over the spread, with the configured code, cut at the grace's end."""

    class FakeRelay:
        def __init__(self, frontend, clock, ends: bool = True) -> None:  # type: ignore[no-untyped-def]
            self.frontend, self.clock, self.ends = frontend, clock, ends
            self.drained: list[tuple[float, int]] = []
            self.aborted = False

        def drain(self, code: int = 1001) -> None:
            self.drained.append((self.clock.seconds(), code))
            if self.ends:
                self.frontend.websockets.discard(self)

        def abort(self) -> None:
            self.aborted = True
            self.frontend.websockets.discard(self)

    def frontend(self, clock: Clock):  # type: ignore[no-untyped-def]
        from rubrisproxy.config import BackendConfig, Timeouts

        from .helpers import build_frontend

        return build_frontend(clock, BackendConfig("b"), timeouts=Timeouts(connect=1, server=1))

    def test_closes_spread_over_the_window_with_the_code(self) -> None:
        clock = Clock()
        frontend = self.frontend(clock)
        relays = [self.FakeRelay(frontend, clock) for _ in range(20)]
        frontend.websockets.update(relays)
        done = drain(frontend, grace=30, spread=10, close_code=1012, rng=Random(7))
        self.assertFalse(any(relay.drained for relay in relays))  # none at once
        clock.pump([0.5] * 25)
        times = sorted(relay.drained[0][0] for relay in relays)
        self.assertTrue(0 < times[0] and times[-1] <= 10.5)
        self.assertGreater(len(set(round(t) for t in times)), 5)  # spread, not bunched
        self.assertEqual({relay.drained[0][1] for relay in relays}, {1012})
        self.assertTrue(done.called)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_what_remains_after_the_grace_is_cut(self) -> None:
        clock = Clock()
        frontend = self.frontend(clock)
        stuck = self.FakeRelay(frontend, clock, ends=False)
        frontend.websockets.add(stuck)
        done = drain(frontend, grace=5, spread=2, close_code=1001, rng=Random(1))
        clock.pump([0.1] * 60)
        self.assertEqual(len(stuck.drained), 1)
        self.assertTrue(stuck.aborted)
        self.assertTrue(done.called)
        self.assertEqual(clock.getDelayedCalls(), [])
