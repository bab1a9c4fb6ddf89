"""The supervisor's admin API: the calls of docs/admin.md answered for the whole proxy. Reads are asked of every
serving worker and what answered within ``process.worker-timeout`` merged (:mod:`._merge`), naming the workers
that did not; actions reach every worker (and are replayed into one that starts
later); a reload is checked once here and applied in every worker; ``GET /workers`` lists the workers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from ..admin import MAX_BODY, AdminAPI, APIError, Call, upgrade_failed
from ..checks import check_config
from ..config import CommandLine, ConfigError, load_config
from ._handle import HandleState, WorkerHandle
from ._liveness import Answers
from ._merge import merge_csv, merge_json, merge_metrics
from ._supervisor import Supervisor
from ._worker import share


class FleetReloader:
    """Re-reads the configuration file, checks it once, and applies it in every worker."""

    log = Logger()

    def __init__(self, supervisor: Supervisor, command_line: CommandLine) -> None:
        self.supervisor = supervisor
        self.command_line = command_line

    def reload(self) -> defer.Deferred[list[str]]:
        """The changes made, once every worker applied them. Raises :class:`ConfigError` at once, changing nothing,
        for a file that does not validate."""
        if not self.command_line.config_path:
            raise ConfigError("--config", "there is no configuration file to reload")
        new = check_config(load_config(self.command_line))
        old = self.supervisor.config
        said = [f"{name} changed: it takes effect at the next restart"
                for name in ("admin", "process") if getattr(old, name) != getattr(new, name)]

        def done(changes: list[str]) -> list[str]:
            self.log.info("reloaded {path} in {count} workers: {changes}", path=self.command_line.config_path,
                          count=len(self.supervisor.serving()), changes="; ".join(said + changes) or "nothing changed")
            return said + changes

        def failed(failure: Failure) -> Failure:
            self.log.error("reload: a worker could not apply it: {why}", why=_why(failure))
            return failure

        return self.supervisor.apply(new).addCallbacks(done, failed)


class FleetAdminAPI(AdminAPI):
    """:class:`AdminAPI` for the whole proxy, in the supervisor."""

    calls: tuple[Call, ...]

    def __init__(self, supervisor: Supervisor, reloader: FleetReloader | None, token: str | None = None) -> None:
        resource.Resource.__init__(self)
        self.supervisor = supervisor
        self.reloader = reloader
        self.token = token

    def answer(self, call: Call, request: server.Request, args: list[str]) -> object:
        if call.answer is AdminAPI._healthz:
            return self._fleet_health()
        if call.public:
            return call.answer(self, request, *args)
        if call.answer is FleetAdminAPI._workers:
            done = self._workers()
        elif call.answer is AdminAPI._reload:
            done = self._fleet_reload(request)
        elif call.answer is AdminAPI._upgrade:
            done = self._fleet_upgrade(request)
        else:
            done = self._forward(call, request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        done.addErrback(self._failed)
        done.addCallback(_write, request, gone)
        return server.NOT_DONE_YET

    def _fleet_health(self) -> object:
        """Alive while some worker serves: a 503 when none does (all starting, restarting, stopping or
        unresponsive)."""
        serving = len(self.supervisor.serving())
        if not serving:
            raise APIError(503, "no worker is serving")
        return {"status": "ok", "workers_serving": serving, "workers": len(self.supervisor.handles)}

    def _workers(self, request: server.Request | None = None) -> defer.Deferred[tuple[int, str, bytes]]:
        """Each worker (pid, state, restarts), with what its frontends accepted and were asked (the spread)."""

        def listed(answers: Answers) -> tuple[int, str, bytes]:
            counts = {}
            for handle, answer in answers.answered:
                frontends = json.loads(answer["body"])["frontends"] if answer["status"] == 200 else []
                counts[handle.index] = {"accepted": sum(f["accepted"] for f in frontends),
                                        "requests": sum(f["requests"] for f in frontends)}
            workers = [h.describe() | counts.get(h.index, {"accepted": None, "requests": None})
                       for h in self.supervisor.handles]
            return _json(200, {"state": self.supervisor.state.value, "workers": workers,
                               "unresponsive_workers": _indices(answers.unanswered)})

        return self.supervisor.ask("GET", "frontends", "", b"", "supervisor").addCallback(listed)

    def _fleet_reload(self, request: server.Request) -> defer.Deferred[tuple[int, str, bytes]]:
        reloading = self.reload_by(self.reloader.reload if self.reloader is not None else None, request)
        return reloading.addCallback(lambda changes: _json(200, {"changes": changes}))

    def _fleet_upgrade(self, request: server.Request) -> defer.Deferred[tuple[int, str, bytes]]:
        """Every worker replaced in turn (docs/upgrade.md); the supervisor stays."""
        self.log.info("admin: upgrade from {peer}", peer=_peer(request))
        return self.supervisor.rolling.start().addCallbacks(
            lambda done: _json(200, done), lambda failure: _json(*upgrade_failed(failure)))

    def _forward(self, call: Call, request: server.Request) -> defer.Deferred[tuple[int, str, bytes]]:
        method = call.method
        path = "/".join(segment.decode("utf-8", "replace") for segment in request.postpath or () if segment)
        query = request.uri.partition(b"?")[2].decode("latin-1")
        body = request.content.read(MAX_BODY) if request.content is not None else b""
        if call.answer is AdminAPI._add_server:
            body = self._shared_maxconn(body)
        if not self.supervisor.serving():
            raise APIError(503, "no worker is serving (they are starting or restarting); try again")
        asked = self.supervisor.ask(method, path, query, body, _peer(request))
        return asked.addCallback(self._merge, call, method, path, body)

    def _shared_maxconn(self, body: bytes) -> bytes:
        """An added server's ``maxconn`` as each worker takes it: its share (see docs/configuration.md)."""
        try:
            fields = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            return body  # the workers answer what is wrong with it
        maxconn = fields.get("maxconn") if isinstance(fields, dict) else None
        if isinstance(maxconn, int) and not isinstance(maxconn, bool) and maxconn > 0:
            fields["maxconn"] = share(maxconn, len(self.supervisor.handles))
            return json.dumps(fields).encode()
        return body

    def _merge(self, answers: Answers, call: Call, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """The answers merged; a worker that did not answer is named (and gets an action when it restarts)."""
        values = answers.values
        if not values:
            raise APIError(503, f"no worker answered within {self.supervisor.timeout:g}s (workers "
                                f"{', '.join(map(str, _indices(answers.unanswered)))}: unresponsive); try again")
        refused = [a for a in values if a["status"] != 200]
        if refused:
            return refused[0]["status"], refused[0]["content_type"], refused[0]["body"]
        bodies = [a["body"] for a in values]
        if method not in ("GET", "HEAD"):
            self.supervisor.remember(method, path, body)
        if call.answer is AdminAPI._metrics:
            return 200, CONTENT_TYPE_LATEST, merge_metrics(bodies, WorkersCollector(self.supervisor, answers))
        if call.answer is AdminAPI._stats_csv:
            return 200, values[0]["content_type"], merge_csv([b.decode() for b in bodies]).encode()
        merged = merge_json([json.loads(b) for b in bodies])
        if call.answer is AdminAPI._stats_json:
            merged["proxy"] |= {"pid": os.getpid(), "workers": [h.describe() for h in self.supervisor.handles]}
        if answers.unanswered and isinstance(merged, dict):
            merged["unresponsive_workers"] = _indices(answers.unanswered)
        return _json(200, merged)

    def _failed(self, failure: Failure) -> tuple[int, str, bytes]:
        error = failure.value
        if isinstance(error, APIError):
            return _json(error.status, {"status": error.status, "error": error.message})
        self.log.failure("admin: a call the workers were asked failed", failure)
        return _json(502, {"status": 502, "error": f"a worker did not answer: {_why(failure)}"})


class WorkersCollector(Collector):
    """The supervisor's own metrics: workers by state, each worker's restarts and kills for not answering, and
    how many workers did not answer this scrape (``answers``)."""

    def __init__(self, supervisor: Supervisor, answers: Answers) -> None:
        self.supervisor = supervisor
        self.answers = answers

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily("rubrisproxy_workers", "Worker processes, by state.", labels=["state"])
        for state in HandleState:
            states.add_metric([state.value], sum(h.state is state for h in self.supervisor.handles))
        yield states
        restarts = CounterMetricFamily("rubrisproxy_worker_restarts", "Times a worker was restarted after it died.",
                                       labels=["worker"])
        for handle in self.supervisor.handles:
            restarts.add_metric([str(handle.index)], handle.restarts)
        yield restarts
        killed = CounterMetricFamily("rubrisproxy_worker_unresponsive", "Times a worker was killed for leaving a "
                                     "call unanswered past process.worker-timeout.", labels=["worker"])
        for handle in self.supervisor.handles:
            killed.add_metric([str(handle.index)], handle.unresponsive)
        yield killed
        yield GaugeMetricFamily("rubrisproxy_workers_unresponsive", "Workers asked for this scrape that did not "
                                "answer within process.worker-timeout (their figures are missing).",
                                value=len(self.answers.unanswered))


def _json(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body, indent=1).encode() + b"\n"


def _write(answer: tuple[int, str, bytes], request: server.Request, gone: list[bool]) -> None:
    status, content_type, body = answer
    if gone:  # the caller went away before the workers answered
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type.encode("latin-1"))
    request.setHeader(b"cache-control", b"no-store")
    request.write(body)
    request.finish()


def _indices(handles: tuple[WorkerHandle, ...]) -> list[int]:
    return [handle.index for handle in handles]


def _why(failure: Failure) -> str:
    value = failure.value
    return str(getattr(value, "description", None) or failure.getErrorMessage())


def _peer(request: server.Request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or getattr(address, "name", None) or "local")



FleetAdminAPI.calls = (*AdminAPI.calls, Call("GET", ("workers",), FleetAdminAPI._workers))
