"""Whether the workers answer: the supervisor's heartbeat (a :class:`Ping` to every serving worker, each to be
answered within ``process.worker-timeout``), and the answers of the workers that did answer a call made of all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, error, task
from twisted.python.failure import Failure

from ._channel import Ping, Unresponsive
from ._handle import WorkerHandle

#: The most seconds between two pings of a worker (less with a timeout under two of them: twice within it).
PING_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Answers:
    """What the workers asked answered, in their order, and the workers that did not (unresponsive, or ended
    meanwhile)."""

    answered: tuple[tuple[WorkerHandle, dict[str, Any]], ...]
    unanswered: tuple[WorkerHandle, ...]

    @property
    def values(self) -> list[dict[str, Any]]:
        return [answer for _, answer in self.answered]


def gather(asked: list[WorkerHandle], calls: list[defer.Deferred[Any]]) -> defer.Deferred[Answers]:
    """The :class:`Answers` to ``calls`` (one per worker ``asked``), once each is answered or given up; a call
    that failed otherwise than by its worker not answering fails the whole."""

    def collect(results: list[tuple[bool, Any]]) -> Answers | Failure:
        answered, unanswered = [], []
        for handle, (ok, value) in zip(asked, results, strict=True):
            if ok:
                answered.append((handle, value))
            elif value.check(Unresponsive, error.ConnectionClosed):
                unanswered.append(handle)
            else:
                return value
        return Answers(tuple(answered), tuple(unanswered))

    return defer.DeferredList(calls, consumeErrors=True).addCallback(collect)


class Heartbeat:
    """Pings each serving worker every :data:`PING_INTERVAL` (a new ping once the last is answered): one left
    unanswered past ``timeout`` makes its worker unresponsive (:meth:`WorkerHandle.call`)."""

    def __init__(self, clock: Any, handles: list[WorkerHandle], timeout: float) -> None:
        self.handles = handles
        self.interval = min(PING_INTERVAL, timeout / 2)
        self._loop = task.LoopingCall(self._beat)
        self._loop.clock = clock
        self._waiting: set[WorkerHandle] = set()  # pinged, not answered yet

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _beat(self) -> None:
        for handle in self.handles:
            if handle.serving and handle not in self._waiting:
                self._waiting.add(handle)
                handle.call(Ping).addBoth(self._answered, handle)

    def _answered(self, result: object, handle: WorkerHandle) -> None:
        self._waiting.discard(handle)  # a failure is the handle's to act on (unresponsive), or its end's
