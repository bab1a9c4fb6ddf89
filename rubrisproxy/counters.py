"""Counters that live on the objects they count, read alike by logs, the admin API and metrics."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

#: Bucket upper bounds in seconds, for request, connect and resume durations.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and their number."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last counts what is above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) pairs, ending with ``+Inf``, as Prometheus reads them."""
        pairs, running = [], 0
        for bound, observed in zip(self.bounds, self.counts[:-1], strict=True):
            running += observed
            pairs.append((repr(bound), running))
        pairs.append(("+Inf", running + self.counts[-1]))
        return pairs


def count(counts: dict[K, int], key: K) -> None:
    """Add one to ``counts[key]``."""
    counts[key] = counts.get(key, 0) + 1


_STATUS_CLASSES = tuple(f"{first}xx" for first in range(10))


def status_class(status: int) -> str:
    """``"2xx"`` for 200 and the like: how metrics and the stats page group statuses."""
    first = status // 100
    return _STATUS_CLASSES[first] if 0 <= first < 10 else f"{first}xx"
