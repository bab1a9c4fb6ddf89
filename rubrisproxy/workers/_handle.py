"""One worker slot as the supervisor keeps it: its process (spawned with the channel's socket pair), its end of
the channel, its state, its restarts and their backoff."""

from __future__ import annotations

import os
import signal
import socket
import sys
from enum import Enum
from typing import Any, Protocol

from twisted.internet import defer, error
from twisted.internet.protocol import Factory, ProcessProtocol, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from ._channel import CHANNEL_FD, VERSION, Ask, Hello, Publish, Unresponsive, VersionMismatch

#: Where the rubrisproxy package this supervisor runs was imported from: its workers import the same.
_SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Restart backoff: the first restart after this many seconds, doubling up to the most; a worker that served
#: this long before it died starts the backoff over.
FIRST_BACKOFF = 0.5
MOST_BACKOFF = 30.0
STEADY = 30.0


class HandleState(Enum):
    """A worker slot's lifecycle, as the supervisor sees it."""

    SPAWNED = "spawned"  # its process started; its Hello not yet heard
    STARTING = "starting"  # told to start serving
    SERVING = "serving"
    UNRESPONSIVE = "unresponsive"  # left a call unanswered past the timeout: killed (SIGKILL), then restarted
    STOPPING = "stopping"  # told to stop (SIGTERM)
    WAITING = "waiting"  # died; restarted after its backoff
    STOPPED = "stopped"  # its process has ended, and it is not to be restarted


class Fleet(Protocol):
    """What a worker handle needs of its supervisor."""

    reactor: Any
    log: Any
    timeout: float  # process.worker-timeout: how long a call may go unanswered

    def unresponsive(self, handle: WorkerHandle, what: str) -> None:
        """The worker left ``what`` unanswered past the timeout."""

    def relay(self, lines: list[str]) -> None:
        """Write a worker's output lines to the proxy's log."""

    def worker_ended(self, handle: WorkerHandle) -> None:
        """The worker's process has ended."""

    def start_worker(self, handle: WorkerHandle) -> None:
        """The worker said hello: tell it to start serving."""

    def published(self, sender: int, topic: str, payload: bytes, retain: str) -> None:
        """The worker published ``payload`` on ``topic``."""

    def asked(self, sender: int, topic: str, question: bytes) -> defer.Deferred[list[bytes]]:
        """The worker asks ``question`` on ``topic``: the other workers' non-empty answers."""


