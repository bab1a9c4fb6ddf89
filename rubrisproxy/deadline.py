"""A timeout that is cheap to move, for timers reset on every request or read; and a clock on which many
timeouts of a few lengths are cheap to arm."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger(namespace=__name__)  # named: a compiled module has no frame for Logger to read it from


class Deadline:
    """Calls ``on_expire`` once the deadline last :meth:`set` passes.

    Moving the deadline later costs one clock read: the single pending call is
    left alone and, when it fires early, re-armed for what remains. Only moving it
    earlier replaces the call. :meth:`clear` disarms without touching the clock;
    :meth:`stop` cancels the call (on close, so nothing is left behind). ``clock`` is the
    reactor, or anything with its ``seconds`` and ``callLater`` (a :class:`QueuedTimer`).
    """

    __slots__ = ("_clock", "_on_expire", "_at", "_call", "_call_at")

    def __init__(self, clock: IReactorTime | QueuedTimer, on_expire: Callable[[], object]) -> None:
        self._clock: Any = clock
        self._on_expire = on_expire
        self._at: float | None = None
        self._call: IDelayedCall | QueuedCall | None = None
        self._call_at = 0.0  # when the pending call fires

    @property
    def armed(self) -> bool:
        return self._at is not None

    @property
    def remaining(self) -> float | None:
        """Seconds until it expires (None: not armed)."""
        return None if self._at is None else max(0.0, self._at - self._clock.seconds())

    def set(self, delay: float) -> None:
        self._at = at = self._clock.seconds() + delay
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self._fire)
            self._call_at = at
        elif self._call_at > at:
            call.cancel()
            self._call = self._clock.callLater(delay, self._fire)
            self._call_at = at

    def clear(self) -> None:
        self._at = None

    def stop(self) -> None:
        self._at = None
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def disown(self) -> None:
        """Stop, and let go of ``on_expire`` (its owner is gone): a bound method would keep a cycle through the
        owner, which only Python's cyclic garbage collector frees."""
        self.stop()
        self._on_expire = _nothing

    def _fire(self) -> None:
        self._call = None
        at = self._at
        if at is None:
            return
        remaining = at - self._clock.seconds()
        if remaining > 0:
            self._call = self._clock.callLater(remaining, self._fire)
            self._call_at = at
            return
        self._at = None
        self._on_expire()


def _nothing() -> None:
    """A disowned :class:`Deadline`'s callback."""


class QueuedTimer:
    """A clock for many timeouts of a few lengths: each length's calls are queued in the order they were made,
    which is the order they come due in, so one reactor call (for the first of them) serves a whole queue.

    A connection's timeouts take a handful of lengths (``http-request``, ``http-keep-alive``, ``client``): armed
    here, each costs an append to its queue rather than a DelayedCall pushed onto the reactor's heap (and, once
    cancelled, left in it). A call runs when the reactor's call for it would have run, not before. A cancelled
    call stays queued, inert, until its queue reaches it or drops the cancelled ones (when they outnumber the
    pending ones: :data:`SLACK`); a queue with no call pending has no reactor call. Only what a :class:`Deadline`
    asks of its clock: :meth:`seconds` and :meth:`callLater`.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.seconds = clock.seconds  # the clock's own, read by each Deadline.set: no wrapper
        self._queues: dict[float, _Queue] = {}

    def callLater(self, delay: float, func: Callable[[], object]) -> QueuedCall:
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = _Queue(self, delay)
        call = QueuedCall(queue, self.seconds() + delay, func)
        queue.calls.append(call)
        queue.live += 1
        if queue.wakeup is None and not queue.firing:
            queue.wakeup = self._clock.callLater(delay, queue.fire)
        return call

    def pending(self) -> int:
        """The calls pending, in every queue."""
        return sum(queue.live for queue in self._queues.values())


#: A queue drops its cancelled calls when they are more than this many beyond three times its pending ones.
SLACK = 64
#: Queues with no call pending kept for their lengths' next calls (a connection's timeouts take a few lengths).
KEPT_QUEUES = 8


class _Queue:
    """One length's calls, in the order they come due; ``live`` of them pending."""

    __slots__ = ("_timer", "_delay", "calls", "live", "wakeup", "firing")

    def __init__(self, timer: QueuedTimer, delay: float) -> None:
        self._timer = timer
        self._delay = delay
        self.calls: deque[QueuedCall] = deque()
        self.live = 0
        self.wakeup: IDelayedCall | None = None  # the reactor call for its first call (QueuedTimer.callLater arms it)
        self.firing = False

    def settle(self) -> None:
        """A call was cancelled, leaving none pending or more cancelled than :data:`SLACK` allows."""
        if not self.live:
            self._drop()
        else:
            self.calls = deque(call for call in self.calls if call.pending)  # the reactor call may now come early

    def _drop(self) -> None:
        """No call is pending: no reactor call; the queue itself is kept for the next call of its length, unless
        the timer keeps :data:`KEPT_QUEUES` already (a Deadline re-armed for what remained of it asks for a length
        of its own)."""
        if self.wakeup is not None:
            self.wakeup.cancel()
            self.wakeup = None
        self.calls.clear()
        queues = self._timer._queues
        if len(queues) > KEPT_QUEUES and queues.get(self._delay) is self:
            del queues[self._delay]

    def fire(self) -> None:
        """Its reactor call: run the calls due, in order, then wait for the next."""
        self.wakeup = None
        timer = self._timer
        now = timer.seconds()
        calls = self.calls
        self.firing = True
        try:
            for _ in range(len(calls)):  # those queued now: one queued meanwhile waits for the next reactor call
                call = calls[0]
                if call.pending:
                    if call.at > now:
                        break
                    call.pending = False
                    self.live -= 1
                    try:
                        call.run()
                    except Exception:  # noqa: BLE001 - as the reactor logs a failing call, and goes on
                        _log.failure("a timeout failed")
                calls.popleft()
        finally:
            self.firing = False
        if not self.live:
            self._drop()
            return
        while not calls[0].pending:
            calls.popleft()
        self.wakeup = timer._clock.callLater(max(0.0, calls[0].at - now), self.fire)


class QueuedCall:
    """A call of a :class:`QueuedTimer`, pending until it runs or is cancelled."""

    __slots__ = ("_queue", "at", "_func", "pending")

    def __init__(self, queue: _Queue, at: float, func: Callable[[], object]) -> None:
        self._queue = queue
        self.at = at
        self._func: Callable[[], object] = func
        self.pending = True

    def getTime(self) -> float:
        return self.at

    def active(self) -> bool:
        return self.pending

    def cancel(self) -> None:
        if self.pending:
            self.pending = False
            self._func = _nothing  # what it would have called may go now, while it waits in its queue
            queue = self._queue
            queue.live -= 1
            if not queue.firing and (not queue.live or len(queue.calls) > 3 * queue.live + SLACK):
                queue.settle()

    def run(self) -> None:
        func, self._func = self._func, _nothing
        func()
