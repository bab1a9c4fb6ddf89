"""Prometheus exposition of the proxy's counters, read from the objects that keep them at each scrape."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..backend import Backend
from ..counters import Histogram
from ..frontend import Frontend
from ..transfer import Upgrades
from ..websocket import ResumeBudget, WebSocketSession
from ._stats import BUILD, server_classes

#: The values ``rubrisproxy_server_state`` has a series for, each 1 when it is the server's state.
SERVER_STATES = ("up", "down", "drain", "maint")


class ProxyCollector(Collector):
    """Every metric, computed from frontends, backends and servers when scraped: nothing is counted twice."""

    def __init__(self, frontends: Sequence[Frontend], backends: Mapping[str, Backend], budget: ResumeBudget,
                 upgrade: Upgrades | None = None) -> None:
        self.frontends = frontends
        self.backends = backends
        self.budget = budget
        self.upgrade = upgrade

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "rubrisproxy_build_info", "The running versions; always 1.", labels=["version", "python", "twisted"]
        )
        build.add_metric([BUILD.version, BUILD.python, BUILD.twisted], 1)
        yield build
        yield from self._frontends()
        yield from self._backends()
        held = GaugeMetricFamily("rubrisproxy_resume_buffered_bytes", "Client bytes held by moving WebSocket sessions.")
        held.add_metric([], self.budget.held)
        yield held
        if self.upgrade is not None:
            upgraded = CounterMetricFamily(
                "rubrisproxy_upgrade_connections", "Connections of the last live upgrade (this process's, or the one"
                " it replaced) by kind and outcome: moved, kept, closed at the deadline.", labels=["kind", "outcome"])
            for (kind, outcome), count in sorted(self.upgrade.counts().items()):
                upgraded.add_metric([kind.value, outcome.value], count)
            yield upgraded

    def _frontends(self) -> Iterator[Metric]:
        accepted = CounterMetricFamily("rubrisproxy_connections", "Client connections accepted.", labels=["frontend"])
        active = GaugeMetricFamily("rubrisproxy_active_connections", "Open client connections.", labels=["frontend"])
        requests = CounterMetricFamily("rubrisproxy_requests", "Requests received.", labels=["frontend"])
        ended = CounterMetricFamily(
            "rubrisproxy_terminations", "Requests and WebSockets by how they ended.", labels=["frontend", "reason"]
        )
        traffic = CounterMetricFamily(
            "rubrisproxy_bytes",
            "Bytes read from (in) and written to (out) client connections, heads and frames included.",
            labels=["frontend", "direction"]
        )
        websockets = GaugeMetricFamily(
            "rubrisproxy_websockets", "Open WebSockets by mode.", labels=["frontend", "mode"]
        )
        connection_ends = CounterMetricFamily(
            "rubrisproxy_connection_ends", "Client connections by how they ended.", labels=["frontend", "reason"]
        )
        clients = GaugeMetricFamily("rubrisproxy_client_sessions", "Client sessions tracked.", labels=["frontend"])
        destroyed = CounterMetricFamily(
            "rubrisproxy_client_sessions_ended", "Client sessions by how they ended.", labels=["frontend", "reason"]
        )
        durations = HistogramMetricFamily(
            "rubrisproxy_request_duration_seconds", "From request head to the end of the answer.", labels=["frontend"]
        )
        answered = CounterMetricFamily(
            "rubrisproxy_frontend_responses", "Answers sent to clients by status class, and whether the origin's"
            " or the proxy's own.", labels=["frontend", "code", "source"]
        )
        limited = CounterMetricFamily(
            "rubrisproxy_rate_limited", "Requests answered 429 by a rate-limit rule.", labels=["frontend", "rule"]
        )
        limit_keys = GaugeMetricFamily(
            "rubrisproxy_rate_limit_keys", "Keys a rate-limit rule's table holds.", labels=["frontend", "rule"]
        )
        for frontend in self.frontends:
            name = frontend.name
            for where, index, limit in frontend.rules.rate_limits if frontend.rules is not None else ():
                limited.add_metric([name, f"{where}[{index}]"], limit.table.limited)
                limit_keys.add_metric([name, f"{where}[{index}]"], len(limit.table))
            accepted.add_metric([name], frontend.accepted)
            active.add_metric([name], len(frontend.connections))
            requests.add_metric([name], frontend.requests)
            for reason, count in sorted(frontend.terminations.items()):
                ended.add_metric([name, reason], count)
            for reason, count in sorted(frontend.connection_ends.items()):
                connection_ends.add_metric([name, reason], count)
            if frontend.clients is not None:
                clients.add_metric([name], len(frontend.clients.sessions))
                for reason, count in sorted(frontend.clients.destroyed.items()):
                    destroyed.add_metric([name, reason], count)
            bytes_in, bytes_out = frontend.traffic()
            traffic.add_metric([name, "in"], bytes_in)
            traffic.add_metric([name, "out"], bytes_out)
            sessions = sum(1 for relay in frontend.websockets if isinstance(relay, WebSocketSession))
            websockets.add_metric([name, "session"], sessions)
            websockets.add_metric([name, "tunnel"], len(frontend.websockets) - sessions)
            _histogram(durations, [name], frontend.request_seconds)
            for (code, source), count in sorted(frontend.responses.items()):
                answered.add_metric([name, code, source], count)
        yield from (accepted, active, requests, ended, connection_ends, clients, destroyed, traffic, websockets, durations,
                    answered, limited, limit_keys)

    def _backends(self) -> Iterator[Metric]:
        yield from self._servers()
        labels = ["backend"]
        queue = GaugeMetricFamily("rubrisproxy_backend_queue_length", "Requests waiting for a server.", labels=labels)
        answered = CounterMetricFamily(
            "rubrisproxy_backend_responses", "Answers to requests routed to the backend, the proxy's own included.",
            labels=["backend", "code"]
        )
        durations = HistogramMetricFamily(
            "rubrisproxy_backend_request_duration_seconds", "Requests routed to the backend: from the request head"
            " to the end of the answer.", labels=labels
        )
        resumes = CounterMetricFamily("rubrisproxy_resumes", "Sessions moved to another server.", labels=labels)
        resume_failures = CounterMetricFamily(
            "rubrisproxy_resume_failures", "Sessions that could not move.", labels=["backend", "reason"]
        )
        lost = CounterMetricFamily(
            "rubrisproxy_websocket_messages_lost", "Client messages held by moving sessions that no server took.",
            labels=labels,
        )
        resume_seconds = HistogramMetricFamily(
            "rubrisproxy_resume_duration_seconds", "How long sessions took to move.", labels=labels
        )
        connect_seconds = HistogramMetricFamily(
            "rubrisproxy_connect_duration_seconds", "How long new server connections took.", labels=labels
        )
        challenges = CounterMetricFamily(
            "rubrisproxy_backend_auth_challenges", "Challenges (401, or a parent proxy's 407) met with the backend's"
            " own credentials, by outcome: answered (the request sent again), failed (the credentials refused),"
            " passed (handed to the client unanswered).", labels=["backend", "outcome"]
        )
        for backend in self.backends.values():
            key = [backend.name]
            queue.add_metric(key, backend.queue_length)
            login = backend.login
            if login is not None:
                for outcome in ("answered", "failed", "passed"):
                    challenges.add_metric([*key, outcome], getattr(login, outcome))
            for code, count in sorted(backend.responses.items()):
                answered.add_metric([*key, code], count)
            _histogram(durations, key, backend.request_seconds)
            resumes.add_metric(key, backend.resumes)
            for reason, count in sorted(backend.resume_failures.items()):
                resume_failures.add_metric([*key, reason], count)
            lost.add_metric(key, backend.messages_lost)
            _histogram(resume_seconds, key, backend.resume_seconds)
            _histogram(connect_seconds, key, backend.connect_seconds)
        yield from (queue, answered, durations, resumes, resume_failures, lost, resume_seconds, connect_seconds,
                    challenges)

    def _servers(self) -> Iterator[Metric]:
        labels = ["backend", "server"]
        responses = CounterMetricFamily(
            "rubrisproxy_responses", "Server answers by status class.", labels=[*labels, "code"]
        )
        in_progress = GaugeMetricFamily("rubrisproxy_server_active", "Requests and WebSockets in progress.", labels=labels)
        most = GaugeMetricFamily("rubrisproxy_server_max_active", "The most requests and WebSockets in progress at once.",
                                 labels=labels)
        maxconn = GaugeMetricFamily("rubrisproxy_server_maxconn", "The server's maxconn (0: no limit).", labels=labels)
        up = GaugeMetricFamily(
            "rubrisproxy_server_up", "1 if the server takes new requests (up and not draining).", labels=labels
        )
        state = GaugeMetricFamily(
            "rubrisproxy_server_state", "1 for the server's current state, 0 for the others.", labels=[*labels, "state"]
        )
        sessions = GaugeMetricFamily("rubrisproxy_server_sessions", "Session-mode WebSockets on the server.", labels=labels)
        requests = CounterMetricFamily("rubrisproxy_server_requests", "Requests and WebSockets sent to the server.",
                                       labels=labels)
        traffic = CounterMetricFamily(
            "rubrisproxy_server_bytes",
            "Bytes written to (in) and read from (out) the server for clients, heads and frames included.",
            labels=[*labels, "direction"]
        )
        failures = CounterMetricFamily(
            "rubrisproxy_server_connect_failures", "Failed connection attempts.", labels=labels
        )
        retries = CounterMetricFamily(
            "rubrisproxy_server_retries", "Failed connection attempts that were tried again.", labels=labels
        )
        redispatches = CounterMetricFamily(
            "rubrisproxy_server_redispatches", "Failed connection attempts sent on to another server.", labels=labels
        )
        checks = CounterMetricFamily(
            "rubrisproxy_health_checks", "Active health checks by result.", labels=[*labels, "result"]
        )
        check_seconds = HistogramMetricFamily(
            "rubrisproxy_health_check_duration_seconds", "How long active health checks took.", labels=labels
        )
        for backend in self.backends.values():
            for server in backend.servers:
                key = [backend.name, server.name]
                for code, count in server_classes(server).items():
                    if count:
                        responses.add_metric([*key, code], count)
                in_progress.add_metric(key, server.active)
                most.add_metric(key, server.max_active)
                maxconn.add_metric(key, server.maxconn)
                up.add_metric(key, 1 if server.state == "up" else 0)
                for name in SERVER_STATES:
                    state.add_metric([*key, name], 1 if server.state == name else 0)
                sessions.add_metric(key, len(server.watchers))
                requests.add_metric(key, server.total)
                traffic.add_metric([*key, "in"], server.bytes_in)
                traffic.add_metric([*key, "out"], server.bytes_out)
                failures.add_metric(key, server.connect_failures)
                retries.add_metric(key, server.retries)
                redispatches.add_metric(key, server.redispatches)
                if server.check_seconds.count:
                    for result in ("passed", "failed"):
                        checks.add_metric([*key, result], server.check_results.get(result, 0))
                    _histogram(check_seconds, key, server.check_seconds)
        yield from (responses, in_progress, most, maxconn, up, state, sessions, requests, traffic, failures, retries,
                    redispatches, checks, check_seconds)


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.cumulative(), histogram.total)


def registry_for(frontends: Sequence[Frontend], backends: Mapping[str, Backend], budget: ResumeBudget,
                 upgrade: Upgrades | None = None) -> CollectorRegistry:
    """A registry of its own: the proxy's collector and the process's (``process_*``: CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(frontends, backends, budget, upgrade))
    ProcessCollector(registry=registry)
    return registry
