"""Reload in place: a changed config file applied to the running proxy, with nothing dropped."""

from __future__ import annotations

import json
import os
import signal
import sys

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from rubrisproxy.config import CommandLine, ConfigError, load_config
from rubrisproxy.http import RequestHead
from rubrisproxy.listening import ListeningService, ListenSettings
from rubrisproxy.reload import Reloader
from rubrisproxy.service import build_service

from .helpers import ProxyTestCase, RawClient, get, run_reactor_for
from .test_admin import ROOT
from .test_routing import NamedOrigin
from .test_tls_origin import tls_listen_endpoint
from .test_websocket import EXAMPLES  # noqa: F401 - puts docs/examples on sys.path
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

CONFIG = """
[admin]
listen = ["tcp:0:interface=127.0.0.1"]

[timeouts]
client = "{client}"

[frontends.web]
listen = ["tcp:0:interface=127.0.0.1"]
backend = "web"
{routes}

[backends.web]
servers = [{web}]

[backends.ws]
servers = [{ws}]
websocket = {{ mode = "session", client-ping-interval = 0, backend-ping-interval = 0 }}
{extra}
"""


class ReloadTests(ProxyTestCase):
    def setUp(self) -> None:
        self.web_ports = {name: self.start_web_origin(NamedOrigin(name)) for name in ("w1", "w2", "w3")}
        self.echoes = {name: EchoBackendFactory() for name in ("e1", "e2")}
        self.ws_ports = {}
        for name, factory in self.echoes.items():
            listener = listen_echo_backend(factory)
            self.addCleanup(listener.stopListening)
            self.ws_ports[name] = listener.getHost().port
        self.path = self.mktemp()
        self.write(web=("w1", "w2"), ws=("e1", "e2"))
        self.command_line = CommandLine(config_path=self.path, access_log="off")
        self.service = build_service(load_config(self.command_line), reactor, self.command_line)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.parts = self.service.parts
        self.proxy_port = self.parts.frontends["web"].ports[0].getHost().port

    def write(self, web: tuple[str, ...], ws: tuple[str, ...], client: str = "30s", routes: str = "",
              weights: dict[str, int] | None = None, extra: str = "") -> None:
        def servers(names: tuple[str, ...], ports: dict[str, int]) -> str:
            return ", ".join(
                f'{{ name = "{n}", address = "127.0.0.1:{ports[n]}", weight = {(weights or {}).get(n, 1)} }}'
                for n in names
            )
        websocket_route = '[[frontends.web.routes]]\nwebsocket = true\nbackend = "ws"\n'
        with open(self.path, "w") as f:
            f.write(CONFIG.format(client=client, routes=routes + websocket_route, web=servers(web, self.web_ports),
                                  ws=servers(ws, self.ws_ports), extra=extra))

    def reload(self) -> list[str]:
        return Reloader(self.parts, self.command_line).reload()

    @defer.inlineCallbacks
    def test_each_kind_of_change_is_applied(self):  # type: ignore[no-untyped-def]
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(get(b"/blocked"))
        (before,) = yield client.responses(1)
        self.assertEqual(before.status, 200)
        self.write(web=("w2", "w3"), ws=("e1", "e2"), client="12s", weights={"w2": 5},
                   routes='[[frontends.web.routes]]\npath-prefix = "/blocked"\ndeny = 403\n',
                   extra='[frontends.extra]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "web"\n')
        changes = self.reload()
        self.assertIn("timeouts and limits", changes)
        self.assertIn("backend web reconfigured", changes)
        self.assertIn("frontend web reconfigured", changes)
        self.assertIn("frontend extra added", changes)
        web = self.parts.backends["web"]
        self.assertEqual([(s.name, s.weight) for s in web.servers], [("w2", 5), ("w3", 1)])
        self.assertEqual(self.parts.frontends["web"].frontend.timeouts.client, 12)
        client.send(get(b"/other") + get(b"/blocked"))  # the same keep-alive connection, new routes
        responses = yield client.responses(3)
        self.assertIn(responses[1].body, (b"w2", b"w3"))
        self.assertEqual(responses[2].status, 403)
        extra_port = self.parts.frontends["extra"].ports[0].getHost().port
        (answer,) = yield self.request_to(extra_port, get(b"/x"))
        self.assertEqual(answer.status, 200)

    @defer.inlineCallbacks
    def request_to(self, port: int, data: bytes):  # type: ignore[no-untyped-def]
        saved, self.proxy_port = self.proxy_port, port
        try:
            responses = yield self.request(data)
        finally:
            self.proxy_port = saved
        return responses

    @defer.inlineCallbacks
    def test_peers_change_for_new_connections_and_open_ones_keep_their_kind(self):  # type: ignore[no-untyped-def]
        before = yield self.connect()
        before.send(get(b"/a"))
        yield before.responses(1)
        self.write(web=("w1", "w2"), ws=("e1", "e2"),
                   routes='peers = "proxied"\ntrusted-proxies = ["127.0.0.0/8"]\n')
        self.assertIn("frontend web: new connections are proxied", self.reload())
        after = yield self.connect()
        after.send(get(b"/b", b"X-Forwarded-For: 203.0.113.9\r\n"))
        yield after.responses(1)
        connections = self.parts.frontends["web"].frontend.connections
        forwarded = RequestHead(b"GET", b"/", b"1.1", [(b"Host", b"x"), (b"X-Forwarded-For", b"203.0.113.9")])
        kinds = sorted((type(c).__name__, c.client_of(forwarded)) for c in connections if c.requests)
        self.assertEqual(kinds, [("ClientConnection", "127.0.0.1"), ("ProxiedConnection", "203.0.113.9")])
        before.send(get(b"/c"))  # the open connection still serves, as it was
        (answer,) = yield before.responses(1)
        self.assertEqual(answer.status, 200)

    def test_a_bad_file_changes_nothing(self) -> None:
        with open(self.path, "a") as f:
            f.write("\n[backends.web.health]\ncheck = \"sometimes\"\n")
        with self.assertRaises(ConfigError) as caught:
            self.reload()
        self.assertIn("backends.web.health.check", str(caught.exception))
        self.assertEqual([s.name for s in self.parts.backends["web"].servers], ["w1", "w2"])

    def test_handlers_keep_their_state_unless_their_configuration_changes(self) -> None:
        handlers = 'handlers = ["lifecycle_handlers.SourceLimit"]\n'
        self.write(web=("w1", "w2"), ws=("e1", "e2"), routes=handlers)
        self.reload()
        frontend = self.parts.frontends["web"].frontend
        (first,) = frontend.handlers.opened
        self.write(web=("w1",), ws=("e1", "e2"), routes=handlers)
        self.reload()
        self.assertIs(frontend.handlers.opened[0], first)
        self.write(web=("w1",), ws=("e1", "e2"), routes='handlers = ["lifecycle_handlers.SessionAudit"]\n')
        self.reload()
        self.assertEqual(frontend.handlers.opened, ())

    def test_a_handler_that_cannot_be_built_changes_nothing(self) -> None:
        self.write(web=("w1",), ws=("e1", "e2"), routes='handlers = ["collections.OrderedDict"]\n')
        with self.assertRaises(ConfigError) as caught:
            self.reload()
        self.assertEqual(caught.exception.key, "frontends.web.handlers[0]")
        self.assertEqual([s.name for s in self.parts.backends["web"].servers], ["w1", "w2"])

    @defer.inlineCallbacks
    def test_no_websocket_or_keep_alive_client_is_dropped(self):  # type: ignore[no-untyped-def]
        sessions = []
        for _ in range(200):
            client = connect_client(self.proxy_port, "/live")
            self.addCleanup(lambda c=client: c.transport.abortConnection() if c.transport.connected else None)
            sessions.append(client)
        yield defer.gatherResults([client.opened for client in sessions])
        keep_alive = []
        for _ in range(50):
            client = yield self.connect()
            client.send(get(b"/a"))
            keep_alive.append(client)
        yield defer.gatherResults([client.responses(1) for client in keep_alive])
        on_e1 = len(self.echoes["e1"].open)
        self.assertTrue(0 < on_e1 < 200)
        self.write(web=("w1", "w3"), ws=("e2",),
                   routes='[[frontends.web.routes]]\npath-prefix = "/new"\ndeny = 410\n')
        self.reload()
        yield self.poll(lambda: len(self.echoes["e2"].open) == 200, "every session on e2", ticks=1000)
        for client in sessions:
            client.sendMessage(b"after")
        yield defer.gatherResults([client.wait_messages(1) for client in sessions])
        self.assertFalse(any(client.closed.called for client in sessions))
        for client in keep_alive:
            client.send(get(b"/new"))
        answers = yield defer.gatherResults([client.responses(2) for client in keep_alive])
        self.assertEqual({answer[1].status for answer in answers}, {410})
        self.assertEqual(self.parts.backends["ws"].resumes, on_e1)

    @defer.inlineCallbacks
    def test_sighup_reloads(self):  # type: ignore[no-untyped-def]
        self.write(web=("w3",), ws=("e1", "e2"))
        os.kill(os.getpid(), signal.SIGHUP)
        yield self.poll(lambda: [s.name for s in self.parts.backends["web"].servers] == ["w3"], "the reload")

    @defer.inlineCallbacks
    def test_the_admin_api_reloads_and_reports_a_bad_file(self):  # type: ignore[no-untyped-def]
        admin = self.service.getServiceNamed("admin").ports[0].getHost().port
        self.write(web=("w1",), ws=("e1", "e2"))
        code, body = yield self.post(admin, "/reload")
        self.assertEqual((code, body["changes"]), (200, ["backend web reconfigured"]))
        with open(self.path, "a") as f:
            f.write("\nnonsense = 1\n")
        code, body = yield self.post(admin, "/reload")
        self.assertEqual(code, 400)
        self.assertIn("nonsense", body["error"])
        self.assertEqual([s.name for s in self.parts.backends["web"].servers], ["w1"])

    @defer.inlineCallbacks
    def post(self, port: int, path: str):  # type: ignore[no-untyped-def]
        response = yield Agent(reactor).request(b"POST", f"http://127.0.0.1:{port}{path}".encode(),
                                                Headers({b"content-type": [b"application/json"]}))
        return response.code, json.loads((yield readBody(response)))

    @defer.inlineCallbacks
    def test_the_stick_table_is_shown_and_survives_a_reload(self):  # type: ignore[no-untyped-def]
        stick = '[backends.web.stick]\non = "header(X-User)"\n'
        self.write(web=("w1", "w2"), ws=("e1", "e2"), extra=stick)
        self.reload()
        answers = yield self.request(get(b"/", b"X-User: ann\r\n") + get(b"/", b"X-User: bob\r\n"), count=2)
        admin = self.service.getServiceNamed("admin").ports[0].getHost().port
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{admin}/backends/web/stick".encode())
        table = json.loads((yield readBody(response)))
        self.assertEqual({(e["key"], e["server"]) for e in table["entries"]},
                         {("ann", answers[0].body.decode()), ("bob", answers[1].body.decode())})
        self.write(web=("w1", "w2", "w3"), ws=("e1", "e2"), extra=stick)  # servers change, the table stays
        self.reload()
        self.assertEqual(len(self.parts.backends["web"].table.store), 2)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "rubrisproxy.ctl", "ctl", "--admin", f"http://127.0.0.1:{admin}", "reload"],
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.assertEqual((code, out.decode().strip()), (0, "nothing changed"), err)

    @defer.inlineCallbacks
    def test_backends_and_frontends_come_and_go_and_health_stays(self):  # type: ignore[no-untyped-def]
        self.parts.backends["web"].servers[0].set_up(False)  # as a failed health check leaves it
        added = ('[backends.api]\nservers = ["127.0.0.1:%d"]\n\n[frontends.extra]\n'
                 'listen = ["tcp:0:interface=127.0.0.1"]\nbackend = "api"\n') % self.web_ports["w3"]
        self.write(web=("w1", "w2"), ws=("e1", "e2"), extra=added)
        changes = self.reload()
        self.assertIn("backend api added", changes)
        self.assertIn("frontend extra added", changes)
        self.assertFalse(self.parts.backends["web"].servers[0].up)  # health state survived the reload
        extra = self.parts.frontends["extra"]
        port = extra.ports[0].getHost().port
        (answer,) = yield self.request_to(port, get(b"/"))
        self.assertEqual(answer.body, b"w3")
        self.write(web=("w1", "w2"), ws=("e1", "e2"))
        changes = self.reload()
        self.assertIn("backend api removed", changes)
        self.assertIn("frontend extra removed", changes)
        self.assertNotIn("api", self.parts.backends)
        yield self.poll(lambda: not extra.running and not extra.frontend.connections, "the removed frontend drained")
        yield run_reactor_for(10)  # its drain's last check
        client = RawClient()
        failed = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client).addCallbacks(
            lambda _: False, lambda failure: True)
        self.assertTrue(failed, "the removed frontend's port still accepts")

    @defer.inlineCallbacks
    def test_a_listener_that_cannot_bind_is_reported_and_the_rest_applies(self):  # type: ignore[no-untyped-def]
        taken = self.parts.frontends["web"].ports[0].getHost().port
        extra = f'[frontends.clash]\nlisten = ["tcp:{taken}:interface=127.0.0.1"]\nbackend = "web"\n'
        self.write(web=("w3",), ws=("e1", "e2"), extra=extra)
        changes = self.reload()
        self.assertTrue(any(c.startswith("frontend clash NOT listening") for c in changes), changes)
        self.assertEqual([s.name for s in self.parts.backends["web"].servers], ["w3"])
        self.write(web=("w1",), ws=("e1", "e2"))  # the next reload works, and drops the clash
        changes = self.reload()
        self.assertIn("backend web reconfigured", changes)
        yield self.poll(lambda: "clash" not in self.parts.frontends, "the clash removed")


    @defer.inlineCallbacks
    def test_a_bad_listen_or_value_changes_nothing(self):  # type: ignore[no-untyped-def]
        with open(self.path) as f:
            good = f.read()
        listen = 'listen = ["tcp:0:interface=127.0.0.1"]\nbackend = "web"'
        for old, new, key in ((listen, 'listen = ["tcp:notaport"]\nbackend = "web"', "frontends.web.listen"),
                              (listen, 'listen = ["tcpx:1"]\nbackend = "web"', "frontends.web.listen"),
                              ('client = "30s"', "client = nan", "timeouts.client"),
                              ('client = "30s"', "client = 1e300", "timeouts.client"),
                              ("[admin]", '[access-log]\npath = "/"\n[admin]', "access-log.path")):
            self.assertIn(old, good)
            with open(self.path, "w") as f:
                f.write(good.replace(old, new, 1))
            with self.assertRaises(ConfigError) as caught:
                self.reload()
            self.assertEqual(caught.exception.key, key)
        frontend = self.parts.frontends["web"]
        self.assertEqual((frontend.endpoints, len(frontend.ports)), (("tcp:0:interface=127.0.0.1",), 1))
        self.assertEqual(self.parts.frontends["web"].frontend.timeouts.client, 30)
        (answer,) = yield self.request(get(b"/still"))  # the listener the bad files named no longer is still there
        self.assertEqual(answer.status, 200)

    @defer.inlineCallbacks
    def test_a_listener_that_cannot_bind_leaves_the_old_one_in_place(self):  # type: ignore[no-untyped-def]
        taken = reactor.listenTCP(0, ServerFactory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        with open(self.path) as f:
            good = f.read()
        wanted = taken.getHost().port
        moved = f'listen = ["tcp:{wanted}:interface=127.0.0.1"]'
        with open(self.path, "w") as f:
            f.write(good.replace('listen = ["tcp:0:interface=127.0.0.1"]\nbackend', moved + "\nbackend", 1))
        changes = self.reload()
        self.assertTrue(any(c.startswith("frontend web keeps its listeners: ") for c in changes), changes)
        frontend = self.parts.frontends["web"]
        self.assertEqual([p.getHost().port for p in frontend.ports], [self.proxy_port])
        (answer,) = yield self.request(get(b"/still"))
        self.assertEqual(answer.status, 200)
        taken.stopListening()
        yield run_reactor_for(2)  # the port is closed a turn later
        changes = self.reload()  # now it can bind: the new endpoint is opened, then the old one closed
        self.assertNotIn("frontend web keeps its listeners", " ".join(changes))
        self.assertEqual([p.getHost().port for p in frontend.ports], [wanted])
        self.proxy_port = wanted
        (answer,) = yield self.request(get(b"/moved"))
        self.assertEqual(answer.status, 200)


class _Recording(ServerFactory):
    def __init__(self, name: str, built: list[str]) -> None:
        self.name, self.built = name, built

    def buildProtocol(self, addr: object) -> Protocol:
        self.built.append(self.name)
        return Protocol()


class FactorySwapTests(ProxyTestCase):
    """A listener takes a new factory for the connections it accepts from then on."""

    @defer.inlineCallbacks
    def swapped(self, endpoint: str):  # type: ignore[no-untyped-def]
        built: list[str] = []
        listening = ListeningService(reactor, "test", _Recording("old", built), ListenSettings((endpoint,)))
        listening.startService()
        self.addCleanup(listening.stopService)
        listening.use_factory(_Recording("new", built))
        client = Protocol()
        port = listening.ports[0].getHost().port
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(client.transport.abortConnection)
        yield self.poll(lambda: built, "the listener built a protocol")
        return built

    @defer.inlineCallbacks
    def test_tcp(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.swapped("tcp:0:interface=127.0.0.1")), ["new"])

    @defer.inlineCallbacks
    def test_tls_wraps_the_factory(self):  # type: ignore[no-untyped-def]
        _, endpoint = tls_listen_endpoint(self)
        self.assertEqual((yield self.swapped(endpoint)), ["new"])
