"""Session mode fails a WebSocket peer that breaks the protocol as RFC 6455 7.1.7 asks: a close frame with
the code (1002, 1007), then its TCP connection closed at once (a FIN), without waiting for a closing
handshake from that peer.

The loopback tests send the exact bytes through the proxy and time the close on the reactor's clock;
the unit tests run one leg on a StringTransport with a Clock.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from rubrisproxy.config import WebSocketConfig
from rubrisproxy.lifecycle import Termination
from rubrisproxy.websocket import accept_key

from .helpers import ProxyTestCase, RawClient
from .test_ws_keepalive import (
    MASK,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Transport,
    frame,
    open_backend_leg,
    open_client_leg,
    parse_frames,
)
from .wsecho import EchoBackendFactory, listen_echo_backend

UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
#: Well under a second: what "at once" allows on a loaded machine (the close handshake timeout is 5 s).
PROMPT = 1.0


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


#: (name, the client's exact bytes, the close code the proxy must answer with)
HOSTILE_FROM_CLIENT = [
    ("a close with a 1-byte payload", frame(OP_CLOSE, b"\x03", MASK), 1002),
    ("a close with code 1005", frame(OP_CLOSE, close_payload(1005), MASK), 1002),
    ("a close with code 999", frame(OP_CLOSE, close_payload(999), MASK), 1002),
    ("a close whose reason is not UTF-8", frame(OP_CLOSE, close_payload(1000, b"ok\xff\xfe"), MASK), 1007),
    ("an unmasked text frame", frame(OP_TEXT, b"hello"), 1002),
    ("a text frame with RSV1 set", bytes((0xC1, 0x82)) + MASK + b"hi", 1002),
    ("a reserved data opcode", frame(0x3, b"", MASK), 1002),
    ("a reserved control opcode", frame(0xB, b"", MASK), 1002),
    ("a 126-byte ping", bytes((0x80 | OP_PING, 0xFE, 0, 126)) + MASK + b"p" * 126, 1002),
]


class Client(RawClient):
    """A raw client that also records why its connection ended."""

    reason: Failure | None = None

    def connectionLost(self, reason: object = None) -> None:
        self.reason = reason  # type: ignore[assignment]
        super().connectionLost(reason)


class ClientFailureTests(ProxyTestCase):
    """Each hostile frame from the client: the proxy's close code, then a FIN well under a second later."""

    def start(self) -> EchoBackendFactory:
        backend = EchoBackendFactory()
        listener = listen_echo_backend(backend)
        self.addCleanup(listener.stopListening)
        self.frontend = self.start_proxy(listener.getHost().port, websocket=WebSocketConfig(
            mode="session", client_ping_interval=0, backend_ping_interval=0,
        ))
        return backend

    async def fail_with(self, data: bytes, code: int) -> None:
        backend = self.start()
        client = await self.connect_as(Client())
        client.send(UPGRADE)
        answer = await client.until(lambda received: b"\r\n\r\n" in received)
        self.assertTrue(answer.startswith(b"HTTP/1.1 101"), answer)
        client.received = b""
        sent = reactor.seconds()
        client.send(data)
        await client.closed
        elapsed = reactor.seconds() - sent
        (close,) = parse_frames(client.received)
        self.assertEqual(close[0], OP_CLOSE)
        self.assertEqual(struct.unpack("!H", close[1][:2])[0], code, close)
        self.assertLess(elapsed, PROMPT)
        self.assertIsInstance(client.reason.value, ConnectionDone)  # a FIN, not a reset  # type: ignore[union-attr]
        await self.poll(lambda: backend.closes, "the backend's close")
        self.assertEqual(backend.closes, [(True, 1001, "client protocol error")])
        await self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, Termination.PROTOCOL_ERROR.value)
        self.assertEqual(self.frontend.backend.leg_factories().timer.pending(), 0)  # no close timer left

    def test_a_valid_close_is_still_echoed_with_its_code_and_reason(self) -> Deferred[None]:
        async def check() -> None:
            backend = self.start()
            backend.setProtocolOptions(echoCloseCodeReason=True)  # the client gets the backend's answer
            client = await self.connect_as(Client())
            client.send(UPGRADE)
            await client.until(lambda received: b"\r\n\r\n" in received)
            client.received = b""
            client.send(frame(OP_CLOSE, close_payload(4001, b"bye now"), MASK))
            await client.closed
            self.assertEqual(parse_frames(client.received), [(OP_CLOSE, close_payload(4001, b"bye now"))])
            self.assertEqual(backend.closes, [(True, 4001, "bye now")])
            await self.settle(self.frontend)
            self.assertEqual(self.access_log.entries[-1].termination, Termination.CLIENT_CLOSE.value)
        return Deferred.fromCoroutine(check())


