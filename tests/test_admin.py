"""The admin API over a real proxy built from a config: state, server actions, sessions, metrics, the token."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from io import BytesIO

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from rubrisproxy.config import CommandLine, ConfigError, load_config
from rubrisproxy.service import build_service

from .helpers import ProxyTestCase, RawClient
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AdminCase(ProxyTestCase):
    """A proxy built from a config, with two echo backends and an admin listener."""

    token: str | None = None
    def setUp(self) -> None:
        self.echoes = [EchoBackendFactory() for _ in range(2)]
        ports = []
        for factory in self.echoes:
            listener = listen_echo_backend(factory)
            self.addCleanup(listener.stopListening)
            ports.append(listener.getHost().port)
        self.ports = ports
        config = load_config(CommandLine(
            listen=["tcp:0:interface=127.0.0.1"], backends=[f"127.0.0.1:{p}" for p in ports],
            admin=["tcp:0:interface=127.0.0.1"], access_log="off", websocket="session",
        ))
        config = replace(config, admin=replace(config.admin, token=self.token))
        service = self.service = build_service(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.proxy_port = service.getServiceNamed("frontend:default").ports[0].getHost().port
        self.admin_port = service.getServiceNamed("admin").ports[0].getHost().port

    @defer.inlineCallbacks
    def call(self, method: bytes, path: str, body: object = None, token: str | None = None):  # type: ignore[no-untyped-def]
        agent = Agent(reactor)
        headers = Headers({b"authorization": [f"Bearer {token}".encode()]} if token else {})
        if method != b"GET":
            headers.addRawHeader(b"content-type", b"application/json")
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body is not None else None
        response = yield agent.request(method, f"http://127.0.0.1:{self.admin_port}{path}".encode(), headers, producer)
        answer = yield readBody(response)
        return response.code, json.loads(answer)

    def frontend(self):  # type: ignore[no-untyped-def]
        return self.service.getServiceNamed("frontend:default").frontend

    @defer.inlineCallbacks
    def metrics(self):  # type: ignore[no-untyped-def]
        """The scrape's samples by (name, sorted labels)."""
        headers = Headers({b"authorization": [f"Bearer {self.token}".encode()]} if self.token else {})
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{self.admin_port}/metrics".encode(), headers)
        text = (yield readBody(response)).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
        }


