"""The supervisor: the twistd process of a proxy with ``workers > 1``. It spawns the workers, restarts one that
dies (with backoff) or stops answering (killed first), hands each the configuration (and each reload, checked
once here), carries what one worker publishes to the others, and stops them all gracefully on ``SIGTERM``."""

from __future__ import annotations

import pickle
import signal
from enum import Enum
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..bus import Subscriber
from ..config import ProxyConfig
from ..logoutput import LineOutput
from ._channel import AdminCall, Apply, Start, Unresponsive
from ._handle import HandleState, WorkerHandle
from ._liveness import Answers, Heartbeat, gather
from ._rolling import RollingUpgrade
from ._topics import Topics

#: Seconds past ``shutdown.grace`` the supervisor waits for a stopping worker before killing it.
STOP_MARGIN = 5.0
#: The most admin actions kept to replay into a restarted worker (the oldest are forgotten first).
JOURNAL_SIZE = 10_000


class SupervisorState(Enum):
    """The supervisor's lifecycle."""

    STARTING = "starting"  # spawning the workers; not every one serves yet
    RUNNING = "running"
    STOPPING = "stopping"  # the workers told to stop; waiting for them
    STOPPED = "stopped"


class Supervisor(service.Service):
    """Runs ``config.process.workers`` workers serving ``config``, and is the one end of every worker's channel."""

    log = Logger()

    def __init__(self, reactor: Any, config: ProxyConfig, output: LineOutput | None = None) -> None:
        self.reactor = reactor
        self.config = config
        self.output = output
        self.state = SupervisorState.STOPPED
        self.timeout = config.process.worker_timeout  # as process.workers: a reload changes it at the next restart
        self.handles = [WorkerHandle(self, index) for index in range(config.process.workers)]
        self.heartbeat = Heartbeat(reactor, self.handles, self.timeout)
        self.topics = Topics(self.handles)
        self._journal: dict[tuple[str, str, bytes], None] = {}  # admin actions in the order last done
        self.rolling = RollingUpgrade(self)  # its live upgrades: the workers replaced in turn

    def startService(self) -> None:
        super().startService()
        self.state = SupervisorState.STARTING
        for handle in self.handles:
            self._spawn(handle)
        self.heartbeat.start()

    # The workers' lifecycle.

    def start_worker(self, handle: WorkerHandle) -> None:
        """``handle``'s worker said hello: it gets the configuration, what was retained, and the admin actions."""
        if handle.channel is None or self.state is SupervisorState.STOPPING:
            return
        handle.state = HandleState.STARTING
        d = handle.call(Start, config=pickle.dumps(self.config), index=handle.index, workers=len(self.handles))
        d.addCallback(lambda _: self._catch_up(handle))
        d.addCallbacks(lambda _: self._serving(handle), self._start_failed, errbackArgs=(handle,))

    @defer.inlineCallbacks
    def _catch_up(self, handle: WorkerHandle) -> Any:
        self.topics.catch_up(handle)
        for method, path, body in list(self._journal):
            if handle.channel is not None:
                yield handle.call(AdminCall, method=method, path=path, query="", body=body,
                                  peer="supervisor (replay)")

    def _serving(self, handle: WorkerHandle) -> None:
        if handle.process is None or handle.state is not HandleState.STARTING:
            return
        handle.state = HandleState.SERVING
        self.log.info("worker {index} (pid {pid}) serving", index=handle.index, pid=handle.pid)
        if self.state is SupervisorState.STARTING and all(h.state is HandleState.SERVING for h in self.handles):
            self.state = SupervisorState.RUNNING
            self.log.info("all {count} workers serving", count=len(self.handles))

    def _start_failed(self, failure: Failure, handle: WorkerHandle) -> None:
        if failure.check(Unresponsive):  # killed, and restarted with backoff: a hang is no reason to give up
            return
        self.log.critical("worker {index} (pid {pid}) cannot serve: {why}", index=handle.index, pid=handle.pid,
                          why=failure.getErrorMessage())
        if self.state is SupervisorState.STARTING and handle.restarts == 0:  # the proxy's start failed
            if self.reactor.running:
                self.reactor.stop()
            return
        handle.signal(signal.SIGTERM)  # restarted with backoff when it has ended

    def unresponsive(self, handle: WorkerHandle, what: str) -> None:
        """``handle``'s worker left ``what`` unanswered past the timeout: wedged (it could not act on ``SIGTERM``),
        so killed; its listeners close with it, and it is restarted after its backoff once it has ended."""
        if handle.state not in (HandleState.STARTING, HandleState.SERVING):
            return
        handle.state = HandleState.UNRESPONSIVE
        handle.unresponsive += 1
        self.log.error("worker {index} (pid {pid}) did not answer {what} within {timeout:g}s: unresponsive;"
                       " killing it (SIGKILL)", index=handle.index, pid=handle.pid, what=what, timeout=self.timeout)
        handle.signal(signal.SIGKILL)
        handle.abandon_calls()  # what waits on it is answered now, by the others

    def worker_ended(self, handle: WorkerHandle) -> None:
        """``handle``'s process has ended: restarted after its backoff, unless the proxy is stopping (or a live
        upgrade replaced it)."""
        if self.rolling.ended(handle):
            return
        if self.state in (SupervisorState.STOPPING, SupervisorState.STOPPED) or handle.state is HandleState.STOPPING:
            handle.state = HandleState.STOPPED
            self.log.info("worker {index} (pid {pid}) stopped ({how})", index=handle.index, pid=handle.pid,
                          how=handle.last_exit)
            return
        delay = handle.backoff()
        handle.state = HandleState.WAITING
        handle.restarts += 1
        self.log.warn("worker {index} (pid {pid}) ended ({how}); its connections are lost, the other workers serve;"
                      " restarting it in {delay:g}s (restart {count})", index=handle.index, pid=handle.pid,
                      how=handle.last_exit, delay=delay, count=handle.restarts)
        handle.restart_timer = self.reactor.callLater(delay, self._respawn, handle)

    def _respawn(self, handle: WorkerHandle) -> None:
        handle.restart_timer = None
        if self.state in (SupervisorState.STARTING, SupervisorState.RUNNING):
            self._spawn(handle)

    def _spawn(self, handle: WorkerHandle) -> None:
        try:
            handle.spawn()
        except OSError as e:  # no file descriptors or processes left, say: tried again after the backoff
            handle.process = None
            handle.last_exit = f"not started: {e.strerror}"
            self.worker_ended(handle)

    def stopService(self) -> defer.Deferred[Any]:
        """Stop every worker as ``SIGTERM`` stops one process (its listeners closed, connections drained), and
        fire when all have ended (a worker still running ``shutdown.grace`` + 5 s later is killed)."""
        super().stopService()
        self.state = SupervisorState.STOPPING
        self.heartbeat.stop()
        for handle in self.handles:
            if handle.restart_timer is not None and handle.restart_timer.active():
                handle.restart_timer.cancel()
            if handle.process is not None:
                handle.state = HandleState.STOPPING
                handle.signal(signal.SIGTERM)
            else:
                handle.state = HandleState.STOPPED
        kill = self.reactor.callLater(self.config.shutdown_grace + STOP_MARGIN, self._kill_all)
        done = defer.gatherResults([handle.ended for handle in self.handles])

        def stopped(_: object) -> None:
            if kill.active():
                kill.cancel()
            self.state = SupervisorState.STOPPED
            self.log.info("all workers stopped")

        return done.addCallback(stopped)

    def _kill_all(self) -> None:
        for handle in self.handles:
            if handle.process is not None:
                self.log.warn("worker {index} (pid {pid}) still running: killed", index=handle.index, pid=handle.pid)
                handle.signal(signal.SIGKILL)

    def signal_workers(self, number: int) -> None:
        """Send every worker signal ``number`` (``SIGUSR1``: reopen the access log)."""
        for handle in self.handles:
            handle.signal(number)

    def relay(self, lines: list[str]) -> None:
        """A worker's log lines, written as they are to the proxy's log."""
        if self.output is not None:
            self.output.write_lines(lines)
        else:
            for line in lines:
                self.log.info("{line}", line=line)

    # Topics (a bus.Bus): what one worker publishes, the others (and the supervisor's subscribers) hear.

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with each payload a worker publishes on ``topic``."""
        self.topics.subscribe(topic, subscriber)

    def publish(self, topic: str, payload: bytes, retain: str = "") -> None:
        """Send ``payload`` on ``topic`` to every worker (as sender -1)."""
        self.topics.published(-1, topic, payload, retain)

    def published(self, sender: int, topic: str, payload: bytes, retain: str) -> None:
        """Worker ``sender`` published ``payload`` on ``topic``."""
        self.topics.published(sender, topic, payload, retain)

    def asked(self, sender: int, topic: str, question: bytes) -> defer.Deferred[list[bytes]]:
        """Worker ``sender`` asks ``question`` on ``topic``: the other serving workers' non-empty answers."""
        return self.topics.asked(sender, topic, question)

    # The admin API and reloads: asked of every serving worker.

    def serving(self) -> list[WorkerHandle]:
        return [handle for handle in self.handles if handle.serving]

    def ask(self, method: str, path: str, query: str, body: bytes, peer: str) -> defer.Deferred[Answers]:
        """An admin call asked of every serving worker: what each answered within the timeout, and who did not."""
        asked = self.serving()
        calls = [handle.call(AdminCall, method=method, path=path, query=query, body=body, peer=peer)
                 for handle in asked]
        return gather(asked, calls)

    def remember(self, method: str, path: str, body: bytes) -> None:
        """An admin action every worker applied: replayed into a worker that starts later, in order."""
        key = (method, path, body)
        self._journal.pop(key, None)
        self._journal[key] = None
        while len(self._journal) > JOURNAL_SIZE:
            del self._journal[next(iter(self._journal))]

    def apply(self, config: ProxyConfig) -> defer.Deferred[list[str]]:
        """Apply ``config`` (checked) in every worker; the changes the first made. Workers that start later get it,
        and so does one that did not answer (it is restarted)."""
        self.config = config  # the admin journal stays: a drain outlives a reload, as in one process
        asked = self.serving()
        calls = [handle.call(Apply, config=pickle.dumps(config)) for handle in asked]

        def first(answers: Answers) -> list[str]:
            return answers.values[0]["changes"] if answers.answered else []

        return gather(asked, calls).addCallback(first)

