"""A worker process: the proxy as :func:`build_service` builds it, started when the supervisor says so over the
channel, its admin API answering the supervisor's calls, its health checks probing (worker 0) or following."""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from io import BytesIO
from typing import Any, cast
from urllib.parse import parse_qs

from twisted.internet import defer
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.web import server

from .._compat import lean_poll
from ..admin import AdminAPI, RunningProxy
from ..backend import Server
from ..bus import Responder, Subscriber
from ..cluster import Siblings
from ..collector import settle_collector
from ..config import AdminConfig, CommandLine, ConfigError, ProxyConfig
from ..mainlog import MainLogObserver, ReopenOnSignal
from ..reload import Reloader
from ..service import ProxyService, UpgradeSetup, build_service
from ..upgrade import SOCKET_ENV, UpgradeState
from ._channel import (
    VERSION,
    AbortUpgrade,
    AdminCall,
    Apply,
    Ask,
    AwaitUpgrade,
    Deliver,
    Hello,
    Ping,
    PrepareUpgrade,
    Publish,
    Query,
    Refused,
    Start,
    StartFailed,
    UpgradeRefused,
)

#: The topic worker 0 publishes its health-check verdicts on (retained per server).
HEALTH_TOPIC = "health"



class WorkerState(Enum):
    """A worker process's lifecycle, as the worker sees it."""

    WAITING = "waiting"  # for the supervisor's Start
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"


def share(maxconn: int, workers: int) -> int:
    """A worker's share of a server's ``maxconn``: divided by the workers, rounded up (0, no limit, stays 0)."""
    return math.ceil(maxconn / workers) if maxconn > 0 else 0


def worker_config(config: ProxyConfig, workers: int) -> ProxyConfig:
    """``config`` as one of ``workers`` workers serves it: each server's ``maxconn`` its share, no admin listener
    (the supervisor has it)."""
    backends = {
        name: replace(backend, servers=tuple(replace(s, maxconn=share(s.maxconn, workers)) for s in backend.servers))
        for name, backend in config.backends.items()
    }
    return replace(config, backends=backends, admin=AdminConfig())


