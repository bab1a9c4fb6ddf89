"""Stick tables and learned sids shared with other proxies (``sharing``): their new entries are published, and
entries made elsewhere applied. Without a transport none of this is built: backends keep plain
:class:`MemoryStickStore` instances."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..sharing import Change, Kind, StateTransport
from ._sticky import ExpiringStore, IStickStore, MemoryStickStore

#: A key looked up is not looked up again for this long (a forged sid costs one question, not one per request);
#: at most this many are remembered.
ASKED_FOR, ASKED_KEYS = 10.0, 10_000


@dataclass(frozen=True, slots=True)
class ShareAs:
    """How a store's entries are shared: through which transport, as which kind, for which backend."""

    transport: StateTransport
    kind: Kind
    backend: str


@implementer(IStickStore)
class SharedStickStore:
    """A stick table's (or learned sids') store whose changes are published: a new entry, one naming another
    server, and an entry in use again once half its life has passed since it was last published (so the others'
    copies, which expire on their own, live on while it is used). Anything else stays local: a request that
    finds its entry costs no message. Entries made elsewhere come in through :meth:`apply`."""

    def __init__(self, clock: IReactorTime, expire: float, size: int, share: ShareAs) -> None:
        self._asked: ExpiringStore[bool] = ExpiringStore(clock, ASKED_FOR, ASKED_KEYS)  # keys looked up lately
        self._clock = clock
        self._expire = expire
        self._kind = share.kind
        self._backend = share.backend
        self._transport = share.transport
        self._local: ExpiringStore[tuple[str, float]] = ExpiringStore(clock, expire, size)  # (server, published at)

    def get(self, key: bytes) -> str | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        if self._clock.seconds() - entry[1] > self._expire / 2:
            self._publish(key, entry[0])
        return entry[0]

    def put(self, key: bytes, server: str) -> None:
        entry = self._local.get(key)
        if entry is not None and entry[0] == server and self._clock.seconds() - entry[1] <= self._expire / 2:
            return  # known, and published recently: the get above refreshed it
        self._publish(key, server)

    def _publish(self, key: bytes, server: str) -> None:
        now = self._clock.seconds()
        self._local.put(key, (server, now))
        self._transport.publish(Change(self._kind, self._backend, key, server, expire=self._expire, at=now))

    def apply(self, change: Change, only_new: bool = False) -> None:
        """An entry made elsewhere: kept, unless this store holds one for another server published later (the
        later of two proxies' choices wins everywhere), or ``only_new`` and this store has the key."""
        entry = self._local.get(change.key)
        if entry is not None and (only_new or (entry[0] != change.value and entry[1] > change.at)):
            return
        self._local.put(change.key, (change.value, change.at))

    def entry(self, key: bytes) -> Change | None:
        """The entry held here for ``key`` (made here or elsewhere), as a change: for another proxy that asks."""
        entry = self._local.get(key)
        if entry is None:
            return None
        return Change(self._kind, self._backend, key, entry[0], expire=self._expire, at=entry[1])

    def lookup(self, key: bytes, done: Callable[[], None]) -> bool:
        """Ask the others for ``key``, unknown here (once per key in :data:`ASKED_FOR`): ``done()`` once answered,
        the entry kept if there is one. False if not asked (then ``done`` is never called)."""
        if self._asked.get(key) is not None:
            return False
        self._asked.put(key, True)

        def answered(change: Change | None) -> None:
            if change is not None:
                self.apply(change)
            done()

        return self._transport.lookup(self._kind, self._backend, key, answered)

    def items(self, limit: int) -> list[tuple[bytes, str, float]]:
        return [(key, entry[0], left) for key, entry, left in self._local.items(limit)]

    def __len__(self) -> int:
        return len(self._local)


def stick_store(clock: IReactorTime, expire: float, size: int, share: ShareAs | None) -> IStickStore:
    """A store for a backend's stick table or learned sids: shared as ``share`` says, if it says."""
    if share is None:
        return MemoryStickStore(clock, expire, size)
    return SharedStickStore(clock, expire, size, share)