class WorkerHandle:
    """Worker ``index``: its process, channel and lifecycle."""

    def __init__(self, supervisor: Fleet, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.state = HandleState.STOPPED
        self.pid: int | None = None
        self.process: Any = None  # the IProcessTransport
        self.channel: SupervisorChannel | None = None
        self.restarts = 0
        self.unresponsive = 0  # times it was killed for leaving a call unanswered
        self.failures = 0  # deaths in a row, for the backoff
        self.started_at = 0.0
        self.last_exit = ""
        self.ended: defer.Deferred[None] = defer.succeed(None)  # fires when the process has ended
        self.restart_timer: Any = None
        self._calls: set[defer.Deferred[Any]] = set()  # the calls not answered yet

    @property
    def serving(self) -> bool:
        return self.state is HandleState.SERVING and self.channel is not None

    def spawn(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the worker process, its channel a socket pair: our end adopted here, its end its fd 3 (``extra_env``:
        a live upgrade's replacement is told where the worker it replaces hands over)."""
        reactor = self.supervisor.reactor
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, **(extra_env or {}))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE, env.get("PYTHONPATH", "")) if p)
        self.started_at = reactor.seconds()
        try:
            self.process = reactor.spawnProcess(
                WorkerProcess(self), sys.executable, [sys.executable, "-m", "rubrisproxy.workers"], env=env,
                childFDs={0: "w", 1: "r", 2: "r", CHANNEL_FD: theirs.fileno()})
            self.ended = defer.Deferred()  # fired by processEnded, which never comes before this returns
            self.state = HandleState.SPAWNED
            reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, ChannelFactory(self))
        finally:
            ours.close()
            theirs.close()
        self.pid = self.process.pid
        self.process.closeStdin()

    def call(self, command: type[amp.Command], **arguments: Any) -> defer.Deferred[Any]:
        """``command`` sent to the worker, to be answered within the supervisor's timeout: one that is not makes
        the worker unresponsive, and fails (as every call still waiting on it) with :class:`Unresponsive`."""
        if self.channel is None:
            return defer.fail(error.ConnectionLost("the worker's channel is closed"))
        d: defer.Deferred[Any] = self.channel.callRemote(command, **arguments)
        clock = self.supervisor.reactor
        # Judged one reactor turn after the deadline: an answer the supervisor had not read yet (it was busy
        # itself) is read first, so its own lateness is not blamed on the worker.
        timer = clock.callLater(self.supervisor.timeout, clock.callLater, 0, self._overdue, d, command.__name__)
        self._calls.add(d)
        return d.addBoth(self._answered, d, timer, command.__name__)

    def _answered(self, result: Any, d: defer.Deferred[Any], timer: Any, name: str) -> Any:
        self._calls.discard(d)
        if timer.active():
            timer.cancel()
        if isinstance(result, Failure) and result.check(defer.CancelledError):
            raise Unresponsive(f"worker {self.index} is unresponsive: {name} unanswered")
        return result

    def _overdue(self, d: defer.Deferred[Any], name: str) -> None:
        if not d.called:
            self.supervisor.unresponsive(self, name)
            d.cancel()  # if it was not already, with every other call waiting on the worker

    def abandon_calls(self) -> None:
        """Fail every call still waiting on the worker with :class:`Unresponsive`, now."""
        for d in list(self._calls):
            d.cancel()

    def signal(self, number: int) -> None:
        """Send the worker process signal ``number``, if it runs."""
        if self.process is not None and self.process.pid is not None:
            self.process.signalProcess(number)

    def backoff(self) -> float:
        """How long to wait before restarting the worker that just died."""
        if self.supervisor.reactor.seconds() - self.started_at >= STEADY:
            self.failures = 0
        self.failures += 1
        return min(MOST_BACKOFF, FIRST_BACKOFF * 2 ** (self.failures - 1))

    def process_ended(self, reason: Failure) -> None:
        value = reason.value
        signal_number = getattr(value, "signal", None)
        self.last_exit = f"signal {signal_number}" if signal_number else f"exit status {getattr(value, 'exitCode', '?')}"
        if self.state is HandleState.UNRESPONSIVE:
            self.last_exit += ", unresponsive"
        self.process = None
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.loseConnection()
        self.channel = None
        ended, self.ended = self.ended, defer.succeed(None)
        self.supervisor.worker_ended(self)
        ended.callback(None)

    def describe(self) -> dict[str, Any]:
        """The worker as ``GET /workers`` shows it."""
        now = self.supervisor.reactor.seconds()
        return {"index": self.index, "pid": self.pid, "state": self.state.value, "restarts": self.restarts,
                "unresponsive": self.unresponsive,
                "uptime": round(now - self.started_at, 3) if self.process is not None else 0.0,
                "last_exit": self.last_exit}


class WorkerProcess(ProcessProtocol):
    """A worker's process: its output lines relayed to the supervisor's log, its end reported."""

    def __init__(self, handle: WorkerHandle) -> None:
        self.handle = handle
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        if lines:
            self.handle.supervisor.relay([line.decode("utf-8", "replace") for line in lines])

    def processEnded(self, reason: Failure) -> None:
        rest = [part.decode("utf-8", "replace") for part in self._partial.values() if part]
        if rest:
            self.handle.supervisor.relay(rest)
        self.handle.process_ended(reason)


class SupervisorChannel(amp.AMP):
    """The supervisor's end of one worker's channel."""

    def __init__(self, handle: WorkerHandle) -> None:
        super().__init__()
        self.handle = handle

    @Hello.responder
    def hello(self, version: int, pid: int) -> dict[str, Any]:
        if version != VERSION:
            self.handle.supervisor.log.error(
                "worker {index} (pid {pid}) speaks channel version {version}, not {ours}: stopping it",
                index=self.handle.index, pid=pid, version=version, ours=VERSION)
            self.handle.signal(signal.SIGTERM)
            raise VersionMismatch(f"the supervisor speaks version {VERSION}")
        self.handle.channel = self
        self.handle.supervisor.reactor.callLater(0, self.handle.supervisor.start_worker, self.handle)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.handle.channel is self:  # the worker is gone, or going: asked nothing more
            self.handle.channel = None

    @Publish.responder
    def publish(self, topic: str, payload: bytes, retain: str) -> dict[str, Any]:
        self.handle.supervisor.published(self.handle.index, topic, payload, retain)
        return {}

    @Ask.responder
    def ask(self, topic: str, question: bytes) -> defer.Deferred[dict[str, Any]]:
        answers = self.handle.supervisor.asked(self.handle.index, topic, question)
        return answers.addCallback(lambda found: {"answers": found})


class ChannelFactory(Factory):
    """Builds the supervisor's end of one worker's channel."""

    def __init__(self, handle: WorkerHandle) -> None:
        self.handle = handle

    def buildProtocol(self, addr: Any) -> SupervisorChannel:
        return SupervisorChannel(self.handle)

