"""Shared state between one machine's worker processes, over the supervisor's channel: a ``sharing.StateTransport``
on a ``bus.Bus``."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from ..bus import Bus
from ..sharing import Change, Kind, StateReceiver
from ._redis import decode_change, encode_change

#: The bus topic the changes go on.
TOPIC = "state"
#: How long a worker holds a request for a sibling's push of an entry it does not know, and how many it holds at once.
PUSH_WAIT, MAX_WAITS = 0.1, 64


class BusTransport:
    """Changes carried to the other workers by the supervisor, which hands each to every worker but its sender.
    An admin state is not sent: the supervisor hands every admin call to every worker already. No one is asked
    (``lookup``): the push of a sid a sibling learned goes through the supervisor, and on a loaded machine the
    client's next request, on another worker, can come first; that request waits for the push (:data:`PUSH_WAIT`)."""

    def __init__(self, bus: Bus, node: str, clock: IReactorTime) -> None:
        self.node = node
        self._bus = bus
        self._clock = clock
        self._receiver: StateReceiver | None = None
        self._running = False
        self._subscribed = False
        self._waits: dict[tuple[Kind, str, bytes], list[Callable[[Change | None], None]]] = {}
        self._waiting = 0
        self.published = self.received = 0

    def attach(self, receiver: StateReceiver) -> None:
        self._receiver = receiver

    def publish(self, change: Change) -> None:
        if change.kind is not Kind.SERVER and self._running:
            self._bus.publish(TOPIC, encode_change(self.node, change))
            self.published += 1

    def lookup(self, kind: Kind, backend: str, key: bytes, answer: Callable[[Change | None], None]) -> bool:
        if kind is Kind.SERVER or kind is Kind.CLIENT or not self._running or self._waiting >= MAX_WAITS:
            return False
        self._waiting += 1
        wait = (kind, backend, key)
        answered = False

        def done(change: Change | None) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            self._waiting -= 1
            if timer.active():
                timer.cancel()
            waiters = self._waits.get(wait)
            if waiters is not None and done in waiters:
                waiters.remove(done)
                if not waiters:
                    del self._waits[wait]
            answer(change)

        self._waits.setdefault(wait, []).append(done)
        timer = self._clock.callLater(PUSH_WAIT, done, None)
        return True

    def start(self) -> None:
        self._running = True
        if not self._subscribed:
            self._subscribed = True
            self._bus.subscribe(TOPIC, self._delivered)

    def stop(self) -> None:
        self._running = False

    def _delivered(self, payload: bytes, sender: int) -> None:
        decoded = decode_change(payload)
        if decoded is None or decoded[0] == self.node or self._receiver is None or not self._running:
            return
        self.received += 1
        change = decoded[1]
        self._receiver.apply(change)
        for done in list(self._waits.get((change.kind, change.backend, change.key), ())):
            done(change)
