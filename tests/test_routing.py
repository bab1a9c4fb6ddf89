"""Routes: conditions, first match wins, deny; the HAProxy-style example config, loaded and exercised."""

from __future__ import annotations

import os
import re

from twisted.internet import defer, reactor
from twisted.trial import unittest

from rubrisproxy.backend import Backend
from rubrisproxy.config import BackendConfig, CommandLine, ConfigError, RouteConfig, config_from_document, load_config
from rubrisproxy.http import RequestHead
from rubrisproxy.routing import Router
from rubrisproxy.service import build_service

from .helpers import EchoResource, ProxyTestCase

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples", "web-and-websocket.toml")


def head(target: bytes = b"/", host: bytes = b"example.com", method: bytes = b"GET", extra=()) -> RequestHead:  # type: ignore[no-untyped-def]
    headers = [(b"Host", host), *extra]
    request = RequestHead(method, target, b"1.1", headers)
    request.host = host
    for name, value in extra:
        if name.lower() == b"connection":
            request.connection = frozenset(t.strip().lower() for t in value.split(b","))
    return request


class RouterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.backends = {name: Backend(BackendConfig(name)) for name in ("web", "api", "ws", "static", "canary")}
        routes = [
            RouteConfig(path_regex=r"^/internal/", deny=403),
            RouteConfig(websocket=True, backend="ws"),
            RouteConfig(host="api.example.com", backend="api"),
            RouteConfig(host_suffix=".cdn.example.com", path_prefix="/assets/", backend="static"),
            RouteConfig(host_prefix="beta.", header="X-Canary", value="1", backend="canary"),
            RouteConfig(header="X-Debug", methods=("POST",), backend="canary"),
        ]
        self.router = Router(routes, self.backends, self.backends["web"])

    def routed(self, request: RequestHead) -> str | int:
        target = self.router.route(request)
        return target if isinstance(target, int) else target.name

    def test_each_condition(self):
        self.assertEqual(self.routed(head(b"/internal/x")), 403)
        upgrade = [(b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket")]
        self.assertEqual(self.routed(head(b"/chat", extra=upgrade)), "ws")
        self.assertEqual(self.routed(head(host=b"API.example.com:8443")), "api")
        self.assertEqual(self.routed(head(b"/assets/a.css", host=b"eu.cdn.example.com")), "static")
        self.assertEqual(self.routed(head(b"/other", host=b"eu.cdn.example.com")), "web")
        self.assertEqual(self.routed(head(host=b"beta.example.com", extra=[(b"X-Canary", b"1")])), "canary")
        self.assertEqual(self.routed(head(host=b"beta.example.com", extra=[(b"X-Canary", b"0")])), "web")
        self.assertEqual(self.routed(head(method=b"POST", extra=[(b"X-Debug", b"")])), "canary")
        self.assertEqual(self.routed(head(method=b"GET", extra=[(b"X-Debug", b"")])), "web")

    def test_subprotocol_routes_and_websocket_rules(self):
        backends = {name: Backend(BackendConfig(name)) for name in ("web", "chat")}
        routes = [RouteConfig(subprotocol="chat.v2", backend="chat", origins=("https://a.example",),
                              subprotocols=("chat.v2",))]
        router = Router(routes, backends, backends["web"])
        offers = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Protocol", b"chat.v1, chat.v2")]
        request = head(b"/ws", extra=offers)
        self.assertEqual(router.route(request).name, "chat")  # type: ignore[union-attr]
        self.assertEqual(router.websocket_rules(request, backends["chat"]), (("https://a.example",), ("chat.v2",)))
        other = head(b"/ws", extra=offers[:2] + [(b"Sec-WebSocket-Protocol", b"chat.v1")])
        self.assertEqual(router.route(other).name, "web")  # type: ignore[union-attr]
        self.assertEqual(router.websocket_rules(other, backends["web"]), ((), ()))  # the backend's: none set

    def test_first_match_wins(self):
        upgrade = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
        self.assertEqual(self.routed(head(b"/internal/ws", extra=upgrade)), 403)

    def test_absolute_form_target(self):
        self.assertEqual(self.routed(head(b"http://api.example.com/v1", host=b"ignored")), "api")

    def test_route_config_errors_name_the_key(self):
        base = {"backends": {"app": {}}, "frontends": {"web": {"backend": "app"}}}
        for route, key in [
            ({"backend": "nope"}, "frontends.web.routes[0].backend"),
            ({"path-prefix": "/a"}, "frontends.web.routes[0]"),
            ({"deny": 200}, "frontends.web.routes[0].deny"),
            ({"path-regex": "(", "deny": 403}, "frontends.web.routes[0].path-regex"),
            ({"path-prefix": "internal", "deny": 403}, "frontends.web.routes[0].path-prefix"),
            ({"hots": "a", "deny": 403}, "frontends.web.routes[0].hots"),
        ]:
            document = {**base, "frontends": {"web": {"backend": "app", "routes": [route]}}}
            with self.assertRaises(ConfigError) as caught:
                config_from_document(document)
            self.assertEqual(caught.exception.key, key)

    def test_server_and_backend_options(self):
        config = load_config(CommandLine(config_path=EXAMPLE))
        web = config.backends["web"]
        self.assertEqual([(s.name, s.weight, s.backup) for s in web.servers],
                         [("web1", 2, False), ("web2", 1, False), ("sorry", 1, True)])
        self.assertEqual(config.backends["api"].balance, "leastconn")
        self.assertEqual(config.backends["api"].servers[0].maxconn, 100)
        with self.assertRaises(ConfigError) as caught:
            config_from_document({"backends": {"app": {"balance": "fastest"}}})
        self.assertEqual(caught.exception.key, "backends.app.balance")


class ExampleConfigTests(ProxyTestCase):
    """The example config, its server addresses pointed at real origins on loopback, routes real requests."""

    @defer.inlineCallbacks
    def test_example_routes_real_requests(self):
        with open(EXAMPLE) as f:
            text = f.read()
        for name, address in re.findall(r'name = "(\w+)", address = "(127\.0\.0\.1:\d+)"', text):
            text = text.replace(address, f"127.0.0.1:{self.start_web_origin(NamedOrigin(name))}")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        config = load_config(CommandLine(config_path=path, listen=["tcp:0:interface=127.0.0.1"]))
        service = build_service(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.proxy_port = service.getServiceNamed("frontend:public").ports[0].getHost().port

        def get(path: bytes, host: bytes = b"www.example.com", extra: bytes = b"") -> bytes:
            return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"

        responses = yield self.request(
            get(b"/") + get(b"/") + get(b"/") + get(b"/api/users") + get(b"/", b"ws.example.com")
            + get(b"/internal/secrets"),
            count=6,
        )
        served = [r.body.decode() for r in responses]
        self.assertEqual(sorted(served[:3]), ["web1", "web1", "web2"])  # weight 2 : 1
        self.assertIn(served[3], ("api1", "api2"))
        self.assertIn(served[4], ("ws1", "ws2"))
        self.assertEqual(responses[5].status, 403)
        # An upgrade the (plain HTTP) origin declines comes back as the origin's own answer.
        upgrade = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        (declined,) = yield self.request(get(b"/chat", extra=upgrade + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
        self.assertEqual(declined.body.decode(), served[4])  # balance source: the same client, the same server


class NamedOrigin(EchoResource):
    """Answers every request with its own name."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name.encode()

    def render(self, request):  # type: ignore[no-untyped-def]
        return self.name
