"""Client sessions: one client across connections, its long polls, and its end (expiry with Clock)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from zope.interface import implementer

from rubrisproxy.clients import ClientRegistry, ClientSession
from rubrisproxy.config import ClientsConfig
from rubrisproxy.http import RequestHead
from rubrisproxy.lifecycle import ConnectionEnd, IClientHandler, SessionEnd

from .helpers import ProxyTestCase, get


@implementer(IClientHandler)
class Destroyed:
    def __init__(self) -> None:
        self.calls: list[tuple[str, SessionEnd]] = []

    def client_destroyed(self, session: ClientSession, reason: SessionEnd) -> None:
        self.calls.append((session.id, reason))


def head(target: bytes = b"/", *headers: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(method=b"GET", target=target, version=b"1.1", headers=list(headers))


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.handler = Destroyed()
        self.registry = ClientRegistry("web", ClientsConfig(("sid", "cookie(app)", "header(X-Client)", "connection"), 60),
                                       self.clock, (self.handler,))

    def test_identified_in_the_configured_order(self) -> None:
        key = self.registry.key_of
        both = head(b"/socket.io/?EIO=4&sid=S1", (b"Cookie", b"app=C1"))
        self.assertEqual(key(both, object(), True), "sid:S1")
        self.assertEqual(key(head(b"/", (b"Cookie", b"x=1; app=C1")), object(), True), "cookie:C1")
        self.assertEqual(key(head(b"/", (b"x-client", b"H1")), object(), True), "header:H1")
        connection = object()
        self.assertEqual(key(head(), connection, True), f"connection:{id(connection):x}")
        self.assertIsNone(key(head(), connection, False))  # a proxied connection is no client

    def test_a_session_spans_connections_and_expires_once(self) -> None:
        first, second = object(), object()
        request = head(b"/", (b"Cookie", b"app=C1"))
        for connection in (first, second, second):
            session = self.registry.request_started(request, connection, True, "192.0.2.1")
            self.registry.request_ended(session, "s1", 200)  # type: ignore[arg-type]
        self.assertEqual((session.requests, session.connections, session.server), (3, 2, "s1"))  # type: ignore[union-attr]
        self.clock.advance(59)
        self.assertEqual(self.handler.calls, [])
        self.clock.advance(61)
        self.assertEqual(self.handler.calls, [("cookie:C1", SessionEnd.EXPIRED)])
        self.clock.advance(600)
        self.assertEqual(len(self.handler.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing left to expire: no timer

    def test_a_long_poll_in_progress_keeps_its_session(self) -> None:
        session = self.registry.request_started(head(b"/?EIO=4&sid=S2"), object(), False, "192.0.2.2")
        self.assertTrue(session.long_polling)  # type: ignore[union-attr]
        self.clock.advance(300)
        self.assertEqual(self.handler.calls, [])
        self.registry.request_ended(session, "s1", 200)  # type: ignore[arg-type]
        self.clock.advance(61)
        self.assertEqual(self.handler.calls, [("sid:S2", SessionEnd.EXPIRED)])

    def test_an_ended_session_whose_id_returns_is_a_new_one(self) -> None:
        request = head(b"/?EIO=4&sid=S3")
        old = self.registry.request_started(request, object(), False, "192.0.2.4")
        self.registry.request_started(request, object(), False, "192.0.2.4")
        self.registry.request_ended(old, "s1", 400)  # type: ignore[arg-type]  # a poll still waits: not yet
        self.assertEqual(self.handler.calls, [])
        self.registry.request_ended(old, "s1", 400)  # type: ignore[arg-type]
        new = self.registry.request_started(request, object(), False, "192.0.2.4")
        self.registry.websocket_ended(old, by_client=True)  # type: ignore[arg-type]  # the old one's, late
        self.assertEqual(self.handler.calls, [("sid:S3", SessionEnd.CLOSED_BY_SERVER)])
        self.assertIs(self.registry.sessions["sid:S3"], new)

    def test_closed_by_the_client_or_the_server(self) -> None:
        connection = object()
        self.registry.request_started(head(), connection, True, "192.0.2.3")
        self.registry.connection_ended(connection, ConnectionEnd.CLIENT_CLOSE)
        unknown = self.registry.request_started(head(b"/?EIO=4&sid=gone"), object(), False, "192.0.2.3")
        self.registry.request_ended(unknown, "s1", 400)  # type: ignore[arg-type]
        self.assertEqual(self.handler.calls, [
            (f"connection:{id(connection):x}", SessionEnd.CLOSED_BY_CLIENT), ("sid:gone", SessionEnd.CLOSED_BY_SERVER),
        ])


class LongPoll(resource.Resource):
    """Answers when the test says so."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[server.Request] = []

    def render(self, request: server.Request) -> object:
        self.waiting.append(request)
        return server.NOT_DONE_YET


class SessionTrackingTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_a_long_poll_owns_its_connection_and_the_session_spans_connections(self):  # type: ignore[no-untyped-def]
        poll = LongPoll()
        frontend = self.start_proxy(self.start_web_origin(poll))
        handler = Destroyed()
        frontend.clients = ClientRegistry("web", ClientsConfig(("sid",), 60), frontend.clock, (handler,))
        self.addCleanup(frontend.clients.stop)
        target = b"/socket.io/?EIO=4&transport=polling&sid=abc"
        first = yield self.connect()
        first.send(get(target))
        yield self.poll(lambda: poll.waiting, "the long poll reached the origin")
        (connection,) = frontend.connections
        info = connection.info()
        self.assertEqual((info.client, info.session), ("127.0.0.1", "sid:abc"))
        self.assertTrue(frontend.clients.sessions["sid:abc"].long_polling)
        poll.waiting.pop().finish()
        yield first.responses(1)
        second = yield self.connect()
        second.send(get(target))
        yield self.poll(lambda: poll.waiting, "the second poll reached the origin")
        poll.waiting.pop().finish()
        yield second.responses(1)
        session = frontend.clients.sessions["sid:abc"]
        self.assertEqual((session.requests, session.connections, session.server, session.long_polling),
                         (2, 2, "s1", False))
        self.assertEqual([e.session for e in self.access_log.entries], ["sid:abc", "sid:abc"])

    @defer.inlineCallbacks
    def test_tracking_turned_off_by_a_reload_mid_request(self):  # type: ignore[no-untyped-def]
        poll = LongPoll()
        frontend = self.start_proxy(self.start_web_origin(poll))
        registry = frontend.clients = ClientRegistry("web", ClientsConfig(("sid",), 60), frontend.clock)
        self.addCleanup(registry.stop)
        client = yield self.connect()
        client.send(get(b"/?EIO=4&sid=x"))
        yield self.poll(lambda: poll.waiting, "the poll reached the origin")
        frontend.clients = None  # as a reload without [clients] leaves it (the registry stops expiring)
        poll.waiting.pop().finish()
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_pipelined_requests_never_answered_leave_no_session_waiting(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin())
        registry = frontend.clients = ClientRegistry("web", ClientsConfig(("sid",), 60), frontend.clock)
        self.addCleanup(registry.stop)
        client = yield self.connect()
        client.send(get(b"/?EIO=4&sid=a", b"Connection: close\r\n") + b"".join(
            get(b"/?EIO=4&sid=n%d" % i) for i in range(5)))
        yield client.closed
        yield self.settle(frontend)
        self.assertEqual([s.outstanding for s in registry.sessions.values()], [0] * len(registry.sessions))
