"""A live upgrade as the running process drives it (docs/upgrade.md): start the new process, hand it the
listeners, then the connections that can move; serve those that stay; exit when none is left, or at the
deadline."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..frontend import Frontend
from ..listening import ListeningService
from ..transfer import Kind, Movable, Outcome, UpgradeUnderWay
from ..websocket import Tunnel
from ._carrying import ChannelCarrier, OldSide
from ._channel import Report
from ._process import Pidfile, Spawner
from ._tally import Tally, UpgradeState

#: How long the new process has to take the listeners before the upgrade is given up (it is killed).
START_TIMEOUT = 60.0
#: How often the old process looks whether anything is left to serve.
CHECK_EVERY = 0.2


class UpgradeFailed(Exception):
    """The upgrade did not happen: the reason; this process serves on as before."""


class _Factory(ServerFactory):
    noisy = False

    def __init__(self, upgrader: Upgrader) -> None:
        self.upgrader = upgrader

    def buildProtocol(self, addr: object) -> OldSide:
        return OldSide(self.upgrader)


class Upgrader:
    """One process's live upgrades: the one it starts (:meth:`start`, its :class:`UpgradeState`), and what the
    process it replaced reported, if it was started by one (:meth:`took_over`)."""

    log = Logger()

    def __init__(self, reactor: Any, listeners: Callable[[], Sequence[ListeningService]],  # noqa: PLR0913 - what an upgrade touches
                 frontends: Callable[[], Sequence[Frontend]], deadline: Callable[[], float], spawner: Spawner,
                 stop: Callable[[], None], pidfile: Pidfile | None = None) -> None:
        self.reactor = reactor
        self.listeners = listeners
        self.frontends = frontends
        self.deadline = deadline
        self.spawner = spawner
        self.stop = stop
        self.pidfile = pidfile
        self.state = UpgradeState.IDLE
        self.tally = Tally()
        self.new_pid: int | None = None
        self.last_failure: str | None = None
        self.previous: dict[str, Any] | None = None  # the process this one replaced: its pid and counts
        self._channel: OldSide | None = None
        self._carrier: ChannelCarrier | None = None
        self._directory: str | None = None
        self._port: Any = None
        self._answer: Deferred[dict[str, Any]] | None = None
        self._timer: IDelayedCall | None = None
        self._checking: LoopingCall | None = None
        self._exited: str | None = None  # how the new process exited, while its channel is read to its end

    # What the admin API, the signal and metrics ask

    def start(self) -> Deferred[dict[str, Any]]:
        """Start the new process; fires with its pid once it has taken the listeners, fails with
        :class:`UpgradeFailed` (why) if it could not, this process serving on as before."""
        if self.state is not UpgradeState.IDLE:
            return fail(UpgradeUnderWay(f"an upgrade is under way ({self.state.value})"))
        self.state = UpgradeState.STARTING
        self.last_failure = self._exited = None
        self._directory = tempfile.mkdtemp(prefix="rubrisproxy-upgrade-")  # mode 0700
        path = os.path.join(self._directory, "handover.sock")
        self._port = self.reactor.listenUNIX(path, _Factory(self), mode=0o600)
        self._answer = answer = Deferred[dict[str, Any]]()
        if self.pidfile is not None:
            self.pidfile.hide()
        self._timer = self.reactor.callLater(START_TIMEOUT, self.fail,
                                             f"the new process did not take over within {START_TIMEOUT:g}s")
        self.log.info("upgrade: starting a new process (hand-over socket {path})", path=path)
        self.spawner.spawn(path, self._process_ended)
        return answer

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value, "pid": os.getpid(), "new_pid": self.new_pid, "last_failure": self.last_failure,
            "deadline": self.deadline(), "connections": self.tally.as_json(), "previous": self.previous,
        }

    def counts(self) -> Mapping[tuple[Kind, Outcome], int]:
        if self.tally or self.previous is None:
            return self.tally.counts
        return Tally.from_json(self.previous["connections"]).counts

    def took_over(self, pid: int, counts: Mapping[str, Mapping[str, int]]) -> None:
        """This process replaced ``pid``, which reports ``counts`` as it exits."""
        self.previous = {"pid": pid, "connections": dict(counts)}
        self.log.info("upgrade: process {pid} has handed over and exits: {line}", pid=pid,
                      line=Tally.from_json(counts).line())

    # The channel's events

    def greeted(self, channel: OldSide, pid: int, reads: Mapping[str, list[int]]) -> list[list[str]]:
        """The new process (``pid``, reading those record versions) connected: the listeners it may take."""
        self._channel = channel
        self.new_pid = pid
        self.log.info("upgrade: new process {pid} connected; it reads {reads}", pid=pid, reads=json.dumps(reads))
        return [[key, endpoint] for service in self.listeners() for key, endpoint, _, _ in service.handed_over()]

    def listener(self, key: str, endpoint: str) -> tuple[int, int]:
        for service in self.listeners():
            for each_key, each_endpoint, fd, family in service.handed_over():
                if (each_key, each_endpoint) == (key, endpoint):
                    return fd, family
        raise KeyError(f"no listener {key} on {endpoint}")

    def serving(self) -> None:
        """The new process listens: stop accepting, answer, and hand the connections over."""
        if self.state is not UpgradeState.STARTING or self._channel is None:
            return
        self.state = UpgradeState.HANDING_OVER
        self._cancel_timer()
        for service in self.listeners():
            service.release()
        if self.pidfile is not None:
            self.pidfile.hand_over()
        self.log.info("upgrade: process {pid} took the listeners; this one ({me}) accepts no more",
                      pid=self.new_pid, me=os.getpid())
        if self._answer is not None:
            answer, self._answer = self._answer, None
            answer.callback({"pid": self.new_pid, "was": os.getpid()})
        self._carrier = ChannelCarrier(self._channel, self.tally)
        self.reactor.callLater(0, self._hand_over)

    def fail(self, why: str) -> None:
        """The upgrade cannot happen (it is still starting): everything as it was, the new process killed."""
        if self.state is not UpgradeState.STARTING:
            return
        self.state = UpgradeState.IDLE
        self.last_failure = why
        self._cancel_timer()
        self.spawner.kill()
        if self.pidfile is not None:
            self.pidfile.restore()
        self._close_socket()
        self.log.error("upgrade failed, this process serves on: {why}", why=why)
        if self._answer is not None:
            answer, self._answer = self._answer, None
            answer.errback(UpgradeFailed(why))

    def channel_lost(self, channel: OldSide) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        if self.state is UpgradeState.STARTING:
            self.fail(f"the new process exited before taking over ({self._exited})" if self._exited
                      else "the new process closed the hand-over channel")
        elif self._carrier is not None:
            self._carrier.channel = None

    def _process_ended(self, why: str | None) -> None:
        if why is None or self.state is not UpgradeState.STARTING:
            return
        if self._channel is not None:  # what it said before it exited is read first: the channel's end decides
            self._exited = why
        else:
            self.fail(f"the new process exited before taking over ({why})")

    # Handing over

    def _hand_over(self) -> None:
        carrier = self._carrier
        if carrier is None or self.state is not UpgradeState.HANDING_OVER:
            return  # this process stopped meanwhile
        for frontend in self.frontends():
            for connection in list(frontend.connections):
                connection.move(carrier)
            for relay in list(frontend.websockets):
                if isinstance(relay, Movable):
                    relay.move(carrier)
                else:
                    carrier.keep(_kind_of(relay), "cannot move")
        DeferredList(list(carrier.pending)).addCallback(lambda _: carrier.log_batch())
        self._timer = self.reactor.callLater(self.deadline(), self._deadline_passed)
        self._checking = LoopingCall(self._check)
        self._checking.clock = self.reactor
        self._checking.start(CHECK_EVERY, now=False)

    def _left(self) -> list[tuple[Kind, int]]:
        left = []
        for frontend in self.frontends():
            websockets = frontend.websockets
            left.append((Kind.HTTP, sum(1 for c in frontend.connections if c.relay is None or c.relay not in websockets)))
            left.extend((_kind_of(relay), 1) for relay in frontend.websockets)
        return [(kind, count) for kind, count in left if count]

    def _check(self) -> None:
        carrier = self._carrier
        if carrier is not None and not carrier.pending:
            carrier.log_batch()
            if not self._left():
                self._finish()

    def _deadline_passed(self) -> None:
        self._timer = None
        carrier = self._carrier
        if carrier is not None and carrier.pending:  # a connection being carried is the new process's or ours:
            DeferredList(list(carrier.pending)).addCallback(lambda _: self._deadline_passed())  # never closed meanwhile
            return
        for kind, count in self._left():
            for _ in range(count):
                self.tally.add(kind, Outcome.CLOSED)
        self.log.info("upgrade: the deadline ({deadline:g}s) passed: what is left is closed", deadline=self.deadline())
        self._finish()

    def _finish(self) -> None:
        if self.state is not UpgradeState.HANDING_OVER:
            return
        self.state = UpgradeState.DONE
        self._stop_timers()
        self.log.info("upgrade: this process is done: {line}", line=self.tally.line())
        channel = self._channel
        if channel is None:
            self._stop()
            return
        told = channel.callRemote(Report, counts=json.dumps(self.tally.as_json()), pid=os.getpid())
        told.addErrback(lambda failure: self.log.warn("upgrade: the new process was not told the counts: {why}",
                                                      why=failure.getErrorMessage()))
        told.addBoth(lambda _: self._stop())

    def _stop(self) -> None:
        self._close_socket()
        self.stop()

    def close(self) -> None:
        """This process stops: an upgrade under way is given up, its timers and socket closed."""
        self.fail("this process is stopping")
        if self.state is UpgradeState.HANDING_OVER:
            self.state = UpgradeState.DONE
        self._stop_timers()
        self._close_socket()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stop_timers(self) -> None:
        """The hand-over is over: its deadline and its check for what is left stop."""
        self._cancel_timer()
        if self._checking is not None and self._checking.running:
            self._checking.stop()

    def _close_socket(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and channel.transport is not None:
            channel.transport.loseConnection()
        port, self._port = self._port, None
        directory, self._directory = self._directory, None
        if port is not None:  # its socket's path is removed as it closes; then its directory
            port.stopListening().addBoth(lambda _: shutil.rmtree(directory, ignore_errors=True) if directory else None)


def _kind_of(relay: object) -> Kind:
    return Kind.TUNNEL if isinstance(relay, Tunnel) else Kind.SESSION