def _hostile_test(data: bytes, code: int) -> Any:
    def test(self: ClientFailureTests) -> Deferred[None]:
        return Deferred.fromCoroutine(self.fail_with(data, code))
    return test


for _name, _data, _code in HOSTILE_FROM_CLIENT:
    setattr(ClientFailureTests, "test_" + _name.replace(" ", "_").replace("-", "_"), _hostile_test(_data, _code))


class HostileOrigin(Protocol):
    """A backend that accepts the upgrade, then sends ``hostile`` bytes and records what comes back."""

    def __init__(self, hostile: bytes, record: dict[str, Any]) -> None:
        self.hostile = hostile
        self.record = record
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if "head" not in self.record and b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.record["head"] = head
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"  # type: ignore[union-attr]
                                 b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")

    def send_hostile(self) -> None:
        self.record["sent"] = reactor.seconds()
        self.transport.write(self.hostile)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.record["lost"] = (reactor.seconds(), reason, self.buffer)


class BackendFailureTests(ProxyTestCase):
    """A backend that breaks the protocol gets the proxy's close code, then a FIN; the client gets 1011."""

    async def fail_backend_with(self, hostile: bytes, code: int) -> None:
        record: dict[str, Any] = {}
        origins: list[HostileOrigin] = []

        def build() -> HostileOrigin:
            origins.append(HostileOrigin(hostile, record))
            return origins[-1]

        frontend = self.start_proxy(self.start_raw_origin(build), websocket=WebSocketConfig(
            mode="session", client_ping_interval=0, backend_ping_interval=0, resume=False,
        ))
        client = await self.connect_as(Client())
        client.send(UPGRADE)
        await client.until(lambda received: b"\r\n\r\n" in received)
        client.received = b""
        origins[0].send_hostile()
        await self.poll(lambda: "lost" in record, "the backend connection closed")
        lost_at, reason, received = record["lost"]
        self.assertLess(lost_at - record["sent"], PROMPT)
        self.assertIsInstance(reason.value, ConnectionDone)
        (close,) = parse_frames(received)
        self.assertEqual(close[0], OP_CLOSE)
        self.assertEqual(struct.unpack("!H", close[1][:2])[0], code, close)
        await client.until(lambda received: bool(received))
        self.assertEqual(parse_frames(client.received), [(OP_CLOSE, close_payload(1011, b"backend connection lost"))])
        answered = reactor.seconds()
        client.send(frame(OP_CLOSE, close_payload(1011), MASK))  # the client's side of a normal close handshake
        await client.closed
        self.assertLess(reactor.seconds() - answered, PROMPT)
        await self.settle(frontend)
        self.assertEqual(self.access_log.entries[-1].termination, Termination.PROTOCOL_ERROR.value)
        self.assertEqual(frontend.backend.leg_factories().timer.pending(), 0)

    def test_a_masked_frame_from_the_backend(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.fail_backend_with(frame(OP_TEXT, b"hi", MASK), 1002))

    def test_a_close_with_code_1005_from_the_backend(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.fail_backend_with(frame(OP_CLOSE, close_payload(1005)), 1002))

    def test_invalid_utf8_text_from_the_backend(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.fail_backend_with(frame(OP_TEXT, b"\xc0\xaf"), 1007))