class AdminTests(AdminCase):
    @defer.inlineCallbacks
    def test_backends_and_servers_are_listed(self):  # type: ignore[no-untyped-def]
        code, body = yield self.call(b"GET", "/backends")
        self.assertEqual(code, 200)
        (backend,) = body["backends"]
        self.assertEqual(backend["name"], "default")
        self.assertEqual([s["name"] for s in backend["servers"]], ["s1", "s2"])
        self.assertEqual({s["state"] for s in backend["servers"]}, {"up"})

    @defer.inlineCallbacks
    def test_drain_moves_a_live_session_and_ready_brings_the_server_back(self):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, "/")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        client.sendMessage(b"before")
        yield client.wait_messages(1)
        (first,) = [i for i, f in enumerate(self.echoes) if f.open]
        code, server = yield self.call(b"POST", f"/backends/default/servers/s{first + 1}/drain")
        self.assertEqual((code, server["state"]), (200, "drain"))
        yield self.poll(lambda: self.echoes[1 - first].open, "the session moved")
        client.sendMessage(b"after")
        messages = yield client.wait_messages(2)
        self.assertEqual([m for m, _ in messages], [b"before", b"after"])
        self.assertFalse(client.closed.called)
        code, body = yield self.call(b"GET", "/backends/default")
        self.assertEqual(body["resumes"], 1)
        samples = yield self.metrics()
        default = (("backend", "default"),)
        self.assertEqual(samples[("rubrisproxy_resumes_total", default)], 1)
        self.assertEqual(samples[("rubrisproxy_resume_duration_seconds_count", default)], 1)
        self.assertLess(samples[("rubrisproxy_resume_duration_seconds_sum", default)], 5)
        drained = (("backend", "default"), ("server", f"s{first + 1}"))
        self.assertEqual({state: samples[("rubrisproxy_server_state", (*drained, ("state", state)))]
                          for state in ("up", "down", "drain", "maint")}, {"up": 0, "down": 0, "drain": 1, "maint": 0})
        self.assertEqual(samples[("rubrisproxy_server_up", drained)], 0)
        code, server = yield self.call(b"POST", f"/backends/default/servers/s{first + 1}/ready")
        self.assertEqual((code, server["state"]), (200, "up"))
        client.sendClose(1000)
        yield client.closed

    @defer.inlineCallbacks
    def test_errors_are_json_with_a_status(self):  # type: ignore[no-untyped-def]
        for method, path, status in [
            (b"GET", "/nothing", 404),
            (b"GET", "/backends/nope", 404),
            (b"POST", "/backends/default/servers/s9/drain", 404),
            (b"POST", "/backends/default/servers/s1/explode", 404),
            (b"PUT", "/backends", 405),
        ]:
            code, body = yield self.call(method, path)
            self.assertEqual(code, status, path)
            self.assertEqual(body["status"], status)
            self.assertTrue(body["error"])

    @defer.inlineCallbacks
    def test_frontends_are_listed_and_the_404_names_them(self):  # type: ignore[no-untyped-def]
        code, body = yield self.call(b"GET", "/frontends")
        self.assertEqual(code, 200)
        (frontend,) = body["frontends"]
        self.assertEqual(set(frontend), {"name", "connections", "accepted", "requests", "websockets", "bytes_in",
                                         "bytes_out", "responses", "proxy_responses", "terminations", "connection_ends", "peers",
                                         "client_sessions", "rate_limits"})
        self.assertEqual((frontend["name"], frontend["peers"], frontend["client_sessions"]), ("default", "local", None))
        self.assertEqual(frontend["rate_limits"], [])
        code, body = yield self.call(b"GET", "/nothing")
        self.assertEqual(code, 404)
        self.assertIn("/frontends", body["error"])

    @defer.inlineCallbacks
    def test_metrics_count_known_traffic(self):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, "/")
        yield client.opened
        client.sendMessage(b"hello")
        yield client.wait_messages(1)
        client.sendClose(1000)
        yield client.closed
        raw = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), raw)
        raw.send(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n")
        yield raw.closed
        yield self.poll(lambda: not self.frontend().connections and not self.frontend().websockets, "closed")
        agent = Agent(reactor)
        headers = Headers({b"authorization": [f"Bearer {self.token}".encode()]} if self.token else {})
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.admin_port}/metrics".encode(), headers)
        self.assertEqual(response.headers.getRawHeaders(b"content-type")[0].split(b";")[0], b"text/plain")
        text = (yield readBody(response)).decode()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
        }
        frontend = (("frontend", "default"),)
        self.assertEqual(samples[("rubrisproxy_requests_total", frontend)], 1)  # the upgrade; the bad one never parsed
        self.assertEqual(samples[("rubrisproxy_connections_total", frontend)], 2)
        self.assertEqual(samples[("rubrisproxy_terminations_total", (("frontend", "default"), ("reason", "bad-request")))], 1)
        self.assertEqual(samples[("rubrisproxy_terminations_total", (("frontend", "default"), ("reason", "client-close")))], 1)
        # Every byte read from the clients: the bad request, the WebSocket's handshake (over 100 bytes), its
        # "hello" frame (6 bytes of header, masked) and its close frame (8).
        bad = len(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n")
        read = samples[("rubrisproxy_bytes_total", (("direction", "in"), ("frontend", "default")))]
        self.assertGreater(read, bad + 100 + 5 + 6 + 8)
        self.assertLess(read, bad + 1000)
        written = samples[("rubrisproxy_bytes_total", (("direction", "out"), ("frontend", "default")))]
        self.assertGreater(written, len(b"HTTP/1.1 101 Switching Protocols\r\n") + 5 + 2 + 4)  # the 101, echo, close
        ends = {"client-close": 1, "protocol-read-error": 1}  # the WebSocket the client closed, the bad request
        for reason, count in ends.items():
            self.assertEqual(samples[("rubrisproxy_connection_ends_total", (("frontend", "default"), ("reason", reason)))],
                             count)
        self.assertEqual(samples[("rubrisproxy_request_duration_seconds_count", frontend)], 1)
        server = next(s for s in ("s1", "s2")
                      if ("rubrisproxy_responses_total", (("backend", "default"), ("code", "1xx"), ("server", s))) in samples)
        self.assertEqual(samples[("rubrisproxy_responses_total", (("backend", "default"), ("code", "1xx"), ("server", server)))], 1)
        self.assertEqual(samples[("rubrisproxy_server_up", (("backend", "default"), ("server", server)))], 1)
        self.assertEqual(samples[("rubrisproxy_connect_duration_seconds_count", (("backend", "default"),))], 1)
        self.assertEqual(samples[("rubrisproxy_resumes_total", (("backend", "default"),))], 0)
        self.assertEqual(samples[("rubrisproxy_websockets", (("frontend", "default"), ("mode", "session")))], 0)

    @defer.inlineCallbacks
    def test_maint_weight_add_and_remove(self):  # type: ignore[no-untyped-def]
        code, server = yield self.call(b"POST", "/backends/default/servers/s1/maint")
        self.assertEqual((code, server["state"]), (200, "maint"))
        code, server = yield self.call(b"POST", "/backends/default/servers/s1/ready")
        self.assertEqual(server["state"], "up")
        code, server = yield self.call(b"POST", "/backends/default/servers/s2/weight", {"weight": 5})
        self.assertEqual((code, server["weight"]), (200, 5))
        for bad in ({"weight": 300}, {"weight": "5"}, {}):
            code, error = yield self.call(b"POST", "/backends/default/servers/s2/weight", bad)
            self.assertEqual(code, 400, bad)
        code, added = yield self.call(b"POST", "/backends/default/servers",
                                      {"name": "s3", "address": f"127.0.0.1:{self.ports[0]}", "weight": 2})
        self.assertEqual((code, added["name"], added["weight"], added["state"]), (200, "s3", 2, "up"))
        for bad, status in [({"name": "s3", "address": "127.0.0.1:1"}, 400), ({"name": "x", "address": "nope:"}, 400),
                            ({"name": "y"}, 400), ({"name": "z", "address": "127.0.0.1:1", "colour": 1}, 400)]:
            code, error = yield self.call(b"POST", "/backends/default/servers", bad)
            self.assertEqual(code, status, bad)
            self.assertTrue(error["error"])
        code, error = yield self.call(b"POST", "/backends/default/servers", {"name": "p0", "address": "127.0.0.1:0"})
        self.assertEqual((code, error["error"]), (400, "address: port must be from 1 to 65535, got 0 in '127.0.0.1:0'"))
        code, removed = yield self.call(b"DELETE", "/backends/default/servers/s3")
        self.assertEqual(code, 200)
        code, backend = yield self.call(b"GET", "/backends/default")
        self.assertEqual([s["name"] for s in backend["servers"]], ["s1", "s2"])
        code, error = yield self.call(b"DELETE", "/backends/default/servers/s3")
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_removing_a_server_moves_its_sessions_and_sessions_are_listed(self):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, "/")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        (first,) = [i for i, f in enumerate(self.echoes) if f.open]
        code, body = yield self.call(b"GET", "/sessions")
        (session,) = body["sessions"]
        self.assertEqual((session["server"], session["state"], session["frontend"]), (f"s{first + 1}", "open", "default"))
        yield self.call(b"DELETE", f"/backends/default/servers/s{first + 1}")
        yield self.poll(lambda: self.echoes[1 - first].open, "the session moved")
        code, body = yield self.call(b"GET", "/sessions")
        self.assertEqual((body["sessions"][0]["server"], body["sessions"][0]["resumes"]), (f"s{2 - first}", 1))
        client.sendClose(1000)
        yield client.closed


