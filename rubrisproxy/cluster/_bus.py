"""Shared state between one machine's worker processes, over the supervisor's channel: a ``sharing.StateTransport``
on a ``bus.Bus``."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from ..budget import Budget
from ..bus import Bus
from ..sharing import Change, Kind, StateReceiver
from ._guard import guarded
from ._redis import decode_change, encode_change

#: The bus topic the changes go on, and the questions about entries.
TOPIC = "state"
#: How long a lookup waits for the other workers' answers (they come in a millisecond or two; a worker that does
#: not answer is found unresponsive by the supervisor), how many are in flight at most, and how many are asked in
#: a second at most: a client making up sids must not keep the supervisor busy relaying questions (a real client
#: beats the push only now and then; past the budget its request is balanced as before).
ASK_WAIT, MAX_ASKS, ASKS_PER_SECOND = 1.0, 64, 200
#: The longest question asked: a key longer than this is not looked up (a channel value holds 64 KiB).
MAX_QUESTION = 16 * 1024


class BusTransport:
    """Changes carried to the other workers by the supervisor, which hands each to every worker but its sender.
    An admin state is not sent: the supervisor hands every admin call to every worker already.

    A request may carry an Engine.IO sid a sibling learned an instant ago: the sibling answered the handshake
    and its client came back, on another connection that this worker accepted, before the sibling's push went
    through the supervisor. Such a request is held while :meth:`lookup` asks the siblings, who answer from what
    they hold; the sibling that learned the entry holds it before its client can see it, so the answer is sure."""

    def __init__(self, bus: Bus, node: str, clock: IReactorTime) -> None:
        self.node = node
        self._bus = bus
        self._clock = clock
        self._receiver: StateReceiver | None = None
        self._running = False
        self._subscribed = False
        self._asking = 0  # lookups in flight
        self._budget = Budget(clock, ASKS_PER_SECOND, 1.0)
        self.published = self.received = self.lookups = 0

    def attach(self, receiver: StateReceiver) -> None:
        self._receiver = receiver

    def publish(self, change: Change) -> None:
        if change.kind is not Kind.SERVER and self._running:
            self._bus.publish(TOPIC, encode_change(self.node, change))
            self.published += 1

    def lookup(self, kind: Kind, backend: str, key: bytes, answer: Callable[[Change | None], None]) -> bool:
        if kind is Kind.SERVER or kind is Kind.CLIENT or not self._running or self._asking >= MAX_ASKS:
            return False
        question = encode_change(self.node, Change(kind, backend, key, ""))
        if len(question) > MAX_QUESTION or not self._budget.spend():
            return False
        self._asking += 1
        self.lookups += 1

        def answered(answers: list[bytes]) -> None:
            self._asking -= 1
            answer(_latest(answers, kind, backend, key))

        self._bus.ask(TOPIC, question, guarded(self._clock, ASK_WAIT, answered, []))
        return True

    def start(self) -> None:
        self._running = True
        if not self._subscribed:
            self._subscribed = True
            self._bus.subscribe(TOPIC, self._delivered)
            self._bus.respond(TOPIC, self._asked)

    def stop(self) -> None:
        self._running = False

    def _delivered(self, payload: bytes, sender: int) -> None:
        decoded = decode_change(payload)
        if decoded is None or decoded[0] == self.node or self._receiver is None or not self._running:
            return
        self.received += 1
        self._receiver.apply(decoded[1])

    def _asked(self, question: bytes, sender: int) -> bytes:
        """A sibling's lookup: the entry held here, if any."""
        decoded = decode_change(question)
        if decoded is None or self._receiver is None or not self._running:
            return b""
        asked = decoded[1]
        held = self._receiver.entry(asked.kind, asked.backend, asked.key)  # None but for a STICK or SID entry
        return encode_change(self.node, held) if held is not None else b""


def _latest(answers: list[bytes], kind: Kind, backend: str, key: bytes) -> Change | None:
    """Of the siblings' answers, the entry for ``key`` made last (None if none holds one)."""
    found = None
    for answer in answers:
        decoded = decode_change(answer)
        if decoded is None:
            continue
        change = decoded[1]
        if (change.kind, change.backend, change.key) == (kind, backend, key) and (found is None or change.at > found.at):
            found = change
    return found
