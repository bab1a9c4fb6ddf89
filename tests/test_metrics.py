"""Metrics, ``/stats.json`` and ``/stats.csv`` over real loopback traffic: an origin answering 2xx, 4xx and 5xx, a
deny route, a dead server found by a health check, and one that fails to connect so the request moves on."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from twisted.web.client import Agent, readBody

import twisted
from rubrisproxy import __version__
from rubrisproxy.admin import RunningProxy
from rubrisproxy.admin._stats import stats_csv
from rubrisproxy.backend import Backend, Server
from rubrisproxy.config import BackendConfig, ServerConfig, config_from_document
from rubrisproxy.service import build_service
from rubrisproxy.websocket import ResumeBudget

from .helpers import ProxyTestCase, get


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    number = port.getHost().port
    port.stopListening()
    return number  # type: ignore[no-any-return]


class MetricsCase(ProxyTestCase):
    """A proxy from a config: backend ``app`` (a real origin, HTTP-checked), ``pair`` (a dead server, then the live
    origin as backup, with redispatch) and ``dead`` (a dead server, TCP-checked); routes deny ``/deny``, send
    ``X-Pair`` requests to ``pair`` and ``/dead`` to ``dead``."""

    def setUp(self) -> None:
        document = self.document(self.start_web_origin(), closed_port())
        service = self.service = build_service(config_from_document(document), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.proxy_port = service.getServiceNamed("frontend:web").ports[0].getHost().port
        self.admin_port = service.getServiceNamed("admin").ports[0].getHost().port
        self.parts = service.parts

    def document(self, origin: int, dead: int) -> dict[str, Any]:
        """The configuration, with the origin's port and a port nothing listens on."""
        return {
            "access-log": {"enabled": False},
            "admin": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "frontends": {"web": {"listen": ["tcp:0:interface=127.0.0.1"], "backend": "app", "routes": [
                {"path-prefix": "/deny", "deny": 403},
                {"header": "X-Pair", "backend": "pair"},
                {"path-prefix": "/dead", "backend": "dead"},
            ]}},
            "backends": {
                "app": {"servers": [{"name": "a1", "address": f"127.0.0.1:{origin}", "maxconn": 50}],
                        "health": {"check": "http", "path": "/status/200", "interval": "60s"}},
                "pair": {"servers": [{"name": "p1", "address": f"127.0.0.1:{dead}"},
                                     {"name": "p2", "address": f"127.0.0.1:{origin}", "backup": True}],
                         "redispatch": True, "retries": 3, "health": {"check": "none"}},
                "dead": {"servers": [{"name": "d1", "address": f"127.0.0.1:{dead}"}],
                         "health": {"check": "tcp", "interval": "60s", "fall": 1}},
            },
        }

    def server(self, backend: str, name: str):  # type: ignore[no-untyped-def]
        return next(s for s in self.parts.backends[backend].servers if s.name == name)

    @defer.inlineCallbacks
    def traffic(self):  # type: ignore[no-untyped-def]
        """Both health checks done (one each: the interval is long), then one request of each kind."""
        checkers = self.parts.checkers
        yield self.poll(lambda: checkers["app"].completed == 1 and checkers["dead"].completed == 1, "the checks")
        self.assertEqual(self.server("dead", "d1").state, "down")
        statuses, self.received, self.sent = [], [], []
        for request in (get(b"/status/200"), get(b"/status/404"), get(b"/status/500"), get(b"/deny/x"),
                        get(b"/status/201", b"X-Pair: 1\r\n"), get(b"/dead/x")):
            client = yield self.connect()
            client.send(request)
            self.sent.append(len(request))
            (response,) = yield client.responses(1)
            statuses.append(response.status)
            self.received.append(len(client.received))
        self.assertEqual(statuses, [200, 404, 500, 403, 201, 503])
        # What a1's three answers came to, as read from it: as relayed, less the Via line the proxy adds.
        self.a1_out = sum(self.received[:3]) - 3 * len(b"Via: 1.1 rubrisproxy\r\n")
        self.a1_in = sum(self.sent[:3])  # what the clients sent for it (it gets that and forwarding headers)
        yield self.poll(lambda: not any(s.active for b in self.parts.backends.values() for s in b.servers), "done")

    @defer.inlineCallbacks
    def admin(self, path: str):  # type: ignore[no-untyped-def]
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{self.admin_port}{path}".encode())
        body = yield readBody(response)
        return response, body


