"""Rate limits over a sliding window, per key, in a table of bounded size whose entries expire.

The window is HAProxy's (``sc_http_req_rate``): the count of the current period plus the
previous period's weighted by how much of it the sliding window still covers. Only what a
limit admits is counted, so a client that keeps within its limit is never refused and one
that keeps knocking is admitted again once its admitted requests age out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from hashlib import blake2b

from twisted.internet.interfaces import IReactorTime

#: Keys longer than this (bytes a client sent) are held as a 17-byte digest.
MAX_KEY = 64


class Entry:
    """One key's counts: requests and new WebSockets in the current and the previous period, requests in
    flight, connections open, and when it was last seen."""

    __slots__ = ("period_index", "requests", "requests_before", "websockets", "websockets_before", "active",
                 "connections", "seen")

    def __init__(self, period_index: int, now: float) -> None:
        self.period_index = period_index
        self.requests = self.requests_before = 0
        self.websockets = self.websockets_before = 0
        self.active = 0
        self.connections = 0
        self.seen = now


def _wait(before: int, current: int, limit: int, into: float, period: float) -> float:
    """Seconds until one more event fits under ``limit``, ``into`` seconds into a period that counted ``current``
    after one that counted ``before``."""
    room = limit - 1
    if current > room:  # the next period must age this one's count out
        return period - into + period * (1 - room / current)
    if before == 0:
        return 0.0
    return max(0.0, period * (1 - (room - current) / before) - into)


class LimiterTable:
    """The counts of up to ``size`` keys over a sliding window of ``period`` seconds (``clock``: the reactor's).

    The least recently seen key is forgotten when a new one needs room (``evicted``), and a key
    idle for two periods with nothing in flight is forgotten as the table is used (``expired``):
    its counts are all zero by then. A key forgotten with requests in flight no longer counts them.
    """

    def __init__(self, clock: IReactorTime, period: float, size: int) -> None:
        self.clock = clock
        self.period = period
        self.size = size
        self._entries: OrderedDict[str | bytes, Entry] = OrderedDict()
        self.evicted = 0
        self.expired = 0
        self.limited = 0  # events refused, by the rule that reads it (kept with the table across reloads)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, key: str | bytes) -> tuple[Entry, float]:
        """``key``'s entry, its counts moved to the present period, and how far into that period it is."""
        if len(key) > MAX_KEY and isinstance(key, bytes):
            # What a client chose (a header, a sid) is held as a digest past MAX_KEY: the table's memory is
            # bounded by its size, not by what clients send. NUL starts no header value or sid.
            key = b"\0" + blake2b(key, digest_size=16).digest()
        now = self.clock.seconds()
        period = self.period
        index = int(now // period)
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = entries[key] = Entry(index, now)
        else:
            entries.move_to_end(key)
            entry.seen = now
            gap = index - entry.period_index
            if gap:
                entry.period_index = index
                if gap == 1:
                    entry.requests_before, entry.websockets_before = entry.requests, entry.websockets
                else:
                    entry.requests_before = entry.websockets_before = 0
                entry.requests = entry.websockets = 0
        return entry, now - index * period

    def _make_room(self, now: float) -> None:
        entries = self._entries
        stale = now - 2 * self.period
        for _ in range(len(entries)):
            key, oldest = next(iter(entries.items()))
            if oldest.seen > stale:
                break
            if oldest.active or oldest.connections:  # idle, but held by a request or a connection: behind the others
                entries.move_to_end(key)
                continue
            entries.popitem(last=False)
            self.expired += 1
        while len(entries) >= self.size:
            entries.popitem(last=False)
            self.evicted += 1

    def request_wait(self, entry: Entry, into: float, limit: int) -> float:
        """0 if one more request fits in ``entry``'s window under ``limit`` (and count it), else the seconds to wait."""
        wait = self._window_wait(entry.requests_before, entry.requests, into, limit)
        if not wait:
            entry.requests += 1
        return wait

    def websocket_wait(self, entry: Entry, into: float, limit: int) -> float:
        """As :meth:`request_wait`, for new WebSockets."""
        wait = self._window_wait(entry.websockets_before, entry.websockets, into, limit)
        if not wait:
            entry.websockets += 1
        return wait

    def _window_wait(self, before: int, current: int, into: float, limit: int) -> float:
        """0 if one more fits in the sliding window of counts ``before`` and ``current``, else the seconds to wait."""
        if before * (1 - into / self.period) + current + 1 <= limit:
            return 0.0
        return max(_wait(before, current, limit, into, self.period), 0.001)


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))
