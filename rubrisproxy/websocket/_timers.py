"""Timers batched on the proxy's clock: Autobahn's protocol timers, and WebSockets' idle deadlines."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer


@implementer(IReactorTime)
class BucketTimer:
    """Timers batched into buckets of ``bucket`` seconds, as txaio's batched timer does them.

    Autobahn arms several timers per connection (handshakes, pings), and every WebSocket has an idle deadline;
    batching keeps one reactor call per bucket however many connections there are (a reactor call is some
    500 bytes, and a cancelled one stays in the reactor's queue until half of it is cancelled). Unlike txaio's,
    a bucket whose calls were all cancelled releases its reactor call at once, so a closed connection leaves
    nothing scheduled, and the clock is the proxy's own. A call runs at most ``bucket`` after its time, never
    before. As an ``IReactorTime`` it can be a :class:`~rubrisproxy.deadline.Deadline`'s clock.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, bucket: float = 0.2) -> None:
        self._clock = clock
        self._bucket = bucket
        self._buckets: dict[int, _Bucket] = {}
        self._firing: int | None = None  # the bucket whose calls are running
        self.seconds = clock.seconds  # read per message by a Deadline on this timer: the clock's own, no wrapper

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> BucketCall:
        call = BucketCall(self, 0, func, args, kwargs or None)
        self._add(call, delay)
        return call

    def callLater(self, delay: float, callable: Callable[..., Any], *args: object, **kwargs: object) -> IDelayedCall:
        return self.call_later(delay, callable, *args, **kwargs)

    def getDelayedCalls(self) -> list[IDelayedCall]:
        return [call for key, bucket in self._buckets.items() for call in bucket.calls if call.pending_in(key)]

    def pending(self) -> int:
        return sum(bucket.live for bucket in self._buckets.values())

    def _add(self, call: BucketCall, delay: float) -> None:
        now = self._clock.seconds()
        key = math.ceil((now + delay) / self._bucket)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._clock.callLater(max(0.0, key * self._bucket - now),
                                                                      self._fire, key))
        call.key = key
        call.pending = True
        bucket.calls.append(call)
        bucket.live += 1

    def _cancel(self, call: BucketCall) -> None:
        if not call.pending:
            return
        call.pending = False  # its entry stays in its bucket's list, skipped, until the bucket goes
        bucket = self._buckets[call.key]
        bucket.live -= 1
        if not bucket.live and call.key != self._firing:
            del self._buckets[call.key]
            bucket.reactor_call.cancel()

    def _fire(self, key: int) -> None:
        # The bucket stays in place while its calls run, so one that cancels another of them (a session's idle
        # deadline, its legs' pings) is heeded; one added to it (due already) runs too.
        self._firing = key
        bucket = self._buckets[key]
        calls = bucket.calls
        try:
            index = 0
            while index < len(calls):
                call = calls[index]
                index += 1
                if call.pending_in(key):
                    call.pending = False
                    bucket.live -= 1
                    try:
                        call.run()
                    except Exception:  # noqa: BLE001 - one leg's failure must not stop the other legs' timers
                        self.log.failure("a WebSocket timer failed")
        finally:
            self._firing = None
            del self._buckets[key]


class _Bucket:
    """The calls due in one bucket, in a list (8 bytes each, where a dict would take some 50): a cancelled one
    stays in it, no longer pending, until the bucket fires or its last pending call is cancelled."""

    __slots__ = ("reactor_call", "calls", "live")

    def __init__(self, reactor_call: IDelayedCall) -> None:
        self.reactor_call = reactor_call
        self.calls: list[BucketCall] = []
        self.live = 0  # its calls still pending


@implementer(IDelayedCall)
class BucketCall:
    """One call of a :class:`BucketTimer`: pending in the bucket ``key`` names until it runs or is cancelled."""

    __slots__ = ("_timer", "key", "pending", "_func", "_args", "_kwargs")

    def __init__(self, timer: BucketTimer, key: int, func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None) -> None:
        self._timer = timer
        self.key = key
        self.pending = False
        self._func = func
        self._args = args
        self._kwargs = kwargs  # None: none (an empty dict per call would cost 64 bytes)

    def pending_in(self, key: int) -> bool:
        """Whether it is pending in the bucket ``key`` (a call reset to another bucket is listed in both)."""
        return self.pending and self.key == key

    def getTime(self) -> float:
        return self.key * self._timer._bucket

    def cancel(self) -> None:
        self._timer._cancel(self)

    def delay(self, secondsLater: float) -> None:
        self.reset(self.getTime() - self._timer.seconds() + secondsLater)

    def reset(self, secondsFromNow: float) -> None:
        """Run ``secondsFromNow`` from now (in that time's bucket) instead."""
        self._timer._cancel(self)
        self._timer._add(self, secondsFromNow)

    def active(self) -> bool:
        return self.pending

    def run(self) -> None:
        if self._kwargs is None:
            self._func(*self._args)
        else:
            self._func(*self._args, **self._kwargs)