class MetricsTests(MetricsCase):
    @defer.inlineCallbacks
    def test_series_count_the_traffic(self):  # type: ignore[no-untyped-def]
        yield self.traffic()
        response, body = yield self.admin("/metrics")
        self.assertEqual(response.code, 200)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
        }

        def series(name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
            """Every sample of ``name`` whose labels include ``labels``, by the rest of its labels."""
            return {
                tuple((k, v) for k, v in key if k not in labels): value
                for (sample, key), value in samples.items()
                if sample == name and all((k, v) in key for k, v in labels.items())
            }

        build = {"version": __version__, "python": platform.python_version(), "twisted": twisted.__version__}
        self.assertEqual(samples[("rubrisproxy_build_info", tuple(sorted(build.items())))], 1)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
                     "process_open_fds"):
            self.assertGreater(samples[(name, ())], 0, name)
        # Counters carry _total, durations are seconds, sizes bytes.
        self.assertEqual(families["rubrisproxy_frontend_responses"].type, "counter")
        self.assertEqual(families["rubrisproxy_server_state"].type, "gauge")
        self.assertEqual(families["rubrisproxy_backend_request_duration_seconds"].type, "histogram")

        self.assertEqual(series("rubrisproxy_frontend_responses_total", frontend="web"), {
            (("code", "2xx"), ("source", "origin")): 2, (("code", "4xx"), ("source", "origin")): 1,
            (("code", "5xx"), ("source", "origin")): 1, (("code", "4xx"), ("source", "proxy")): 1,
            (("code", "5xx"), ("source", "proxy")): 1,
        })
        self.assertEqual(samples[("rubrisproxy_terminations_total", (("frontend", "web"), ("reason", "denied")))], 1)
        self.assertEqual(series("rubrisproxy_backend_responses_total", code="2xx"),
                         {(("backend", "app"),): 1, (("backend", "pair"),): 1})
        self.assertEqual(series("rubrisproxy_backend_responses_total", backend="app"),
                         {(("code", "2xx"),): 1, (("code", "4xx"),): 1, (("code", "5xx"),): 1})
        self.assertEqual(series("rubrisproxy_backend_responses_total", backend="dead"), {(("code", "5xx"),): 1})
        self.assertEqual(series("rubrisproxy_backend_request_duration_seconds_count"),
                         {(("backend", "app"),): 3, (("backend", "pair"),): 1, (("backend", "dead"),): 1})
        self.assertEqual(samples[("rubrisproxy_request_duration_seconds_count", (("frontend", "web"),))], 6)
        self.assertEqual(series("rubrisproxy_responses_total", backend="app", server="a1"),
                         {(("code", "2xx"),): 1, (("code", "4xx"),): 1, (("code", "5xx"),): 1})
        self.assertEqual(series("rubrisproxy_responses_total", backend="pair"), {(("code", "2xx"), ("server", "p2")): 1})

        self.assertEqual(series("rubrisproxy_server_state", backend="dead", server="d1"), {
            (("state", "up"),): 0, (("state", "down"),): 1, (("state", "drain"),): 0, (("state", "maint"),): 0})
        self.assertEqual(series("rubrisproxy_server_state", backend="app", server="a1"), {
            (("state", "up"),): 1, (("state", "down"),): 0, (("state", "drain"),): 0, (("state", "maint"),): 0})
        self.assertEqual(series("rubrisproxy_server_up", server="d1"), {(("backend", "dead"),): 0})
        self.assertEqual(series("rubrisproxy_health_checks_total"), {
            (("backend", "app"), ("result", "passed"), ("server", "a1")): 1,
            (("backend", "app"), ("result", "failed"), ("server", "a1")): 0,
            (("backend", "dead"), ("result", "passed"), ("server", "d1")): 0,
            (("backend", "dead"), ("result", "failed"), ("server", "d1")): 1,
        })  # the servers without checks (pair) have no series
        self.assertEqual(series("rubrisproxy_health_check_duration_seconds_count"),
                         {(("backend", "app"), ("server", "a1")): 1, (("backend", "dead"), ("server", "d1")): 1})
        self.assertLess(samples[("rubrisproxy_health_check_duration_seconds_sum", (("backend", "app"), ("server", "a1")))],
                        5)

        pair = {"connect_failures": ("p1", 1), "retries": ("p1", 1), "redispatches": ("p1", 1)}
        for metric, (server, value) in pair.items():
            self.assertEqual(series(f"rubrisproxy_server_{metric}_total", backend="pair"),
                             {(("server", server),): value, (("server", "p2" if server == "p1" else "p1"),): 0}, metric)
        self.assertEqual(series("rubrisproxy_server_requests_total", backend="pair"),
                         {(("server", "p1"),): 1, (("server", "p2"),): 1})
        self.assertEqual(samples[("rubrisproxy_server_requests_total", (("backend", "app"), ("server", "a1")))], 3)
        a1_bytes = series("rubrisproxy_server_bytes_total", backend="app", server="a1")
        self.assertEqual(a1_bytes[(("direction", "out"),)], self.a1_out)  # every byte read from it, heads included
        # Every byte written to it: the request heads, with the forwarding headers (about 150 bytes) added.
        self.assertGreater(a1_bytes[(("direction", "in"),)], self.a1_in + 3 * 100)
        self.assertLess(a1_bytes[(("direction", "in"),)], self.a1_in + 3 * 300)
        # The frontend's: every byte read from and written to its clients, the proxy's own answers included.
        self.assertEqual(series("rubrisproxy_bytes_total", frontend="web"),
                         {(("direction", "in"),): sum(self.sent), (("direction", "out"),): sum(self.received)})
        self.assertEqual(samples[("rubrisproxy_server_max_active", (("backend", "app"), ("server", "a1")))], 1)
        self.assertEqual(samples[("rubrisproxy_server_maxconn", (("backend", "app"), ("server", "a1")))], 50)
        self.assertEqual(samples[("rubrisproxy_server_active", (("backend", "app"), ("server", "a1")))], 0)

    @defer.inlineCallbacks
    def test_stats_json_shows_the_same(self):  # type: ignore[no-untyped-def]
        yield self.traffic()
        response, body = yield self.admin("/stats.json")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        stats = json.loads(body)
        self.assertEqual(stats["proxy"]["pid"], os.getpid())
        self.assertEqual(stats["proxy"]["version"], __version__)
        self.assertGreaterEqual(stats["proxy"]["uptime"], 0)
        (web,) = stats["frontends"]
        self.assertEqual(web["listen"], [{"endpoint": "tcp:0:interface=127.0.0.1",
                                          "address": f"127.0.0.1:{self.proxy_port}"}])
        self.assertEqual(web["routes"], [{"match": "path-prefix /deny", "deny": 403},
                                         {"match": "header X-Pair", "backend": "pair"},
                                         {"match": "path-prefix /dead", "backend": "dead"}])
        self.assertEqual((web["default_backend"], web["mode"]), ("app", "reverse"))
        self.assertEqual(web["responses"], {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 2, "5xx": 2})
        self.assertEqual(web["proxy_responses"], {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 1, "5xx": 1})
        servers = {s["name"]: s for b in stats["backends"] for s in b["servers"]}
        a1, p1, d1 = servers["a1"], servers["p1"], servers["d1"]
        self.assertEqual(a1["responses"], {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 1})
        self.assertEqual((a1["total"], a1["max_active"], a1["maxconn"], a1["bytes_out"]), (3, 1, 50, self.a1_out))
        self.assertEqual({k: a1["check"][k] for k in ("last", "passed", "failed", "problem")},
                         {"last": "passed", "passed": 1, "failed": 0, "problem": ""})
        self.assertEqual((d1["state"], d1["check"]["last"], d1["check"]["failed"]), ("down", "failed", 1))
        self.assertIn("cannot connect", d1["check"]["problem"])
        self.assertIsNone(p1["check"])
        self.assertEqual((p1["connect_failures"], p1["retries"], p1["redispatches"]), (1, 1, 1))
        self.assertGreaterEqual(d1["state_seconds"], 0)
        self.assertEqual(stats["sessions"], {"live": 0, "moving": 0, "resumed": 0, "failed": 0, "messages_lost": 0, "tunnels": 0,
                                             "buffered_bytes": 0, "current": []})

    @defer.inlineCallbacks
    def test_stats_csv_is_haproxy_show_stat(self):  # type: ignore[no-untyped-def]
        yield self.traffic()
        response, body = yield self.admin("/stats.csv")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/csv; charset=utf-8"])
        text = body.decode()
        self.assertTrue(text.startswith("# pxname,svname,qcur,scur,smax,slim,stot,bin,bout,"))
        rows = {(r["pxname"], r["svname"]): r for r in csv.DictReader(io.StringIO(text[2:]))}
        self.assertEqual(list(rows), [("web", "FRONTEND"), ("app", "a1"), ("app", "BACKEND"), ("pair", "p1"),
                                      ("pair", "p2"), ("pair", "BACKEND"), ("dead", "d1"), ("dead", "BACKEND")])
        front = rows[("web", "FRONTEND")]
        self.assertEqual({k: front[k] for k in ("type", "status", "req_tot", "hrsp_2xx", "hrsp_4xx", "hrsp_5xx")},
                         {"type": "0", "status": "OPEN", "req_tot": "6", "hrsp_2xx": "2", "hrsp_4xx": "2",
                          "hrsp_5xx": "2"})
        a1 = rows[("app", "a1")]
        self.assertEqual({k: a1[k] for k in ("type", "status", "stot", "smax", "slim", "bout", "check_status",
                                             "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "chkfail")},
                         {"type": "2", "status": "UP", "stot": "3", "smax": "1", "slim": "50", "bout": str(self.a1_out),
                          "check_status": "passed", "hrsp_2xx": "1", "hrsp_4xx": "1", "hrsp_5xx": "1", "chkfail": "0"})
        p1 = rows[("pair", "p1")]
        self.assertEqual((p1["econ"], p1["wretr"], p1["wredis"], p1["bck"], p1["slim"], p1["check_status"]),
                         ("1", "1", "1", "0", "", ""))
        pair = rows[("pair", "BACKEND")]
        self.assertEqual((rows[("pair", "p2")]["bck"], pair["act"], pair["bck"], pair["wretr"]), ("1", "1", "1", "1"))
        self.assertEqual({k: rows[("dead", "d1")][k] for k in ("status", "chkfail", "check_status")},
                         {"status": "DOWN", "chkfail": "1", "check_status": "failed"})
        self.assertEqual({k: rows[("dead", "BACKEND")][k] for k in ("type", "status", "hrsp_5xx", "weight")},
                         {"type": "1", "status": "DOWN", "hrsp_5xx": "1", "weight": "0"})

    @defer.inlineCallbacks
    def test_unknown_stats_paths_are_404(self):  # type: ignore[no-untyped-def]
        for path in ("/stats.json/x", "/stats.xml", "/stats.csv/.."):
            response, body = yield self.admin(path)
            self.assertEqual((response.code, json.loads(body)["status"]), (404, 404), path)


class ServerCounterTests(unittest.TestCase):
    """The per-server counters, on a clock the test moves."""

    def test_time_in_state_restarts_only_when_the_state_changes(self) -> None:
        clock = MemoryReactorClock()
        clock.advance(100)
        server = Server(ServerConfig(name="s1", host="127.0.0.1", port=1), "app", clock=clock)
        clock.advance(5)
        self.assertEqual(server.state_seconds(), 5)
        server.set_up(True)  # already up: no change
        server.set_weight(3)
        self.assertEqual(server.state_seconds(), 5)
        server.set_draining(True)
        self.assertEqual((server.state, server.state_seconds()), ("drain", 0))
        clock.advance(2)
        server.set_draining(True, maintenance=True)
        self.assertEqual((server.state, server.state_seconds()), ("maint", 0))
        clock.advance(1)
        server.set_up(False)  # down underneath: still shown as maint
        self.assertEqual((server.state, server.state_seconds()), ("maint", 1))

    def test_slots_and_checks_are_counted(self) -> None:
        server = Server(ServerConfig(name="s1", host="127.0.0.1", port=1), "app")
        server.take_slot()
        server.take_slot()
        server.active -= 2
        server.take_slot()
        self.assertEqual((server.active, server.max_active, server.total), (1, 2, 3))
        server.check_done(None, 0.002)
        server.check_done("HTTP status 500", 0.02)
        self.assertEqual((server.last_check, server.last_check_seconds), ("failed", 0.02))
        self.assertEqual(server.check_results, {"passed": 1, "failed": 1})
        self.assertEqual(server.check_seconds.count, 2)
        self.assertEqual(server.state_seconds(), 0)  # no clock: no time in state

    def test_a_name_with_commas_and_quotes_stays_one_csv_field(self) -> None:
        name = 'a,"b'
        backend = Backend(BackendConfig(name=name, servers=(ServerConfig(name="s1", host="127.0.0.1", port=1),)),
                          MemoryReactorClock())
        text = stats_csv(RunningProxy([], {name: backend}, ResumeBudget()))
        rows = list(csv.DictReader(io.StringIO(text[2:])))
        self.assertEqual([(r["pxname"], r["svname"], r["status"]) for r in rows],
                         [(name, "s1", "UP"), (name, "BACKEND", "UP")])
