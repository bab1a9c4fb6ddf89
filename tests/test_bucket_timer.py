"""BucketTimer: Autobahn's timers batched on the proxy's clock, leaving nothing behind when cancelled."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from rubrisproxy.websocket._timers import BucketTimer


class BucketTimerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.timer = BucketTimer(self.clock, bucket=0.2)
        self.fired: list[str] = []

    def test_calls_in_one_bucket_share_one_reactor_call_and_fire_no_earlier(self) -> None:
        self.timer.call_later(1.05, self.fired.append, "a")
        self.timer.call_later(1.1, self.fired.append, "b")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.09)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.11)
        self.assertEqual(self.fired, ["a", "b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelling_the_last_call_of_a_bucket_frees_its_reactor_call(self) -> None:
        first = self.timer.call_later(5, self.fired.append, "a")
        second = self.timer.call_later(5, self.fired.append, "b")
        first.cancel()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        second.cancel()
        second.cancel()  # twice is harmless
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.timer.pending(), 0)
        self.clock.advance(10)
        self.assertEqual(self.fired, [])

    def test_a_cancelled_call_does_not_fire_with_the_rest_of_its_bucket(self) -> None:
        self.timer.call_later(1, self.fired.append, "a")
        self.timer.call_later(1, self.fired.append, "b").cancel()
        self.clock.advance(1.2)
        self.assertEqual(self.fired, ["a"])
