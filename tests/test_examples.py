"""The worked examples of docs/extending.md, each doing what the document says."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.clients import ClientRegistry
from rubrisproxy.config import ClientsConfig, config_from_document
from rubrisproxy.http import RequestHead
from rubrisproxy.lifecycle import ConnectionEnd, LifecycleHandlers, SessionEnd

from .helpers import MemoryAccessLog, ProxyTestCase, get, parse_responses
from .test_websocket import EXAMPLES  # noqa: F401 - puts docs/examples on sys.path


class SourceLimitTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_a_source_gets_limit_connections_and_its_count_returns_to_zero(self):  # type: ignore[no-untyped-def]
        from lifecycle_handlers import SourceLimit

        limit = SourceLimit(limit=2)
        frontend = self.start_proxy(self.start_web_origin())
        frontend.handlers = LifecycleHandlers.of((limit,))
        clients = []
        for _ in range(2):
            client = yield self.connect()
            client.send(get(b"/"))
            yield client.responses(1)
            clients.append(client)
        third = yield self.connect()
        third.send(get(b"/"))
        self.assertEqual((yield third.closed), b"")  # refused
        for client in clients:
            client.transport.loseConnection()
        yield self.settle(frontend)
        self.assertEqual(limit.open, {})
        self.assertEqual(frontend.connection_ends, {ConnectionEnd.CLIENT_CLOSE.value: 2,
                                                    ConnectionEnd.SERVER_CLOSE.value: 1})

    @defer.inlineCallbacks
    def test_sources_outside_the_networks_are_refused(self):  # type: ignore[no-untyped-def]
        from lifecycle_handlers import SourceLimit

        frontend = self.start_proxy(self.start_web_origin())
        frontend.handlers = LifecycleHandlers.of((SourceLimit(networks=["10.0.0.0/8"]),))
        client = yield self.connect()
        client.send(get(b"/"))
        self.assertEqual((yield client.closed), b"")


class SessionAuditTests(SynchronousTestCase):
    def test_expired_sessions_are_counted(self) -> None:
        from lifecycle_handlers import SessionAudit

        audit = SessionAudit()
        clock = Clock()
        registry = ClientRegistry("web", ClientsConfig(("sid",), 30), clock, (audit,))
        head = RequestHead(method=b"GET", target=b"/socket.io/?EIO=4&sid=x1", version=b"1.1", headers=[])
        session = registry.request_started(head, object(), False, "192.0.2.1")
        registry.request_ended(session, "s1", 200)  # type: ignore[arg-type]
        clock.advance(31)
        clock.advance(31)
        self.assertEqual(audit.ended, {SessionEnd.EXPIRED.value: 1})


class HeaderChoiceTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_a_named_server_gets_the_request_others_are_balanced(self):  # type: ignore[no-untyped-def]
        config = config_from_document({"backends": {"app": {"balance": "balancers.HeaderChoice"}}})
        frontend = self.start_proxy(self.start_web_origin(), self.start_web_origin())
        from rubrisproxy.backend import balancer_for

        frontend.backend.balancer = balancer_for(config.backends["app"].balance)
        client = yield self.connect()
        for _ in range(3):
            client.send(get(b"/", b"X-Server: s2\r\n"))
        yield client.responses(3)
        for _ in range(2):
            client.send(get(b"/"))
        yield client.responses(5)
        self.assertEqual(len(parse_responses(client.received)), 5)
        self.assertEqual([e.server for e in self.access_log.entries], ["s2", "s2", "s2", "s1", "s2"])


class CustomProtocolTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_requests_are_attributed_to_their_api_key(self):  # type: ignore[no-untyped-def]


        service = self.start_from_config(f'[frontends.api]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n'
                                         f'protocol = "custom_protocol.ApiKeyConnection"\n'
                                         f'[backends.app]\nservers = ["127.0.0.1:{self.start_web_origin()}"]\n')
        running = service.parts.frontends["api"]  # type: ignore[attr-defined]
        self.proxy_port = running.ports[0].getHost().port
        running.frontend.access_log = self.access_log = MemoryAccessLog()
        yield self.request(get(b"/", b"X-Api-Key: k1\r\n"))
        yield self.request(get(b"/"))
        first, second = (entry.client for entry in self.access_log.entries)
        self.assertTrue(first.startswith("key-") and "k1" not in first, first)
        self.assertEqual(second, "127.0.0.1")

    def test_a_class_that_is_no_connection_is_refused_naming_the_key(self) -> None:
        from rubrisproxy.config import ConfigError
        from rubrisproxy.service import build_service

        config = config_from_document({"frontends": {"web": {"backend": "app", "protocol": "balancers.HeaderChoice"}},
                                       "backends": {"app": {}}})
        with self.assertRaises(ConfigError) as caught:
            build_service(config, Clock())
        self.assertEqual(caught.exception.key, "frontends.web.protocol")
