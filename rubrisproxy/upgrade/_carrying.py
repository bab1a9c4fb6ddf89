"""The old process's end of the hand-over channel: its AMP protocol, and the carrier connections move through."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from ..transfer import Carried, Kind, Outcome
from ._channel import VERSION, Adopt, AdoptRefused, Failed, Hello, Serving, TakeListener, VersionMismatch
from ._tally import Tally

if TYPE_CHECKING:
    from ._old import Upgrader


class OldSide(amp.AMP):
    """The channel as the old process answers it: the new process's greeting, its requests for the
    listening sockets, its word that it serves (or that it failed)."""

    def __init__(self, upgrader: Upgrader) -> None:
        super().__init__()
        self.upgrader = upgrader

    @Hello.responder
    def hello(self, version: int, pid: int, reads: str) -> dict[str, Any]:
        if version != VERSION:
            raise VersionMismatch(f"the new process speaks hand-over version {version}, this one {VERSION}")
        listeners = self.upgrader.greeted(self, pid, json.loads(reads))
        return {"listeners": json.dumps(listeners)}

    @TakeListener.responder
    def take_listener(self, key: str, endpoint: str) -> dict[str, Any]:
        fd, family = self.upgrader.listener(key, endpoint)
        return {"fd": fd, "family": family}

    @Serving.responder
    def serving(self) -> dict[str, Any]:
        self.upgrader.serving()
        return {}

    @Failed.responder
    def failed(self, why: str) -> dict[str, Any]:
        self.upgrader.fail(f"the new process could not take over: {why}")
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.upgrader.channel_lost(self)


class ChannelCarrier:
    """A :class:`~rubrisproxy.transfer.Carrier` over the channel: each connection sent as an :class:`Adopt`,
    its outcome counted in the upgrade's tally and in the batch being logged."""

    log = Logger()

    def __init__(self, channel: amp.AMP, tally: Tally) -> None:
        self.channel: amp.AMP | None = channel
        self.tally = tally
        self.batch = Tally()
        self.pending: set[Deferred[bool]] = set()

    def carry(self, carried: Carried) -> Deferred[bool]:
        channel = self.channel
        if channel is None:
            self.keep(carried.kind, "channel closed")
            return succeed(False)
        arguments: dict[str, Any] = {
            "kind": carried.kind.value, "version": carried.version, "frontend": carried.frontend,
            "record": json.dumps(carried.record).encode(), "client": carried.sockets[0],
        }
        if len(carried.sockets) > 1:
            arguments["server"] = carried.sockets[1]
        sent = channel.callRemote(Adopt, **arguments)
        done: Deferred[bool] = sent.addCallbacks(self._moved, self._refused, callbackArgs=(carried.kind,),
                                                  errbackArgs=(carried.kind,))
        self.pending.add(done)
        done.addBoth(self._settled, done)
        return done

    def _moved(self, answer: object, kind: Kind) -> bool:
        self._count(kind, Outcome.MOVED)
        return True

    def _refused(self, failure: Failure, kind: Kind) -> bool:
        why = f"refused: {failure.getErrorMessage()}" if failure.check(AdoptRefused) else "channel closed"
        self._count(kind, Outcome.KEPT, why)  # the batch's line says why, once per reason
        return False

    def _settled(self, result: bool, done: Deferred[bool]) -> bool:
        self.pending.discard(done)
        return result

    def keep(self, kind: Kind, why: str) -> None:
        self._count(kind, Outcome.KEPT, why)

    def _count(self, kind: Kind, outcome: Outcome, why: str = "") -> None:
        self.tally.add(kind, outcome, why)
        self.batch.add(kind, outcome, why)

    def log_batch(self) -> None:
        """Log what became of the connections since the last line, if any did."""
        if self.batch:
            self.log.info("upgrade: {line}", line=self.batch.line())
            self.batch = Tally()
