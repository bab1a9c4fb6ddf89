"""QueuedTimer: timeouts of a few lengths, a queue per length and one reactor call per queue, on time."""

from __future__ import annotations

from functools import partial

from twisted.internet.task import Clock
from twisted.trial import unittest

from rubrisproxy import deadline
from rubrisproxy.deadline import Deadline, QueuedTimer


class QueuedTimerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.timer = QueuedTimer(self.clock)
        self.fired: list[tuple[str, float]] = []

    def later(self, delay: float, name: str) -> deadline.QueuedCall:
        return self.timer.callLater(delay, partial(self.note, name))

    def note(self, name: str) -> None:
        self.fired.append((name, self.clock.seconds()))

    def test_calls_of_one_length_share_a_reactor_call_and_run_each_at_its_time(self) -> None:
        self.later(10, "a")
        self.clock.advance(1.5)
        self.later(10, "b")
        self.later(5, "c")  # another length: a queue and a reactor call of its own
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.assertEqual(self.timer.pending(), 3)
        for step, fired in ((4.99, []), (0.01, ["c"]), (3.49, ["c"]), (0.01, ["c", "a"]), (1.49, ["c", "a"]),
                            (0.01, ["c", "a", "b"])):
            self.clock.advance(step)
            self.assertEqual([name for name, _ in self.fired], fired)
        self.assertEqual(self.fired, [("c", 6.5), ("a", 10.0), ("b", 11.5)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.timer.pending(), 0)

    def test_a_cancelled_call_does_not_run_and_the_last_one_leaves_nothing_scheduled(self) -> None:
        first = self.later(10, "a")
        second = self.later(10, "b")
        first.cancel()
        first.cancel()  # twice is harmless
        self.assertFalse(first.active())
        self.assertTrue(second.active())
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        second.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(20)
        self.assertEqual(self.fired, [])

    def test_a_queue_drops_its_cancelled_calls_when_they_outnumber_the_pending_ones(self) -> None:
        kept = self.later(10, "kept")
        for _ in range(1000):
            self.later(10, "dropped").cancel()
        (queue,) = self.timer._queues.values()
        self.assertLessEqual(len(queue.calls), 3 + deadline.SLACK + 1)
        self.assertEqual(queue.live, 1)
        self.clock.advance(10)
        self.assertEqual(self.fired, [("kept", 10.0)])
        self.assertFalse(kept.active())

    def test_a_first_call_cancelled_moves_the_wake_up_to_the_next_without_running_early(self) -> None:
        first = self.later(10, "a")
        self.clock.advance(2)
        self.later(10, "b")
        first.cancel()
        self.clock.advance(8)  # the reactor call for "a" comes, finds it cancelled, waits for "b"
        self.assertEqual(self.fired, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertEqual(self.fired, [("b", 12.0)])

    def test_a_failing_call_is_logged_and_the_others_run(self) -> None:
        self.timer.callLater(1, lambda: 1 / 0)
        self.later(1, "after")
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.fired, [("after", 1.0)])

    def test_a_call_queued_while_its_queue_runs_waits_for_a_reactor_call_of_its_own(self) -> None:
        def first() -> None:
            self.later(0, "queued meanwhile")
            self.assertEqual(self.fired, [])  # not run inside this one

        self.timer.callLater(0, first)
        self.clock.advance(0)  # Clock runs the reactor call made for it in the same advance
        self.assertEqual(self.fired, [("queued meanwhile", 0.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_call_cancelled_by_another_of_its_queue_as_they_run_does_not_run(self) -> None:
        second: list[deadline.QueuedCall] = []
        self.timer.callLater(1, lambda: second[0].cancel())
        second.append(self.later(1, "b"))
        self.later(1, "c")
        self.clock.advance(1)
        self.assertEqual(self.fired, [("c", 1.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DeadlineOnQueuedTimerTests(unittest.TestCase):
    """A Deadline on a QueuedTimer keeps its meaning: expiry at the last time set, moved either way."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[float] = []
        self.deadline = Deadline(QueuedTimer(self.clock), lambda: self.expired.append(self.clock.seconds()))

    def test_moved_later_it_expires_at_the_later_time(self) -> None:
        self.deadline.set(5)
        self.clock.advance(3)
        self.deadline.set(5)
        self.clock.advance(2)
        self.assertEqual(self.expired, [])
        self.clock.advance(3)
        self.assertEqual(self.expired, [8.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_moved_earlier_it_expires_at_the_earlier_time_once(self) -> None:
        self.deadline.set(10)
        self.clock.advance(1)
        self.deadline.set(5)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the call for 10 s was cancelled
        self.clock.advance(5)
        self.assertEqual(self.expired, [6.0])
        self.clock.advance(10)
        self.assertEqual(self.expired, [6.0])

    def test_cleared_it_does_not_expire_and_stopped_it_leaves_nothing(self) -> None:
        self.deadline.set(5)
        self.deadline.clear()
        self.clock.advance(6)
        self.assertEqual(self.expired, [])
        self.deadline.set(5)
        self.deadline.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(6)
        self.assertEqual(self.expired, [])