class ClosingTransport(Transport):
    """A StringTransport that tells an orderly close from an abort."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().loseConnection()


class LegFailureUnitTests(unittest.TestCase):
    """One leg on a Clock: the failure's close frame, then the transport closed; no timer left."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = WebSocketConfig(client_ping_interval=0, backend_ping_interval=0)

    def client_leg(self) -> tuple[Any, ClosingTransport, Any]:
        leg, transport, session = open_client_leg(self.config, self.clock)
        closing = ClosingTransport()
        leg.transport = closing
        return leg, closing, session

    def test_an_invalid_close_is_answered_and_closed_at_once(self) -> None:
        for data, code in ((frame(OP_CLOSE, b"\x03", MASK), 1002), (frame(OP_CLOSE, close_payload(1005), MASK), 1002),
                           (frame(OP_CLOSE, close_payload(1000, b"\xff"), MASK), 1007)):
            leg, transport, session = self.client_leg()
            leg.dataReceived(data)
            (close,) = parse_frames(transport.value())
            self.assertEqual((close[0], close[1][:2]), (OP_CLOSE, close_payload(code)))
            self.assertTrue(transport.disconnecting)
            self.assertFalse(transport.aborted)
            self.assertEqual(session.events[0][:2], ("client_failed", code))  # the backend is closed meanwhile
            leg.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_framing_error_waits_for_the_backend_then_closes_without_a_handshake(self) -> None:
        leg, transport, session = self.client_leg()
        leg.dataReceived(frame(OP_TEXT, b"unmasked"))
        self.assertEqual(transport.value(), b"")  # the backend is closed first
        self.assertFalse(transport.disconnecting)
        self.assertEqual(session.events, [("client_failed", 1002, "unmasked client-to-server frame")])
        leg.answer_held()  # the backend answered the 1001 it was sent
        (close,) = parse_frames(transport.value())
        self.assertEqual(close[1][:2], close_payload(1002))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertFalse(transport.aborted)  # no close handshake is awaited: the FIN goes once the frame is flushed
        leg.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(session.events[-1], ("client_closed", Termination.PROTOCOL_ERROR))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_failed_peer_that_does_not_read_is_cut_after_the_close_handshake_timeout(self) -> None:
        leg, transport, session = self.client_leg()
        leg.dataReceived(frame(OP_CLOSE, close_payload(1005), MASK))
        self.assertTrue(transport.disconnecting)  # the close frame waits in the buffer: the peer does not read
        self.clock.advance(self.config.close_handshake_timeout - 0.5)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)
        leg.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_clients_valid_close_still_waits_for_the_backend_and_is_echoed(self) -> None:
        leg, transport, session = self.client_leg()
        leg.dataReceived(frame(OP_CLOSE, close_payload(4001, b"bye"), MASK))
        self.assertEqual(session.events, [("client_closing", 4001, b"bye")])
        leg.answer_held()  # the backend answered
        self.assertEqual(parse_frames(transport.value()), [(OP_CLOSE, close_payload(4001, b"bye"))])
        self.assertTrue(transport.disconnecting)

    def test_a_clients_close_with_no_backend_to_wait_for_is_echoed_at_once(self) -> None:
        leg, transport, session = self.client_leg()
        session.backend_open = False  # its session is moving to another server
        leg.dataReceived(frame(OP_CLOSE, close_payload(3000, b"done here"), MASK))
        self.assertEqual(parse_frames(transport.value()), [(OP_CLOSE, close_payload(3000, b"done here"))])
        self.assertTrue(transport.disconnecting)

    def test_a_half_closed_client_is_closed_once_the_backend_answers_with_no_close_frame(self) -> None:
        leg, transport, session = self.client_leg()
        self.assertTrue(leg.hold_fin())
        self.assertFalse(leg.hold_fin())  # once
        leg.sendMessage(b"the echo")  # what the backend still sends reaches the client
        leg.answer_held()
        self.assertEqual(parse_frames(transport.value()), [(OP_TEXT, b"the echo")])
        self.assertTrue(transport.disconnecting)

    def test_the_proxys_own_close_still_waits_for_the_clients_answer(self) -> None:
        leg, transport, session = self.client_leg()
        leg.sendCloseFrame(1001, b"going away")
        self.assertFalse(transport.disconnecting)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])  # the close handshake timeout
        leg.dataReceived(frame(OP_CLOSE, close_payload(1001), MASK))
        self.assertTrue(transport.disconnecting)

    def test_an_error_during_the_proxys_close_closes_at_once_too(self) -> None:
        leg, transport, session = self.client_leg()
        leg.sendCloseFrame(1001, b"going away")
        transport.clear()
        leg.dataReceived(frame(OP_TEXT, b"unmasked"))
        self.assertEqual(transport.value(), b"")  # the proxy's close went out already
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.clock.advance(self.config.close_handshake_timeout + 1)
        self.assertTrue(transport.aborted)  # a peer that does not read is cut after the timeout
        leg.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_backend_leg_fails_a_masked_frame_at_once(self) -> None:
        leg, origin, session = open_backend_leg(self.config, self.clock)
        leg.dataReceived(frame(OP_TEXT, b"hi", MASK))
        (close,) = parse_frames(origin.transport.value())
        self.assertEqual(close[1][:2], close_payload(1002))
        self.assertTrue(origin.transport.disconnecting)
        leg.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(session.events[-1], ("backend_closed", leg, Termination.PROTOCOL_ERROR))
        self.assertEqual(self.clock.getDelayedCalls(), [])
