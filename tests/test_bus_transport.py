"""Worker processes' shared state over the supervisor's channel (``cluster.BusTransport``): a request carrying a sid
a sibling learned an instant ago waits for the sibling's push, boundedly."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.cluster import BusTransport, encode_change
from rubrisproxy.cluster._bus import MAX_WAITS, PUSH_WAIT, TOPIC
from rubrisproxy.sharing import Change, Kind

PUSHED = Change(Kind.SID, "app", b"sid-1", "s2", expire=60.0, at=1.0)


class FakeBus:
    """A bus whose deliveries the test makes."""

    def __init__(self) -> None:
        self.subscribers: dict[str, object] = {}

    def publish(self, topic: str, payload: bytes, retain: str = "") -> None:
        pass

    def subscribe(self, topic: str, subscriber) -> None:  # type: ignore[no-untyped-def]
        self.subscribers[topic] = subscriber

    def deliver(self, change: Change, node: str = "worker-0") -> None:
        self.subscribers[TOPIC](encode_change(node, change), 0)  # type: ignore[operator]


class Receiver:
    def __init__(self) -> None:
        self.applied: list[Change] = []

    def apply(self, change: Change, only_new: bool = False) -> None:
        self.applied.append(change)

    def admin_states(self):  # type: ignore[no-untyped-def]
        return ()


class LookupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = FakeBus()
        self.receiver = Receiver()
        self.transport = BusTransport(self.bus, "worker-1", self.clock)  # type: ignore[arg-type]
        self.transport.attach(self.receiver)  # type: ignore[arg-type]
        self.transport.start()
        self.answers: list[Change | None] = []

    def test_the_push_answers_the_waiting_request(self) -> None:
        self.assertTrue(self.transport.lookup(Kind.SID, "app", b"sid-1", self.answers.append))
        self.clock.advance(PUSH_WAIT / 2)
        self.assertEqual(self.answers, [])
        self.bus.deliver(PUSHED)
        self.assertEqual(self.answers, [PUSHED])
        self.assertEqual(self.receiver.applied, [PUSHED])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # its timer cancelled: answered once
        self.clock.advance(PUSH_WAIT)
        self.assertEqual(self.answers, [PUSHED])

    def test_every_request_waiting_for_the_key_is_answered(self) -> None:
        other: list[Change | None] = []
        self.transport.lookup(Kind.SID, "app", b"sid-1", self.answers.append)
        self.transport.lookup(Kind.SID, "app", b"sid-1", other.append)
        self.bus.deliver(PUSHED)
        self.assertEqual((self.answers, other), ([PUSHED], [PUSHED]))

    def test_another_key_or_backend_does_not_answer(self) -> None:
        self.transport.lookup(Kind.SID, "app", b"sid-1", self.answers.append)
        self.bus.deliver(Change(Kind.SID, "app", b"sid-2", "s1", expire=60.0, at=1.0))
        self.bus.deliver(Change(Kind.SID, "other", b"sid-1", "s1", expire=60.0, at=1.0))
        self.assertEqual(self.answers, [])
        self.clock.advance(PUSH_WAIT)
        self.assertEqual(self.answers, [None])

    def test_no_push_answers_none_after_the_wait(self) -> None:
        self.transport.lookup(Kind.SID, "app", b"sid-1", self.answers.append)
        self.clock.advance(PUSH_WAIT * 0.99)
        self.assertEqual(self.answers, [])
        self.clock.advance(PUSH_WAIT * 0.02)
        self.assertEqual(self.answers, [None])
        self.bus.deliver(PUSHED)  # too late: applied, answers no one
        self.assertEqual(self.answers, [None])
        self.assertEqual(self.receiver.applied, [PUSHED])

    def test_servers_and_client_sessions_are_not_waited_for(self) -> None:
        self.assertFalse(self.transport.lookup(Kind.SERVER, "app", b"s1", self.answers.append))
        self.assertFalse(self.transport.lookup(Kind.CLIENT, "web", b"c1", self.answers.append))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_stopped_transport_does_not_wait(self) -> None:
        self.transport.stop()
        self.assertFalse(self.transport.lookup(Kind.SID, "app", b"sid-1", self.answers.append))

    def test_at_most_max_waits_at_once(self) -> None:
        for index in range(MAX_WAITS):
            self.assertTrue(self.transport.lookup(Kind.SID, "app", b"%d" % index, self.answers.append))
        self.assertFalse(self.transport.lookup(Kind.SID, "app", b"one more", self.answers.append))
        self.clock.advance(PUSH_WAIT)
        self.assertEqual(self.answers, [None] * MAX_WAITS)
        self.assertTrue(self.transport.lookup(Kind.SID, "app", b"one more", self.answers.append))
