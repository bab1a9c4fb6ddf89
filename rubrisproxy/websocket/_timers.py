"""Autobahn's protocol timers, on the proxy's clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class BucketTimer:
    """Timers batched into buckets of ``bucket`` seconds, as txaio's batched timer does them.

    Autobahn arms several timers per connection (handshakes, pings); batching keeps
    one reactor call per bucket however many connections there are. Unlike txaio's,
    a bucket whose calls were all cancelled releases its reactor call at once, so a
    closed connection leaves nothing scheduled, and the clock is the proxy's own.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, bucket: float = 0.2) -> None:
        self._clock = clock
        self._bucket = bucket
        self._buckets: dict[int, tuple[IDelayedCall, dict[BucketCall, None]]] = {}

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> BucketCall:
        now = self._clock.seconds()
        key = math.ceil((now + delay) / self._bucket)
        entry = self._buckets.get(key)
        if entry is None:
            entry = (self._clock.callLater(max(0.0, key * self._bucket - now), self._fire, key), {})
            self._buckets[key] = entry
        call = BucketCall(self, key, func, args, kwargs)
        entry[1][call] = None
        return call

    def pending(self) -> int:
        return sum(len(calls) for _, calls in self._buckets.values())

    def _cancel(self, call: BucketCall) -> None:
        entry = self._buckets.get(call.key)
        if entry is None or call not in entry[1]:
            return
        del entry[1][call]
        if not entry[1]:
            del self._buckets[call.key]
            entry[0].cancel()

    def _fire(self, key: int) -> None:
        _, calls = self._buckets.pop(key)
        for call in calls:
            try:
                call.run()
            except Exception:  # noqa: BLE001 - one leg's failure must not stop the other legs' timers
                self.log.failure("a WebSocket timer failed")


class BucketCall:
    """One pending call of a :class:`BucketTimer`."""

    __slots__ = ("_timer", "key", "_func", "_args", "_kwargs")

    def __init__(self, timer: BucketTimer, key: int, func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self._timer = timer
        self.key = key
        self._func = func
        self._args = args
        self._kwargs = kwargs

    def cancel(self) -> None:
        self._timer._cancel(self)

    def run(self) -> None:
        self._func(*self._args, **self._kwargs)
