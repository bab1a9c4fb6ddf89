"""Session-mode keepalives: each leg answers its peer's pings at once, and its own pings find a peer
that died or hangs.

The unit tests open one leg on a StringTransport with a Clock (the leg's Autobahn timers run on it)
and a stand-in for its session; the loopback tests use real clients and a backend in a subprocess
that is frozen with SIGSTOP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.trial.unittest import SkipTest

from rubrisproxy._compat import unsent
from rubrisproxy.backend import Server
from rubrisproxy.config import ServerConfig, WebSocketConfig
from rubrisproxy.flow import BACKPRESSURE, ReadGate
from rubrisproxy.lifecycle import Termination
from rubrisproxy.websocket import LegFactories, accept_key, new_key

from .browser import Child, deferLater, spawn
from .helpers import ProxyTestCase
from .test_ws_interop import INTEROP, client_result, ensure_node_ws, has_websockets, run_client_script
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

ROOT = Path(__file__).resolve().parent.parent

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", mask: bytes | None = None) -> bytes:
    """One final frame; masked (as from a client) when ``mask`` is given."""
    assert len(payload) < 126
    if mask is None:
        return bytes((0x80 | opcode, len(payload))) + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each whole frame in ``data`` (short frames only)."""
    frames = []
    while data:
        opcode, second = data[0] & 0x0F, data[1]
        size, start = second & 0x7F, 2
        assert size < 126
        if second & 0x80:
            mask, start = data[2:6], 6
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[start:start + size]))
        else:
            payload = data[start:start + size]
        frames.append((opcode, payload))
        data = data[start + size:]
    return frames


class Transport(StringTransport):
    """A StringTransport that, like a TCP one, lets a protocol unregister a producer it never registered."""

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            super().unregisterProducer()


class StandInSession:
    """What a leg reports to its session, recorded."""

    backend_open = True

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, *args))

    def settle_loss(self) -> None:
        """Not a report: a session's backend leg whose loss waits for its turn (none here) is handled first."""

    def accept_client(self) -> tuple[None, dict[str, list[str]]]:
        return None, {}

    def backend_passage(self) -> None:
        return None  # each message goes by from_client, recorded

    def client_passage(self) -> None:
        return None