class Worker:
    """The proxy in this worker process, and its end of the channel's topics (:meth:`subscribe`,
    :meth:`publish`, :meth:`ask`, :meth:`respond`: a :class:`rubrisproxy.bus.Bus`)."""

    log = Logger()

    def __init__(self, reactor: Any, observer: MainLogObserver) -> None:
        self.reactor = reactor
        self.observer = observer
        self.state = WorkerState.WAITING
        self.channel: WorkerChannel | None = None
        self.index = 0
        self.workers = 1
        self.root: ProxyService | None = None
        self.api: AdminAPI | None = None
        self.reloader: Reloader | None = None
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._responders: dict[str, Responder] = {}
        self._supervisor_answers = True  # until a supervisor of an earlier version says it takes no questions
        self.spawner = ChannelSpawner()  # a live upgrade's replacement is started by the supervisor
        self._upgrade: defer.Deferred[dict[str, Any]] | None = None

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with what the other workers (or the supervisor) publish on ``topic``."""
        self._subscribers.setdefault(topic, []).append(subscriber)

    def publish(self, topic: str, payload: bytes, retain: str = "") -> None:
        """Send ``payload`` on ``topic`` to the other workers; with ``retain``, workers that start later get the
        last payload published under that key too."""
        if self.channel is not None:
            self.channel.callRemote(Publish, topic=topic, payload=payload, retain=retain)

    def ask(self, topic: str, question: bytes, answered: Callable[[list[bytes]], None]) -> None:
        """Put ``question`` on ``topic`` to the other workers (through the supervisor): ``answered`` gets their
        non-empty answers, or an empty list when the channel is closed or the supervisor cannot ask them (one
        of an earlier version, which a live upgrade of the workers leaves in place, is not asked again)."""
        if self.channel is None or not self._supervisor_answers:
            answered([])
            return

        def failed(reason: Failure) -> list[bytes]:
            if reason.check(amp.UnhandledCommand):
                if self._supervisor_answers:
                    self._supervisor_answers = False
                    self.log.info("worker {index}: the supervisor, of an earlier version, takes no questions: an "
                                  "Engine.IO sid learned by another worker is known here once its push arrives",
                                  index=self.index)
            else:
                self.log.warn("worker {index}: a question on {topic} went unanswered: {why}", index=self.index,
                              topic=topic, why=reason.getErrorMessage())
            return []

        asking = self.channel.callRemote(Ask, topic=topic, question=question)
        asking.addCallbacks(lambda result: result["answers"], failed).addCallback(answered)

    def respond(self, topic: str, responder: Responder) -> None:
        """Answer what the other workers ask on ``topic`` with ``responder``."""
        self._responders[topic] = responder

    def queried(self, topic: str, question: bytes, sender: int) -> bytes:
        responder = self._responders.get(topic)
        if responder is None:
            return b""
        try:
            return responder(question, sender)
        except Exception:  # noqa: BLE001 - a responder's bug is this worker's to log, not the asker's to get
            self.log.failure("worker {index}: the responder on {topic} failed", index=self.index, topic=topic)
            return b""

    def delivered(self, topic: str, payload: bytes, sender: int) -> None:
        for subscriber in self._subscribers.get(topic, ()):
            try:
                subscriber(payload, sender)
            except Exception:  # noqa: BLE001 - one subscriber's bug does not stop the others
                self.log.failure("worker {index}: a subscriber of {topic} failed", index=self.index, topic=topic)

    def start(self, config: ProxyConfig, index: int, workers: int) -> None:
        """Build the proxy ``config`` describes and start serving; :class:`StartFailed` if it cannot listen."""
        self.state = WorkerState.STARTING
        self.index, self.workers = index, workers
        self.observer.json = config.log.format == "json"
        siblings = Siblings(self, index) if workers > 1 else None  # its stick tables, sids, client sessions shared
        upgrade = UpgradeSetup(spawner=self.spawner, successor_socket=os.environ.pop(SOCKET_ENV, None))
        root = self.root = build_service(worker_config(config, workers), self.reactor, report=False, siblings=siblings,
                                         upgrade=upgrade)
        parts = root.parts
        if index == 0:
            parts.health.report_to(self._judged)
        else:
            parts.health.probing = False
            self.subscribe(HEALTH_TOPIC, self._health)
        ReopenOnSignal([parts.access_log.reopen], self.reactor).setServiceParent(root)  # the supervisor passes it on
        self.reloader = Reloader(parts, CommandLine())
        running = RunningProxy(parts.frontend_list, parts.backends, parts.budget, parts.checkers, None,
                               self.reactor, parts.addresses, parts.shared,  # with [cluster], a drain reaches the nodes
                               upgrade=root.upgrader)  # GET /upgrade and its metrics (the supervisor starts one)
        self.api = AdminAPI(running)
        try:
            root.privilegedStartService()
            root.startService()
        except SystemExit as e:  # ProxyService's one line for a listener that cannot bind
            raise StartFailed(str(e)) from None
        self.reactor.addSystemEventTrigger("before", "shutdown", self._stop)
        self.state = WorkerState.SERVING
        settle_collector()  # as a single process does (tap): what start built frozen, the young passes spaced out
        lean_poll(self.reactor)  # as a single process does (tap)

    def apply(self, config: ProxyConfig) -> list[str]:
        """A reload: ``config`` as the supervisor checked it, applied here."""
        if self.reloader is None:
            raise Refused("the worker is not serving yet")
        try:
            return self.reloader.apply(worker_config(config, self.workers))
        except ConfigError as e:
            raise Refused(str(e)) from None

    def admin(self, method: str, path: str, query: str, body: bytes, peer: str) -> tuple[int, str, bytes]:
        """An admin call answered by this worker's API: its status, content type and body."""
        if self.api is None:
            return 503, "application/json", b'{"status": 503, "error": "the worker is starting"}\n'
        request = ChannelRequest(method, path, query, body, peer)
        answer = self.api.render(cast(server.Request, request))
        assert isinstance(answer, bytes)  # a worker's API answers at once
        return request.code, request.content_type, answer

    # A live upgrade (docs/upgrade.md): the supervisor starts the replacement; this worker hands over to it

    def prepare_upgrade(self) -> str:
        """Start this worker's upgrade: the hand-over socket its replacement is to be told."""
        if self.root is None or self.state is not WorkerState.SERVING:
            raise UpgradeRefused("the worker is not serving")
        upgrader = self.root.upgrader
        if upgrader.state is not UpgradeState.IDLE:
            raise UpgradeRefused(f"an upgrade is under way ({upgrader.state.value})")
        self.spawner.path = None
        self._upgrade = upgrader.start()
        if self.spawner.path is None:
            raise UpgradeRefused("no hand-over socket")
        return self.spawner.path

    def await_upgrade(self) -> defer.Deferred[dict[str, Any]]:
        """Fires with the replacement's pid once it has taken the listeners; fails with why it could not."""
        if self._upgrade is None:
            return defer.fail(UpgradeRefused("no upgrade under way"))
        upgrade, self._upgrade = self._upgrade, None

        def refused(failure: Failure) -> dict[str, Any]:
            raise UpgradeRefused(failure.getErrorMessage())

        return upgrade.addCallbacks(lambda done: {"pid": done["pid"]}, refused)

    def abort_upgrade(self, why: str) -> None:
        if self.root is not None:
            self.root.upgrader.fail(why)

    def _stop(self) -> Any:
        self.state = WorkerState.STOPPING
        return self.root.stopService() if self.root is not None and self.root.running else None

    def terminate(self) -> None:
        """``SIGTERM`` or ``SIGINT``: stop gracefully, once however many come."""
        if self.state is not WorkerState.STOPPING and self.reactor.running:
            self.log.info("worker {index}: stopping", index=self.index)
            self.state = WorkerState.STOPPING
            self.reactor.stop()

    def supervisor_gone(self) -> None:
        """The channel closed: the supervisor is gone, or stopping us; stop gracefully."""
        if self.state is not WorkerState.STOPPING and self.reactor.running:
            self.log.warn("worker {index}: the supervisor's channel closed; stopping", index=self.index)
            self.state = WorkerState.STOPPING
            self.reactor.stop()

    def _judged(self, backend: str, server: Server) -> None:
        verdict = {"backend": backend, "server": server.name, "up": server.up, "problem": server.last_check_problem}
        self.publish(HEALTH_TOPIC, json.dumps(verdict).encode(), retain=f"{backend}/{server.name}")

    def _health(self, payload: bytes, sender: int) -> None:
        """Worker 0's verdict on a server, applied here (its check counts stay worker 0's: the admin API sums)."""
        verdict = json.loads(payload)
        backend = self.root.parts.backends.get(verdict["backend"]) if self.root is not None else None
        server = next((s for s in backend.servers if s.name == verdict["server"]), None) if backend else None
        if server is None:
            return
        server.last_check_problem = verdict["problem"]
        if server.up != verdict["up"] and not server.ejected:
            server.set_up(verdict["up"])


