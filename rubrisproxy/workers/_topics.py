"""Topics between the processes: what a worker publishes, carried by the supervisor to the other workers and to
its own subscribers, the retained payloads kept for workers that start later; what a worker asks, put to the
other workers and their answers gathered."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from ..bus import Subscriber
from ._channel import Deliver, Query
from ._handle import HandleState, WorkerHandle

#: The states of a worker that takes deliveries: a starting one gets them after its Start (the channel is ordered).
_LISTENING = (HandleState.STARTING, HandleState.SERVING)


class Topics:
    """The supervisor's side of every worker's topics."""

    def __init__(self, handles: list[WorkerHandle]) -> None:
        self.handles = handles
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._retained: dict[tuple[str, str], tuple[bytes, int]] = {}

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with each payload published on ``topic``."""
        self._subscribers.setdefault(topic, []).append(subscriber)

    def published(self, sender: int, topic: str, payload: bytes, retain: str) -> None:
        """Fan ``payload`` out to every listening worker but ``sender`` (-1: the supervisor), then to the
        supervisor's subscribers; kept per (topic, ``retain``) if given."""
        if retain:
            self._retained[(topic, retain)] = (payload, sender)
        for handle in self.handles:
            if handle.index != sender and handle.channel is not None and handle.state in _LISTENING:
                handle.channel.callRemote(Deliver, topic=topic, payload=payload, sender=sender)
        for subscriber in self._subscribers.get(topic, ()):
            subscriber(payload, sender)

    def asked(self, sender: int, topic: str, question: bytes) -> defer.Deferred[list[bytes]]:
        """Put ``question`` to every listening worker but ``sender``: their non-empty answers, once each has
        answered or failed to (gone, or unresponsive past the supervisor's timeout)."""
        calls = [handle.call(Query, topic=topic, question=question, sender=sender) for handle in self.handles
                 if handle.index != sender and handle.channel is not None and handle.state in _LISTENING]
        gathered = defer.DeferredList(calls, consumeErrors=True)
        return gathered.addCallback(_answers)

    def catch_up(self, handle: WorkerHandle) -> None:
        """Give a worker that just started what was retained (but what it published itself)."""
        for (topic, _), (payload, sender) in list(self._retained.items()):
            if handle.channel is not None and sender != handle.index:
                handle.channel.callRemote(Deliver, topic=topic, payload=payload, sender=sender)


def _answers(results: list[tuple[bool, Any]]) -> list[bytes]:
    return [result["answer"] for ok, result in results if ok and result["answer"]]
