"""Pinned connections: connection-oriented auth (NTLM, Negotiate) binds a server connection to one client."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer
from twisted.internet.protocol import Protocol

from rubrisproxy.config import WebSocketConfig
from rubrisproxy.websocket import accept_key

from .helpers import ProxyTestCase, get, parse_responses

_ANSWER = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s\r\n%s"


class NTLMOrigin(Protocol):
    """A scripted NTLM-style handshake: type 1, challenge, type 3, which only counts on the same connection."""

    handshakes_done = 0

    def connectionMade(self) -> None:
        self.buffer = b""
        self.challenged = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            authorization = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"authorization:")), b"")
            if authorization == b"NTLM type1":
                self.challenged = True
                self.answer(401, b"WWW-Authenticate: NTLM challenge\r\n", b"")
            elif authorization == b"NTLM type3" and self.challenged:
                NTLMOrigin.handshakes_done += 1
                self.answer(200, b"", b"welcome")
            else:
                self.answer(401, b"WWW-Authenticate: NTLM\r\n", b"")

    def answer(self, status: int, headers: bytes, body: bytes) -> None:
        reason = b"OK" if status == 200 else b"Unauthorized"
        self.transport.write(_ANSWER % (status, reason, len(body), headers, body))


class PinnedTests(ProxyTestCase):
    def setUp(self) -> None:
        NTLMOrigin.handshakes_done = 0
        self.frontend = self.start_proxy(self.start_raw_origin(NTLMOrigin))

    @defer.inlineCallbacks
    def step(self, client, authorization: bytes | None, expected: int):  # type: ignore[no-untyped-def]
        count = len(parse_responses(client.received)) + 1
        extra = b"Authorization: " + authorization + b"\r\n" if authorization else b""
        client.send(get(b"/secure", extra))
        responses = yield client.responses(count)
        self.assertEqual(responses[-1].status, expected)

    @defer.inlineCallbacks
    def test_two_clients_each_keep_their_own_server_connection(self):  # type: ignore[no-untyped-def]
        alice = yield self.connect()
        bob = yield self.connect()
        yield self.step(alice, None, 401)
        yield self.step(alice, b"NTLM type1", 401)
        yield self.step(bob, None, 401)
        yield self.step(bob, b"NTLM type1", 401)
        yield self.step(alice, b"NTLM type3", 200)  # on alice's server connection, not bob's idle one
        yield self.step(bob, b"NTLM type3", 200)
        self.assertEqual(NTLMOrigin.handshakes_done, 2)
        self.assertEqual(self.frontend.pool.idle_count, 0)  # pinned connections are never pooled

    @defer.inlineCallbacks
    def test_a_pinned_connection_closing_closes_its_client_and_the_reverse(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        yield self.step(client, b"NTLM type1", 401)
        (connection,) = [c for c in self.frontend.connections]
        pinned = connection.pinned
        self.assertIsNotNone(pinned)
        pinned.transport.loseConnection()  # the server connection ends
        yield client.closed
        other = yield self.connect()
        yield self.step(other, b"NTLM type1", 401)
        (connection,) = [c for c in self.frontend.connections]
        pinned = connection.pinned
        other.transport.loseConnection()  # the client goes
        yield self.poll(lambda: not pinned.connected, "the pinned server connection closed")


class PinRuleTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_a_backend_that_pins_keeps_each_clients_connection(self):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        frontend = self.start_proxy(self.start_web_origin())
        backend = frontend.backend
        backend.config = replace(backend.config, pin=True)
        first = yield self.connect()
        second = yield self.connect()
        for client in (first, second, first, second):
            count = len(parse_responses(client.received)) + 1
            client.send(get(b"/"))
            yield client.responses(count)
        self.assertEqual(frontend.pool.created, 2)
        self.assertEqual({c.pinned is not None for c in frontend.connections}, {True})
        self.assertEqual(frontend.pool.idle_count, 0)


class ForwardPinnedTests(ProxyTestCase):
    """In forward mode a client is pinned per destination: another destination unpins it, the client stays."""

    def setUp(self) -> None:
        NTLMOrigin.handshakes_done = 0
        self.origin_port = self.start_raw_origin(NTLMOrigin)
        self.other_port = self.start_web_origin()
        # The origins are on this host: the allow rule names loopback, as an operator's must.
        service = self.start_from_config('[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                                         '[frontends.out.forward]\nallow-hosts = ["127.0.0.1"]\n')
        self.frontend = service.parts.frontends["out"].frontend  # type: ignore[attr-defined]
        self.proxy_port = service.parts.frontends["out"].ports[0].getHost().port  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def send(self, client, port: int, authorization: bytes | None = None):  # type: ignore[no-untyped-def]
        count = len(parse_responses(client.received)) + 1
        extra = b"Authorization: " + authorization + b"\r\n" if authorization else b""
        client.send(b"GET http://127.0.0.1:%d/secure HTTP/1.1\r\nHost: x\r\n%s\r\n" % (port, extra))
        responses = yield client.responses(count)
        return responses[-1].status

    @defer.inlineCallbacks
    def test_the_handshake_stays_on_one_server_connection(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        self.assertEqual((yield self.send(client, self.origin_port, b"NTLM type1")), 401)
        (connection,) = self.frontend.connections
        pinned = connection.pinned
        self.assertIsNotNone(pinned)
        self.assertEqual((yield self.send(client, self.origin_port, b"NTLM type3")), 200)
        self.assertEqual(NTLMOrigin.handshakes_done, 1)
        self.assertEqual((yield self.send(client, self.other_port)), 200)  # elsewhere: unpinned, not refused
        yield self.poll(lambda: not pinned.connected, "the pinned server connection closed")
        self.assertTrue(client.transport.connected)
        self.assertIsNone(connection.pinned)


class UpgradeOrigin(Protocol):
    """Answers a WebSocket handshake with its 101, anything else with a 200; then relays nothing."""

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
            key = {name.strip().lower(): value.strip() for name, value in fields.items()}.get(b"sec-websocket-key")
            if key is None:
                self.transport.write(_ANSWER % (200, b"OK", 2, b"", b"ok"))
            else:
                self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                     b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")


class PinnedUpgradeTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_a_pinned_connection_that_became_a_websocket_ends_its_client_when_it_ends(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_raw_origin(UpgradeOrigin), websocket=WebSocketConfig(mode="tunnel"))
        frontend.backend.config = replace(frontend.backend.config, pin=True)
        client = yield self.connect()
        client.send(get(b"/"))
        yield client.responses(1)
        (connection,) = frontend.connections
        pinned = connection.pinned
        client.send(get(b"/chat", b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
        yield client.until(lambda data: b" 101 " in data)
        self.assertIs(connection.pinned, pinned)  # the WebSocket rides the pinned server connection
        pinned.transport.loseConnection()  # the server ends it
        yield client.closed
        self.assertEqual(self.flushLoggedErrors(), [])
