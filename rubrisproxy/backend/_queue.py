"""A backend's queue: requests waiting for a server slot, oldest first."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall

from ..http import RequestHead
from ._server import Server


class Waiter(Protocol):
    """What waits in a backend's queue: an exchange, seen from the backend."""

    head: RequestHead

    @property
    def finished(self) -> bool: ...

    def client_address_for_balancing(self) -> str: ...

    def dequeued(self, server: Server) -> None: ...

    def queue_timed_out(self) -> None: ...

    def looked_up(self) -> None: ...


class Queued:
    """One waiting request: ``server`` is the one its persistence names (it waits for that one alone)."""

    __slots__ = ("waiter", "timer", "exclude", "server", "order")

    def __init__(self, waiter: Waiter, timer: IDelayedCall, exclude: frozenset[Server], server: Server | None,
                 order: int) -> None:
        self.waiter = waiter
        self.timer = timer
        self.exclude = exclude
        self.server = server
        self.order = order

    def discard(self) -> None:
        if self.timer.active():
            self.timer.cancel()


class WaitQueue:
    """Requests free to go to any server wait in one line; those persistence pins to a server wait in
    that server's own line. A slot freeing so looks only at the requests that could take it, and the
    oldest of those goes first."""

    def __init__(self) -> None:
        self._anywhere: deque[Queued] = deque()
        self._pinned: dict[Server, deque[Queued]] = {}
        self._added = 0
        self._excluding = 0  # requests in the common line that avoid some servers (retries)

    def __bool__(self) -> bool:
        return bool(self._anywhere or self._pinned)

    def __len__(self) -> int:
        return sum(1 for entry in self._entries() if not entry.waiter.finished)

    def _entries(self) -> Iterable[Queued]:
        yield from self._anywhere
        for line in self._pinned.values():
            yield from line

    def add(self, waiter: Waiter, timer: IDelayedCall, exclude: frozenset[Server], server: Server | None) -> None:
        self._added += 1
        entry = Queued(waiter, timer, exclude, server, self._added)
        if server is None:
            self._anywhere.append(entry)
            self._excluding += bool(exclude)
        else:
            self._pinned.setdefault(server, deque()).append(entry)

    def remove(self, waiter: Waiter) -> None:
        """Take ``waiter`` out (its wait timed out)."""
        for entry in self._anywhere:
            if entry.waiter is waiter:
                self._take_out(entry, self._anywhere)
                return
        for line in self._pinned.values():
            for entry in line:
                if entry.waiter is waiter:
                    self._take_out(entry, line)
                    return

    def unpin(self, takes_requests: Callable[[Server], bool]) -> None:
        """Requests pinned to a server that no longer takes requests join the common line, in order."""
        gone = [server for server in self._pinned if not takes_requests(server)]
        if not gone:
            return
        moved = [entry for server in gone for entry in self._pinned.pop(server)]
        for entry in moved:
            entry.server = None
            self._excluding += bool(entry.exclude)
        self._anywhere = deque(sorted([*self._anywhere, *moved], key=lambda entry: entry.order))

    def _worth_asking(self) -> Iterator[Queued]:
        """The common line's waiting requests, oldest first, for a question about free servers; stop at the
        first yes. Once one request free to go anywhere has said no, every other such request would too."""
        plain_asked = False
        for entry in self._anywhere:
            if entry.waiter.finished or (plain_asked and not entry.exclude):
                continue
            yield entry
            plain_asked = plain_asked or not entry.exclude
            if plain_asked and not self._excluding:
                return

    def blocks(self, free: list[Server], usable: Callable[[frozenset[Server]], list[Server]]) -> bool:
        """Whether a request in the common line could take one of the ``free`` servers (a newcomer waits behind it)."""
        return any(any(server in usable(entry.exclude) for server in free) for entry in self._worth_asking())

    def next(self, free_for: Callable[[Queued], list[Server]]) -> tuple[Queued, list[Server]] | None:
        """The oldest request a free slot can take now, out of the queue, with the servers it may go to."""
        best: Any = None
        for server, line in list(self._pinned.items()):
            self._drop_finished(line)  # an emptied line leaves the table
            if line and not server.full and (best is None or line[0].order < best[0].order):
                best = (line[0], [server], line)
        self._drop_finished(self._anywhere)
        for entry in self._worth_asking():
            if best is not None and entry.order > best[0].order:
                break
            free = free_for(entry)
            if free:
                best = (entry, free, self._anywhere)
                break
        if best is None:
            return None
        entry, free, line = best
        self._take_out(entry, line)
        return entry, free

    def _drop_finished(self, line: deque[Queued]) -> None:
        while line and line[0].waiter.finished:
            self._take_out(line[0], line)

    def _take_out(self, entry: Queued, line: deque[Queued]) -> None:
        if line and line[0] is entry:
            line.popleft()
        else:
            line.remove(entry)
        entry.discard()
        if line is self._anywhere:
            self._excluding -= bool(entry.exclude)
        elif not line and entry.server is not None:
            self._pinned.pop(entry.server, None)