class BadInputTests(AdminCase):
    @defer.inlineCallbacks
    def test_odd_names_and_bodies_get_json_errors(self):  # type: ignore[no-untyped-def]
        for body in ({"name": "s/3", "address": "127.0.0.1:1"}, {"name": "\ud800", "address": "127.0.0.1:1"},
                     {"name": "", "address": "127.0.0.1:1"}, [1, 2], "text"):
            code, error = yield self.call(b"POST", "/backends/default/servers", body)
            self.assertEqual((code, error["status"]), (400, 400), body)
        agent = Agent(reactor)
        nested = FileBodyProducer(BytesIO(b"[" * 60000))
        response = yield agent.request(b"POST", f"http://127.0.0.1:{self.admin_port}/backends/default/servers".encode(),
                                       Headers({b"content-type": [b"application/json"]}), nested)
        self.assertEqual((response.code, json.loads((yield readBody(response)))["status"]), (400, 400))
        code, metrics_ok = yield self.call(b"GET", "/backends")
        self.assertEqual(code, 200)

    def test_a_repeated_interface_cannot_open_the_listener_without_a_token(self) -> None:
        for endpoint in ("tcp:9000:interface=127.0.0.1:interface=0.0.0.0", "systemd:domain=INET:index=0"):
            with self.assertRaises(ConfigError):
                load_config(CommandLine(backends=["127.0.0.1:1"], admin=[endpoint]))
        load_config(CommandLine(backends=["127.0.0.1:1"], admin=["unix:/tmp/rubrisproxy-admin.sock"]))


