"""BucketTimer: Autobahn's timers batched on the proxy's clock, leaving nothing behind when cancelled."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from rubrisproxy.deadline import Deadline
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

    def test_a_call_cancelled_by_another_of_its_bucket_does_not_run(self) -> None:
        calls = []
        self.timer.call_later(1, lambda: (self.fired.append("a"), calls[0].cancel()))
        calls.append(self.timer.call_later(1, self.fired.append, "b"))
        self.timer.call_later(1.05, self.fired.append, "c")  # the next bucket
        self.clock.advance(1)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(0.25)
        self.assertEqual(self.fired, ["a", "c"])
        self.assertEqual((self.timer.pending(), self.clock.getDelayedCalls()), (0, []))

    def test_a_reset_call_runs_once_at_its_new_time(self) -> None:
        call = self.timer.call_later(1, self.fired.append, "a")
        self.timer.call_later(1, self.fired.append, "b")  # keeps the first bucket alive
        call.reset(3)
        self.assertTrue(call.active())
        self.assertAlmostEqual(call.getTime(), 3.0)
        self.clock.advance(1)
        self.assertEqual(self.fired, ["b"])
        call.reset(2)  # earlier again, into a bucket of its own
        self.assertEqual(len(self.timer.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertEqual(self.fired, ["b", "a"])
        self.assertFalse(call.active())
        self.assertEqual((self.timer.pending(), self.clock.getDelayedCalls()), (0, []))

    def test_a_deadline_on_it_expires_no_earlier_and_at_most_a_bucket_later(self) -> None:
        deadline = Deadline(self.timer, lambda: self.fired.append("expired"))
        deadline.set(5.03)
        self.clock.advance(2)
        deadline.set(5.03)  # moved later: its call stays, and is armed again when it fires early
        self.clock.advance(5.02)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.2)
        self.assertEqual(self.fired, ["expired"])
        deadline.set(1)
        deadline.stop()
        self.assertEqual((self.timer.pending(), self.clock.getDelayedCalls()), (0, []))
