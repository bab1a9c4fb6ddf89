"""``rubrisproxy ctl`` as a separate process against a real admin listener: frontends, health, adding and
removing servers, a server named alone; and ``GET /healthz``."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from rubrisproxy.config import config_from_document
from rubrisproxy.service import build_service

from . import test_admin
from .helpers import ProxyTestCase


class CtlServerTests(test_admin.AdminCase):
    """One backend (``default``, servers s1 and s2) behind an admin listener without a token."""

    ctl = test_admin.CtlTests.ctl

    @defer.inlineCallbacks
    def servers(self):  # type: ignore[no-untyped-def]
        code, backend = yield self.call(b"GET", "/backends/default")
        self.assertEqual(code, 200)
        return {s["name"]: s for s in backend["servers"]}

    @defer.inlineCallbacks
    def test_add_and_remove_a_server_named_alone(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.ctl("add", "s3", f"127.0.0.1:{self.ports[0]}", "--weight", "2", "--maxconn", "5")
        self.assertEqual((code, out.strip()), (0, f"default/s3 added at 127.0.0.1:{self.ports[0]}: up, weight 2"), err)
        servers = yield self.servers()
        self.assertEqual((servers["s3"]["weight"], servers["s3"]["address"]), (2, f"127.0.0.1:{self.ports[0]}"))
        self.assertEqual(self.service.parts.backends["default"].servers[-1].config.maxconn, 5)
        out, err, code = yield self.ctl("add", "default/b1", "127.0.0.1:1", "--backup")
        self.assertEqual(code, 0, err)
        self.assertTrue(self.service.parts.backends["default"].servers[-1].config.backup)
        out, err, code = yield self.ctl("remove", "s3")
        self.assertEqual((code, out.strip()), (0, "default/s3 removed (0 sessions moving, 0 in progress)"), err)
        out, err, code = yield self.ctl("remove", "default/b1")
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted((yield self.servers())), ["s1", "s2"])

    @defer.inlineCallbacks
    def test_refusals_print_the_api_message_and_change_nothing(self):  # type: ignore[no-untyped-def]
        for args, message in [
            (("add", "s1", "127.0.0.1:1"), "400"),  # the name is taken
            (("add", "s4", "nope:"), "400: address"),
            (("add", "s4", "127.0.0.1:1", "--weight", "300"), "weight must be"),
            (("add", "s/4", "127.0.0.1:1"), "404: no backend named 's'"),
            (("add", "bad name?", "127.0.0.1:1"), "400: expected a JSON object with a name"),
            (("remove", "../reload"), "404: no backend named '..'"),
            (("remove", "s9"), "404"),
            (("remove", "default/"), "expected BACKEND/SERVER"),
            (("drain", ""), "expected BACKEND/SERVER"),
        ]:
            out, err, code = yield self.ctl(*args)
            self.assertEqual((code, out), (1, ""), args)
            self.assertIn(message, err, args)
            self.assertTrue(err.startswith("rubrisproxy ctl: "), err)
        self.assertEqual(sorted((yield self.servers())), ["s1", "s2"])

    @defer.inlineCallbacks
    def test_drain_and_weight_take_a_server_named_alone(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.ctl("drain", "s1")
        self.assertEqual((code, out.strip()), (0, "default/s1: drain, weight 1, 0 sessions"), err)
        out, err, code = yield self.ctl("weight", "s2", "4")
        self.assertEqual((code, out.strip()), (0, "default/s2: up, weight 4, 0 sessions"), err)
        servers = yield self.servers()
        self.assertEqual((servers["s1"]["state"], servers["s2"]["weight"]), ("drain", 4))

    @defer.inlineCallbacks
    def test_frontends_are_a_table(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.ctl("frontends")
        self.assertEqual(code, 0, err)
        header, row = out.splitlines()
        self.assertEqual(header.split(), ["FRONTEND", "PEERS", "OPEN", "ACCEPTED", "REQUESTS", "WEBSOCKETS", "BYTES",
                                          "IN", "BYTES", "OUT", "CLIENTS"])
        self.assertEqual(row.split(), ["default", "local", "0", "0", "0", "0", "0", "0", "-"])

    @defer.inlineCallbacks
    def test_health_is_ok_and_a_dead_proxy_fails_it(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.ctl("health")
        self.assertEqual((code, out.strip()), (0, "ok"), err)
        yield self.service.getServiceNamed("admin").stop_listening()
        out, err, code = yield self.ctl("health")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("cannot reach the admin API", err)


class HealthzTokenTests(test_admin.AdminCase):
    """With a token, ``/healthz`` still needs none; everything else does."""

    token = "a-long-enough-admin-token"
    ctl = test_admin.CtlTests.ctl

    @defer.inlineCallbacks
    def test_healthz_needs_no_token_and_says_nothing_else(self):  # type: ignore[no-untyped-def]
        code, body = yield self.call(b"GET", "/healthz")
        self.assertEqual((code, body), (200, {"status": "ok"}))
        response = yield Agent(reactor).request(b"HEAD", f"http://127.0.0.1:{self.admin_port}/healthz".encode())
        self.assertEqual((response.code, (yield readBody(response))), (200, b""))
        for method in (b"POST", b"DELETE"):  # only a read is health
            response = yield Agent(reactor).request(
                method, f"http://127.0.0.1:{self.admin_port}/healthz".encode(),
                Headers({b"content-type": [b"application/json"]}))
            self.assertEqual(response.code, 401, method)
            yield readBody(response)
        out, err, code = yield self.ctl("health")
        self.assertEqual((code, out.strip()), (0, "ok"), err)
        out, err, code = yield self.ctl("status")
        self.assertEqual(code, 1)
        self.assertIn("401", err)


class TwoBackendsTests(ProxyTestCase):
    """A server named alone is refused when there are several backends: nothing is guessed."""

    ctl = test_admin.CtlTests.ctl

    def setUp(self) -> None:
        config = config_from_document({
            "access-log": {"enabled": False},
            "admin": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "frontends": {"web": {"listen": ["tcp:0:interface=127.0.0.1"], "backend": "app",
                                  "routes": [{"path-prefix": "/api/", "backend": "api"}]}},
            "backends": {"app": {"servers": ["127.0.0.1:1"], "health": {"check": "none"}},
                         "api": {"servers": ["127.0.0.1:2"], "health": {"check": "none"}}},
        })
        self.service = build_service(config, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.admin_port = self.service.getServiceNamed("admin").ports[0].getHost().port

    @defer.inlineCallbacks
    def test_a_bare_server_name_needs_a_backend(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.ctl("drain", "s1")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("there are 2 backends (app, api): name one, as BACKEND/SERVER, not 's1'", err)
        self.assertEqual(self.service.parts.backends["app"].servers[0].state, "up")
        out, err, code = yield self.ctl("drain", "api/s1")
        self.assertEqual((code, out.strip()), (0, "api/s1: drain, weight 1, 0 sessions"), err)