class TokenTests(AdminTests):
    """The same API, behind a bearer token."""

    token = "a-long-enough-admin-token"

    @defer.inlineCallbacks
    def call(self, method: bytes, path: str, body: object = None, token: str | None = None):  # type: ignore[no-untyped-def]
        return (yield AdminTests.call(self, method, path, body, token or self.token))

    @defer.inlineCallbacks
    def test_calls_without_the_token_are_refused(self):  # type: ignore[no-untyped-def]
        for path in ("/backends", "/stats.json", "/stats.csv", "/metrics"):
            code, body = yield AdminTests.call(self, b"GET", path, None, None)
            self.assertEqual((code, body["status"]), (401, 401), path)
        agent = Agent(reactor)
        lower = Headers({b"authorization": [f"bearer {self.token}".encode()]})  # the scheme is case-insensitive
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.admin_port}/backends".encode(), lower)
        self.assertEqual(response.code, 200)
        yield readBody(response)
        for token in (None, "wrong-token-of-some-length"):
            code, error = yield AdminTests.call(self, b"POST", "/backends/default/servers/s1/drain", None, token)
            self.assertEqual((code, error["status"]), (401, 401))
        code, backend = yield self.call(b"GET", "/backends/default")
        self.assertEqual({s["state"] for s in backend["servers"]}, {"up"})

    def test_an_admin_listener_off_loopback_needs_a_token(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(backends=["127.0.0.1:1"], admin=["tcp:9000"]))
        self.assertIn("admin.listen", str(caught.exception))


class CtlTests(AdminCase):
    """``rubrisproxy ctl`` against the running admin API, as a separate process."""

    timeout = 120  # six Python processes, one after another: a guard for a loaded machine

    @defer.inlineCallbacks
    def ctl(self, *args: str):  # type: ignore[no-untyped-def]
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "rubrisproxy.ctl", "ctl", "--admin", f"http://127.0.0.1:{self.admin_port}", *args],
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        return out.decode(), err.decode(), code

    @defer.inlineCallbacks
    def test_status_drain_ready_and_errors(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.ctl("status")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:4], ["BACKEND", "SERVER", "ADDRESS", "STATE"])
        self.assertEqual([line.split()[:4] for line in lines[1:3]],
                         [["default", f"s{i + 1}", f"127.0.0.1:{p}", "up"] for i, p in enumerate(self.ports)])
        out, err, code = yield self.ctl("drain", "default/s1")
        self.assertEqual((code, out.strip()), (0, "default/s1: drain, weight 1, 0 sessions"))
        out, err, code = yield self.ctl("weight", "default/s2", "7")
        self.assertIn("weight 7", out)
        out, err, code = yield self.ctl("ready", "default/s1")
        self.assertIn("default/s1: up", out)
        out, err, code = yield self.ctl("drain", "default/s9")
        self.assertEqual(code, 1)
        self.assertIn("404", err)
        out, err, code = yield self.ctl("drain", "no-slash")  # the one backend's (tests/test_ctl.py)
        self.assertEqual(code, 1)
        self.assertIn("404: backend default has no server 'no-slash'", err)
