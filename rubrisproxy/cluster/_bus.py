"""Shared state between one machine's worker processes, over the supervisor's channel: a ``sharing.StateTransport``
on a ``bus.Bus``."""

from __future__ import annotations

from collections.abc import Callable

from ..bus import Bus
from ..sharing import Change, Kind, StateReceiver
from ._redis import decode_change, encode_change

#: The bus topic the changes go on.
TOPIC = "state"


class BusTransport:
    """Changes carried to the other workers by the supervisor, which hands each to every worker but its sender.
    An admin state is not sent: the supervisor hands every admin call to every worker already. Nothing is asked
    (``lookup``): a sibling's push over a local socket arrives before its client can come back."""

    def __init__(self, bus: Bus, node: str) -> None:
        self.node = node
        self._bus = bus
        self._receiver: StateReceiver | None = None
        self._running = False
        self._subscribed = False
        self.published = self.received = 0

    def attach(self, receiver: StateReceiver) -> None:
        self._receiver = receiver

    def publish(self, change: Change) -> None:
        if change.kind is not Kind.SERVER and self._running:
            self._bus.publish(TOPIC, encode_change(self.node, change))
            self.published += 1

    def lookup(self, kind: Kind, backend: str, key: bytes, answer: Callable[[Change | None], None]) -> bool:
        return False

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
        self._receiver.apply(decoded[1])