class ChannelRequest:
    """An admin call that came over the channel, as :class:`AdminAPI` reads a request: the supervisor has already
    checked where it came from and its token."""

    def __init__(self, method: str, path: str, query: str, body: bytes, peer: str) -> None:
        self.method = method.encode()
        self.postpath = [segment.encode() for segment in path.split("/") if segment]
        self.args = {k.encode(): [v.encode() for v in vs] for k, vs in parse_qs(query).items()}
        self.content = BytesIO(body)
        self.code = 200
        self.content_type = "application/json"
        self._peer = peer

    def getHeader(self, name: bytes) -> bytes | None:
        return {b"host": b"localhost", b"content-type": b"application/json"}.get(name.lower())

    def setHeader(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def getClientAddress(self) -> Any:
        return _Peer(self._peer)


class _Peer:
    def __init__(self, host: str) -> None:
        self.host = host


class ChannelSpawner:
    """A worker's :class:`~rubrisproxy.upgrade.Spawner`: it starts nothing, it keeps the hand-over socket's path for
    the supervisor, which starts the replacement (and watches it)."""

    def __init__(self) -> None:
        self.path: str | None = None

    def spawn(self, socket_path: str, ended: Callable[[str | None], None]) -> None:
        self.path = socket_path

    def kill(self) -> None:
        """The supervisor kills a replacement that failed."""


class WorkerChannel(amp.AMP):
    """The worker's end of the channel: says hello, then does what the supervisor asks."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def connectionMade(self) -> None:
        super().connectionMade()
        self.worker.channel = self
        self.callRemote(Hello, version=VERSION, pid=os.getpid()).addErrback(self._refused)

    def _refused(self, failure: Failure) -> None:
        self.worker.log.error("worker: the supervisor refused this worker: {why}", why=failure.getErrorMessage())
        if self.transport is not None:
            self.transport.loseConnection()

    @Start.responder
    def start(self, config: bytes, index: int, workers: int) -> dict[str, Any]:
        self.worker.start(pickle.loads(config), index, workers)  # noqa: S301 - from our own supervisor, over its socket pair
        return {}

    @Apply.responder
    def apply(self, config: bytes) -> dict[str, Any]:
        return {"changes": self.worker.apply(pickle.loads(config))}  # noqa: S301

    @AdminCall.responder
    def admin_call(self, method: str, path: str, query: str, body: bytes, peer: str) -> dict[str, Any]:
        status, content_type, answer = self.worker.admin(method, path, query, body, peer)
        return {"status": status, "content_type": content_type, "body": answer}

    @PrepareUpgrade.responder
    def prepare_upgrade(self) -> dict[str, Any]:
        return {"socket": self.worker.prepare_upgrade()}

    @AwaitUpgrade.responder
    def await_upgrade(self) -> defer.Deferred[dict[str, Any]]:
        return self.worker.await_upgrade()

    @AbortUpgrade.responder
    def abort_upgrade(self, why: str) -> dict[str, Any]:
        self.worker.abort_upgrade(why)
        return {}

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}

    @Deliver.responder
    def deliver(self, topic: str, payload: bytes, sender: int) -> dict[str, Any]:
        self.worker.delivered(topic, payload, sender)
        return {}

    @Query.responder
    def query(self, topic: str, question: bytes, sender: int) -> dict[str, Any]:
        return {"answer": self.worker.queried(topic, question, sender)}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.worker.channel = None
        self.worker.supervisor_gone()


class WorkerChannelFactory(Factory):
    """Builds the worker's end of the channel."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def buildProtocol(self, addr: Any) -> WorkerChannel:
        return WorkerChannel(self.worker)
