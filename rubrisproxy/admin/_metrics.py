"""Prometheus exposition of the proxy's counters, read from the objects that keep them at each scrape."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..backend import Backend
from ..counters import Histogram
from ..frontend import Frontend
from ..websocket import ResumeBudget, WebSocketSession


class ProxyCollector(Collector):
    """Every metric, computed from frontends, backends and servers when scraped: nothing is counted twice."""

    def __init__(self, frontends: Sequence[Frontend], backends: Mapping[str, Backend], budget: ResumeBudget) -> None:
        self.frontends = frontends
        self.backends = backends
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        yield from self._frontends()
        yield from self._backends()
        held = GaugeMetricFamily("rubrisproxy_resume_buffered_bytes", "Client bytes held by moving WebSocket sessions.")
        held.add_metric([], self.budget.held)
        yield held

    def _frontends(self) -> Iterator[Metric]:
        accepted = CounterMetricFamily("rubrisproxy_connections", "Client connections accepted.", labels=["frontend"])
        active = GaugeMetricFamily("rubrisproxy_active_connections", "Open client connections.", labels=["frontend"])
        requests = CounterMetricFamily("rubrisproxy_requests", "Requests received.", labels=["frontend"])
        ended = CounterMetricFamily(
            "rubrisproxy_terminations", "Requests and WebSockets by how they ended.", labels=["frontend", "reason"]
        )
        traffic = CounterMetricFamily(
            "rubrisproxy_bytes", "Bytes relayed (bodies and WebSocket data).", labels=["frontend", "direction"]
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
        for frontend in self.frontends:
            name = frontend.name
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
            traffic.add_metric([name, "in"], frontend.bytes_in)
            traffic.add_metric([name, "out"], frontend.bytes_out)
            sessions = sum(1 for relay in frontend.websockets if isinstance(relay, WebSocketSession))
            websockets.add_metric([name, "session"], sessions)
            websockets.add_metric([name, "tunnel"], len(frontend.websockets) - sessions)
            _histogram(durations, [name], frontend.request_seconds)
        yield from (accepted, active, requests, ended, connection_ends, clients, destroyed, traffic, websockets, durations)

    def _backends(self) -> Iterator[Metric]:
        labels = ["backend", "server"]
        responses = CounterMetricFamily(
            "rubrisproxy_responses", "Responses by status class.", labels=[*labels, "code"]
        )
        in_progress = GaugeMetricFamily("rubrisproxy_server_active", "Requests and WebSockets in progress.", labels=labels)
        state = GaugeMetricFamily(
            "rubrisproxy_server_up", "1 if the server takes new requests (up and not draining).", labels=labels
        )
        sessions = GaugeMetricFamily("rubrisproxy_server_sessions", "Session-mode WebSockets on the server.", labels=labels)
        failures = CounterMetricFamily(
            "rubrisproxy_server_connect_failures", "Failed connection attempts.", labels=labels
        )
        queue = GaugeMetricFamily("rubrisproxy_backend_queue_length", "Requests waiting for a server.", labels=["backend"])
        resumes = CounterMetricFamily(
            "rubrisproxy_resumes", "Sessions moved to another server.", labels=["backend"]
        )
        resume_failures = CounterMetricFamily(
            "rubrisproxy_resume_failures", "Sessions that could not move.", labels=["backend", "reason"]
        )
        resume_seconds = HistogramMetricFamily(
            "rubrisproxy_resume_duration_seconds", "How long sessions took to move.", labels=["backend"]
        )
        connect_seconds = HistogramMetricFamily(
            "rubrisproxy_connect_duration_seconds", "How long new server connections took.", labels=["backend"]
        )
        for backend in self.backends.values():
            for server in backend.servers:
                key = [backend.name, server.name]
                classes: dict[str, int] = {}
                for status, count in server.responses.items():
                    code = f"{status // 100}xx"
                    classes[code] = classes.get(code, 0) + count
                for code, count in sorted(classes.items()):
                    responses.add_metric([*key, code], count)
                in_progress.add_metric(key, server.active)
                state.add_metric(key, 1 if server.up and not server.draining else 0)
                sessions.add_metric(key, len(server.watchers))
                failures.add_metric(key, server.connect_failures)
            queue.add_metric([backend.name], backend.queue_length)
            resumes.add_metric([backend.name], backend.resumes)
            for reason, count in sorted(backend.resume_failures.items()):
                resume_failures.add_metric([backend.name, reason], count)
            _histogram(resume_seconds, [backend.name], backend.resume_seconds)
            _histogram(connect_seconds, [backend.name], backend.connect_seconds)
        yield from (responses, in_progress, state, sessions, failures, queue, resumes, resume_failures,
                    resume_seconds, connect_seconds)


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.cumulative(), histogram.total)


def registry_for(frontends: Sequence[Frontend], backends: Mapping[str, Backend], budget: ResumeBudget) -> CollectorRegistry:
    """A registry holding only the proxy's collector (no process metrics from the library's default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(frontends, backends, budget))
    return registry