class StandInOrigin:
    """The backend connection a BackendLeg takes over."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.gate = ReadGate(self.transport)
        self.relay: object = None
        self.server = Server(ServerConfig(name="s1", host="127.0.0.1", port=1), "app")  # counts what the leg writes

    def take_over(self, relay: object) -> None:
        self.relay = relay


def open_backend_leg(
    config: WebSocketConfig, clock: Clock, headers: bytes = b"",
) -> tuple[Any, StandInOrigin, StandInSession]:
    """A BackendLeg opened on a 101 (with ``headers`` besides the required ones), as the session opens one."""
    factories = LegFactories(config, clock)
    leg = factories.backend_leg()
    leg.factory = factories.client
    session, origin, key = StandInSession(), StandInOrigin(), new_key()
    switch = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n" + headers + b"\r\n")
    leg.attach(session, origin, switch, key, [])  # type: ignore[arg-type]
    assert session.events == [("backend_opened", leg)], session.events
    session.events.clear()
    return leg, origin, session


def open_client_leg(config: WebSocketConfig, clock: Clock) -> tuple[Any, StringTransport, StandInSession]:
    """A ClientLeg that has answered a client's handshake; its output is cleared."""
    factories = LegFactories(config, clock)
    leg = factories.client_leg()
    leg.factory = factories.server
    session, transport = StandInSession(), Transport()
    leg.session = session
    leg.gate = ReadGate(transport)
    leg.makeConnection(transport)
    leg.dataReceived(b"GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    assert session.events == [("client_opened",)], session.events
    transport.clear()
    session.events.clear()
    return leg, transport, session


MASK = b"\x01\x02\x03\x04"


class PingAnswerTests(unittest.TestCase):
    """The proxy is each peer's endpoint for pings: answered at once, never passed to the other side."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.config = WebSocketConfig(client_ping_interval=0, backend_ping_interval=0)

    def test_a_ping_then_a_close_from_the_client_gets_its_pong_before_the_close_is_passed_on(self) -> None:
        leg, transport, session = open_client_leg(self.config, self.clock)
        leg.dataReceived(frame(OP_PING, b"keepalive", MASK) + frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye", MASK))
        self.assertEqual(parse_frames(transport.value()), [(OP_PONG, b"keepalive")])
        self.assertEqual(session.events, [("client_closing", 1000, b"bye")])

    def test_a_ping_after_the_clients_close_is_not_answered(self) -> None:
        leg, transport, session = open_client_leg(self.config, self.clock)
        leg.dataReceived(frame(OP_CLOSE, struct.pack("!H", 1000), MASK) + frame(OP_PING, b"late", MASK))
        self.assertEqual(transport.value(), b"")  # the close waits for the backend's; the ping gets nothing
        self.assertEqual(session.events, [("client_closing", 1000, None)])

    def test_the_backends_ping_is_answered_by_the_proxy_and_goes_no_further(self) -> None:
        leg, origin, session = open_backend_leg(self.config, self.clock)
        leg.dataReceived(frame(OP_PING, b"beat"))
        self.assertEqual(parse_frames(origin.transport.value()), [(OP_PONG, b"beat")])
        self.assertEqual(origin.transport.value()[1] & 0x80, 0x80)  # masked, as a client's frames are
        self.assertEqual(session.events, [])
        self.assertEqual(origin.server.bytes_in, len(origin.transport.value()))  # what the leg wrote is counted

    def test_pongs_from_a_peer_go_no_further(self) -> None:
        leg, transport, session = open_client_leg(self.config, self.clock)
        leg.dataReceived(frame(OP_PONG, b"unsolicited", MASK) + frame(OP_TEXT, b"hi", MASK))
        self.assertEqual(session.events, [("from_client", b"hi", False)])
        self.assertEqual(transport.value(), b"")


class BackendPingTimingTests(unittest.TestCase):
    """When the backend leg's own pings find a backend that stopped answering."""

    def setUp(self) -> None:
        self.clock = Clock()

    def advance_to(self, when: float) -> None:
        while self.clock.seconds() < when - 1e-9:
            self.clock.advance(min(0.05, when - self.clock.seconds()))

    def pings(self, origin: StandInOrigin) -> list[bytes]:
        return [payload for opcode, payload in parse_frames(origin.transport.value()) if opcode == OP_PING]

    def run_until_dropped(self, leg: Any, origin: StandInOrigin, limit: float) -> float:
        """Advance the clock until the leg drops its connection; the time it did (fails past ``limit``)."""
        while not origin.transport.disconnecting:
            if self.clock.seconds() > limit:
                self.fail(f"not dropped by {limit} s")
            self.clock.advance(0.05)
        return self.clock.seconds()

    def test_the_default_settings_find_a_hung_backend_within_about_ten_seconds(self) -> None:
        config = WebSocketConfig()
        self.assertLessEqual(config.backend_ping_interval + config.backend_ping_timeout, 10)
        leg, origin, session = open_backend_leg(config, self.clock)
        # The backend answers the first ping, then hangs (SIGSTOP): the worst moment, a full interval to the next.
        self.advance_to(config.backend_ping_interval + 0.2)
        (first,) = self.pings(origin)
        leg.dataReceived(frame(OP_PONG, first))
        answered = self.clock.seconds()
        dropped = self.run_until_dropped(leg, origin, answered + 11)
        self.assertGreaterEqual(dropped - answered, 9.8)  # not before a ping went unanswered for its timeout
        self.assertLessEqual(dropped - answered, 10.5)
        self.assertEqual(len(self.pings(origin)), 2)
        leg.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(session.events[-1], ("backend_closed", leg, Termination.PING_TIMEOUT))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_answering_backend_is_kept(self) -> None:
        leg, origin, session = open_backend_leg(WebSocketConfig(), self.clock)
        for _ in range(6):
            self.advance_to(self.clock.seconds() + 5.2)
            leg.dataReceived(frame(OP_PONG, self.pings(origin)[-1]))
        self.assertEqual(len(self.pings(origin)), 6)
        self.assertFalse(origin.transport.disconnecting)
        self.assertEqual(session.events, [])

    def test_messages_from_the_backend_count_as_a_sign_of_life(self) -> None:
        config = WebSocketConfig(backend_ping_interval=1, backend_ping_timeout=1)
        leg, origin, session = open_backend_leg(config, self.clock)
        for i in range(20):
            self.clock.advance(0.5)
            leg.dataReceived(frame(OP_TEXT, b"tick %d" % i))
        self.assertFalse(origin.transport.disconnecting)
        self.assertEqual(len(session.events), 20)

    def test_no_verdict_while_the_proxy_is_not_reading_from_the_backend(self) -> None:
        config = WebSocketConfig(backend_ping_interval=1, backend_ping_timeout=1)
        leg, origin, session = open_backend_leg(config, self.clock)
        self.advance_to(1.2)
        (ping,) = self.pings(origin)
        origin.gate.pauseProducing()  # the client is slow: reading from the backend stops
        self.advance_to(10)
        self.assertFalse(origin.transport.disconnecting)  # its pong may be waiting, unread
        origin.gate.resumeProducing()
        leg.dataReceived(frame(OP_PONG, ping))  # it was
        self.advance_to(10.5)
        self.assertFalse(origin.transport.disconnecting)
        self.assertEqual(len(self.pings(origin)), 1)
        self.advance_to(11.2)
        self.assertEqual(len(self.pings(origin)), 2)  # the next ping, an interval after the pong

    def test_a_backend_that_stays_silent_once_read_again_is_dropped_a_timeout_later(self) -> None:
        config = WebSocketConfig(backend_ping_interval=1, backend_ping_timeout=1)
        leg, origin, session = open_backend_leg(config, self.clock)
        origin.gate.pause(BACKPRESSURE)
        self.advance_to(5)
        self.assertFalse(origin.transport.disconnecting)
        origin.gate.resume(BACKPRESSURE)
        resumed = self.clock.seconds()
        dropped = self.run_until_dropped(leg, origin, resumed + 1.5)
        self.assertLessEqual(dropped - resumed, 1.5)
        leg.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_client_legs_pong_timeout_waits_too_while_the_client_is_not_read(self) -> None:
        leg, transport, session = open_client_leg(WebSocketConfig(client_ping_interval=1, client_ping_timeout=1),
                                                  self.clock)
        leg.gate.pause(BACKPRESSURE)  # the backend is slow: reading from the client stops
        self.advance_to(5)
        self.assertEqual([opcode for opcode, _ in parse_frames(transport.value())], [OP_PING])
        self.assertFalse(transport.disconnecting)
        leg.gate.resume(BACKPRESSURE)
        self.advance_to(6.3)
        self.assertTrue(transport.disconnecting)


class LoopbackKeepaliveTests(ProxyTestCase):
    """Real clients and backend processes: a hung backend is left, clients' keepalives get their pongs."""

    async def backend_process(self, port: int = 0) -> tuple[Child, int]:
        """An echo backend in a process of its own (``tests/wsecho.py``), and its port."""
        child = spawn(self, "echo backend", [sys.executable, "-m", "tests.wsecho", *([str(port)] if port else [])],
                      cwd=ROOT)
        await self.poll(lambda: b"\n" in child.out or child.has_ended, "the backend process listening", ticks=3000)
        if child.has_ended:
            self.fail(f"the backend process ended\n{child.describe()}")
        return child, int(child.out.split()[0])

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.proxy_port}/chat"

    async def _hung_backend(self) -> None:
        child, port = await self.backend_process()
        spare = EchoBackendFactory()
        listener = listen_echo_backend(spare)
        self.addCleanup(listener.stopListening)
        frontend = self.start_proxy(port, listener.getHost().port, websocket=WebSocketConfig(
            client_ping_interval=0, backend_ping_interval=0.5, backend_ping_timeout=1.0, resume_timeout=5,
        ))
        # The client's own keepalive gives up long before the proxy can tell a hung backend (0.3 s against 1-2 s).
        client = connect_client(self.proxy_port, "/chat", autoPingInterval=0.1, autoPingTimeout=0.3)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        await client.opened
        self.assertEqual(spare.handshakes, [])  # on the backend process
        client.sendMessage(b"before")
        await client.wait_messages(1)
        os.kill(child.transport.pid, signal.SIGSTOP)  # type: ignore[attr-defined]  # hangs; cleanup SIGKILLs it
        stopped = reactor.seconds()
        await self.poll(lambda: frontend.backend.resumes or client.closed.called, "the session moved", ticks=1000)
        self.assertFalse(client.closed.called, f"the client's keepalive gave up: {client.wasNotCleanReason}")
        self.assertLess(reactor.seconds() - stopped, 4.0)  # 1-2 s: a ping goes out within 0.5 s, 1 s for its pong
        (handshake,) = spare.handshakes
        self.assertTrue(handshake.headers["x-rubris-session"].endswith("; resume=1"))
        client.sendMessage(b"after")
        messages = await client.wait_messages(2)
        self.assertEqual(messages, [(b"before", False), (b"after", False)])
        self.assertEqual(spare.received, [(b"after", False)])
        client.sendClose(1000)
        await client.closed
        await self.settle(frontend)

    def test_a_hung_backend_is_left_while_the_clients_pings_are_answered(self) -> Deferred[None]:
        """SIGSTOP on the backend process: the proxy's backend pings find it and the session moves."""
        return Deferred.fromCoroutine(self._hung_backend())

    async def _websockets_keepalive(self) -> None:
        if not has_websockets():
            raise SkipTest("the websockets library (>= 13) is not importable (pip install websockets)")
        child, port = await self.backend_process()
        frontend = self.start_proxy(port, websocket=WebSocketConfig(client_ping_interval=0, resume_timeout=10))
        # The library's keepalive, shortened from its 20 s / 20 s: a ping every 0.2 s, given up after 0.5 s.
        argv = [sys.executable, str(INTEROP / "websockets_keepalive.py"), self.ws_url(), "0.2", "0.5", "3"]
        script = spawn(self, "python websockets", argv)
        await self.poll(lambda: any(s.messages_out for s in frontend.websockets) or script.has_ended,
                        "the first echo", ticks=3000)
        child.kill()  # SIGKILL
        await child.ended()
        killed = reactor.seconds()
        await deferLater(1.0)
        await self.backend_process(port)  # a new process on the same port
        await self.poll(lambda: frontend.backend.resumes or script.has_ended, "the session resumed", ticks=1000)
        self.assertGreater(reactor.seconds() - killed, 1.0)  # twice the client's ping timeout, at least
        result = await client_result(self, script)
        self.assertEqual(result["errors"], [], result)
        self.assertEqual(result["close"], {"code": 4001, "reason": "done"})  # answered in kind, whatever this backend answers
        self.assertGreater(result["latency"], 0)  # keepalive pongs came back
        self.assertEqual(frontend.backend.resumes, 1)
        await self.settle(frontend)

    def test_python_websockets_keepalive_survives_a_resume_longer_than_its_ping_timeout(self) -> Deferred[None]:
        """Python ``websockets`` with its keepalive on, while its backend is killed and restarted."""
        return Deferred.fromCoroutine(self._websockets_keepalive())

    async def _node_ping_close(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SkipTest("no node binary (apt-get install nodejs npm)")
        await ensure_node_ws(self)
        backend = EchoBackendFactory()
        backend.setProtocolOptions(echoCloseCodeReason=True)
        listener = listen_echo_backend(backend)
        self.addCleanup(listener.stopListening)
        frontend = self.start_proxy(listener.getHost().port, websocket=WebSocketConfig(
            client_ping_interval=0, backend_ping_interval=0,
        ))
        argv = [node, str(INTEROP / "ws_client.js"), self.ws_url(), "ping-close"]
        result = await run_client_script(self, "node ws", argv)
        self.assertEqual(result["pongs"], ["keepalive"])
        self.assertEqual(result["close"], {"code": 4001, "reason": "done", "clean": True})
        await self.poll(lambda: backend.closes, "the backend saw the close")
        self.assertEqual(backend.closes, [(True, 4001, "done")])
        self.assertEqual(backend.pings, 0)  # the ping ended at the proxy
        await self.settle(frontend)

    def test_node_ws_ping_then_close_gets_its_pong(self) -> Deferred[None]:
        """Node ``ws`` sends a ping and a close back to back: the pong comes before the close's answer."""
        return Deferred.fromCoroutine(self._node_ping_close())


class PingFloodTests(ProxyTestCase):
    """A client that pings without reading costs the proxy no more than a socket buffer of pongs."""

    async def _flood(self) -> None:
        backend = EchoBackendFactory()
        listener = listen_echo_backend(backend)
        self.addCleanup(listener.stopListening)
        frontend = self.start_proxy(listener.getHost().port, websocket=WebSocketConfig(
            client_ping_interval=0, backend_ping_interval=0,
        ))
        client = await self.connect()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.send(b"GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        answer = await client.until(lambda data: b"\r\n\r\n" in data)
        self.assertTrue(answer.startswith(b"HTTP/1.1 101"), answer)
        client.received = b""
        (connection,) = frontend.connections
        connection.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.transport.pauseProducing()  # reads nothing more
        pings = [b"%05d" % i + b"p" * 120 for i in range(5000)]  # 650 KB of pings, 635 KB of pongs
        client.send(b"".join(frame(OP_PING, ping, MASK) for ping in pings) + frame(OP_TEXT, b"after", MASK))
        await self.poll(lambda: backend.received, "the proxy read past the pings", ticks=2000)
        backlog = unsent(connection.transport)
        self.assertLessEqual(backlog, (64 << 10) + 200)  # what was written before the backlog showed
        client.transport.resumeProducing()
        await client.until(lambda data: b"after" in data and pings[-1] in data)
        received = parse_frames(client.received)
        self.assertIn((OP_TEXT, b"after"), received)
        pongs = [payload for opcode, payload in received if opcode == OP_PONG]
        self.assertEqual(pongs[-1], pings[-1])  # the latest ping is answered
        self.assertEqual(pongs, [ping for ping in pings if ping in pongs])  # in order, none made up
        client.send(frame(OP_PING, b"still there?", MASK))  # reading again: answered at once
        await client.until(lambda data: b"still there?" in data)

    def test_pings_from_a_client_that_does_not_read_get_one_pong_once_it_reads(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._flood())
