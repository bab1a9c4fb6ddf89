"""Engine.IO-aware resume, fast: the packet reader against hostile input, and a session's Engine.IO state and
rejoin against a fake session and leg (the real thing: tests/test_engineio.py)."""

from __future__ import annotations

import json

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rubrisproxy.backend import EngineIOStickiness
from rubrisproxy.backend._sticky import ExpiringStore, MemoryStickStore
from rubrisproxy.config import ConfigError, WebSocketConfig, config_from_document
from rubrisproxy.engineio import (
    MAX_CONNECT,
    MAX_NAMESPACES,
    OPEN_LIMIT,
    OpenPacket,
    SocketIOPacket,
    has_sid,
    open_packet,
    session_version,
    socketio_packet,
    without_sid,
)
from rubrisproxy.http import RequestHead
from rubrisproxy.websocket import Message
from rubrisproxy.websocket._eioledger import MAX_ACKS, EngineIOLedger
from rubrisproxy.websocket._eioresume import EngineIOResume

from .helpers import ProxyTestCase, run_reactor_for
from .wsecho import EchoBackendFactory, EchoBackendProtocol, connect_client

OPEN = b'0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


class OpenPacketTests(SynchronousTestCase):
    def test_v4_and_v3_open_packets(self) -> None:
        self.assertEqual(open_packet(OPEN), OpenPacket("abc", 25.0, 20.0))
        v3 = b'0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":5000}'
        self.assertEqual(open_packet(v3), OpenPacket("x", 25.0, 5.0))
        self.assertEqual(open_packet(b'0{"sid":"x","pingInterval":500.0,"pingTimeout":250.0}'), OpenPacket("x", 0.5, 0.25))

    def test_what_is_not_read(self) -> None:
        hostile = [
            b"", b"0", b"0{", b'0{"sid":"abc","pingInterval":25000', b"0{not json}", b"0[1,2]", b'0"x"',
            b'0{"sid":1,"pingInterval":1,"pingTimeout":1}', b'0{"sid":"a","pingInterval":true,"pingTimeout":1}',
            b'0{"sid":"a","pingInterval":-5,"pingTimeout":1}', b'0{"sid":"a","pingInterval":1e99,"pingTimeout":1}',
            b'0{"sid":"a","pingInterval":NaN,"pingTimeout":1}', b'0{"sid":"a","pingInterval":Infinity,"pingTimeout":1}',
            b'0{"sid":"a","pingInterval":1}', b"0{\xff\xfe}", b"1" + OPEN[1:],
            b'0{"sid":"a","pingInterval":0.001,"pingTimeout":5000}',  # a ping loop that would flood the client
            b'0{"sid":"a","pingInterval":25000,"pingTimeout":0}',
            OPEN[:-1] + b' ' * OPEN_LIMIT + b'}',  # too long to be read
        ]
        for payload in hostile:
            self.assertIsNone(open_packet(payload), payload)


class SocketIOPacketTests(SynchronousTestCase):
    def test_heads(self) -> None:
        cases = {
            b"40": SocketIOPacket(ord("0"), b"/", None),
            b'40{"token":"t"}': SocketIOPacket(ord("0"), b"/", None),
            b'40/chat,{"token":"t"}': SocketIOPacket(ord("0"), b"/chat", None),
            b"40/chat": SocketIOPacket(ord("0"), b"/chat", None),
            b"40/chat?x=1,": SocketIOPacket(ord("0"), b"/chat", None),  # v3: a query on the namespace
            b'42["ev",1]': SocketIOPacket(ord("2"), b"/", None),
            b'4212["ev"]': SocketIOPacket(ord("2"), b"/", 12),
            b'42/chat,7["ev"]': SocketIOPacket(ord("2"), b"/chat", 7),
            b'43/chat,7["ok"]': SocketIOPacket(ord("3"), b"/chat", 7),
            b'451-["ev",{"_placeholder":true,"num":0}]': SocketIOPacket(ord("5"), b"/", None),
            b'452-/chat,3["ev",{},{}]': SocketIOPacket(ord("5"), b"/chat", 3),
            b'461-9[{"_placeholder":true,"num":0}]': SocketIOPacket(ord("6"), b"/", 9),
            b"41/chat,": SocketIOPacket(ord("1"), b"/chat", None),
            b'44{"message":"no"}': SocketIOPacket(ord("4"), b"/", None),
            b'42123-["ev"]': SocketIOPacket(ord("2"), b"/", 123),  # a dash is data unless the packet is binary
            b"4512345678901-[]": SocketIOPacket(ord("5"), b"/", None),  # 11 digits of attachments at most
            b"42/chat?x=1,5[]": SocketIOPacket(ord("2"), b"/chat", 5),
            b"42/chat5": SocketIOPacket(ord("2"), b"/chat5", None),  # no comma: all namespace, no ack id
            b"42" + b"9" * 15 + b"[]": SocketIOPacket(ord("2"), b"/", 999_999_999_999_999),  # the longest ack id read
            b"42/a,\n9": SocketIOPacket(ord("2"), b"/a", None),
            b"42/\n,9": SocketIOPacket(ord("2"), b"/\n", 9),
        }
        for payload, head in cases.items():
            self.assertEqual(socketio_packet(payload), head, payload)

    def test_hostile(self) -> None:
        for payload in (b"", b"4", b"4x", b"47", b"2", b"45", b"45-", b"45x-[]", b"4" + b"5" * 40, b"\xff\xff",
                        b"451a-[]", b"45123456789012-[]", b"4612345678901[]"):
            self.assertIsNone(socketio_packet(payload), payload)
        self.assertEqual(socketio_packet(b"42" + b"9" * 30 + b"[]"), SocketIOPacket(ord("2"), b"/", None))
        self.assertEqual(socketio_packet(b"42" + b"9" * 16 + b"[]"), SocketIOPacket(ord("2"), b"/", None))
        huge = b'42/chat,["ev","' + b"x" * (4 << 20) + b'"]'
        self.assertEqual(socketio_packet(huge), SocketIOPacket(ord("2"), b"/chat", None))


class HandshakeTests(SynchronousTestCase):
    def test_without_sid(self) -> None:
        request = b"GET /socket.io/?EIO=4&transport=websocket&sid=Q4R HTTP/1.1\r\nHost: h\r\nCookie: sid=keep\r\n\r\n"
        self.assertEqual(without_sid(request),
                         b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: h\r\nCookie: sid=keep\r\n\r\n")
        self.assertEqual(without_sid(b"GET /x?sid=1&EIO=4 HTTP/1.1\r\n\r\n"), b"GET /x?EIO=4 HTTP/1.1\r\n\r\n")
        self.assertEqual(without_sid(b"GET /x?sid=1 HTTP/1.1\r\n\r\n"), b"GET /x HTTP/1.1\r\n\r\n")
        self.assertEqual(without_sid(b"GET /x?xsid=1 HTTP/1.1\r\n\r\n"), b"GET /x?xsid=1 HTTP/1.1\r\n\r\n")
        self.assertEqual(without_sid(b"GET /x HTTP/1.1\r\n\r\n"), b"GET /x HTTP/1.1\r\n\r\n")

    def test_which_sessions_are_read(self) -> None:
        self.assertEqual(session_version("auto", b"/socket.io/?EIO=4&transport=websocket"), 4)
        self.assertEqual(session_version("auto", b"/socket.io/?transport=websocket&EIO=3"), 3)
        self.assertIsNone(session_version("auto", b"/chat"))
        self.assertIsNone(session_version("auto", b"/x?EIO=9"))
        self.assertEqual(session_version("on", b"/chat"), 4)
        self.assertIsNone(session_version("off", b"/socket.io/?EIO=4"))
        self.assertTrue(has_sid(b"/socket.io/?EIO=4&sid=a"))
        self.assertFalse(has_sid(b"/socket.io/?EIO=4&xsid=a"))

    def test_the_setting(self) -> None:
        def backend(**websocket: object) -> dict[str, object]:
            app = {"servers": [{"address": "127.0.0.1:1"}], "websocket": websocket}
            return {"backends": {"app": app}}

        self.assertEqual(config_from_document(backend()).backends["app"].websocket.engineio, "auto")
        self.assertEqual(config_from_document(backend(engineio="off")).backends["app"].websocket.engineio, "off")
        with self.assertRaises(ConfigError) as raised:
            config_from_document(backend(engineio="yes"))
        self.assertIn("engineio", str(raised.exception))


class FakeLeg:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append(payload)


class FakeSession:
    session_id = "s-1"

    def __init__(self) -> None:
        self.clock = Clock()
        self.holding = False
        self.to_client: list[bytes] = []
        self.rejoins: list[FakeLeg] = []
        self.failures: list[str] = []

    def send_to_client(self, message: Message) -> None:
        self.to_client.append(message.payload)

    def rejoined(self, leg: FakeLeg) -> None:
        self.rejoins.append(leg)

    def rejoin_failed(self, leg: FakeLeg, why: str) -> None:
        self.failures.append(why)


def text(payload: bytes) -> Message:
    return Message(payload, False)


class EngineIOResumeTests(SynchronousTestCase):
    def make(self, version: int = 4, upgraded: bool = False) -> tuple[FakeSession, EngineIOResume]:
        session = FakeSession()
        ledger = EngineIOLedger(session, version, upgraded)  # type: ignore[arg-type]
        return session, EngineIOResume(session, ledger, handshake_timeout=10.0)  # type: ignore[arg-type]

    def joined(self, version: int = 4) -> tuple[FakeSession, EngineIOResume]:
        session, eio = self.make(version)
        eio.backend_message(session, text(OPEN))
        if version >= 4:
            eio.client_message(session, text(b'40{"token":"t"}'))
            eio.backend_message(session, text(b'40{"sid":"s-default"}'))
        eio.client_message(session, text(b'40/chat,{"token":"t"}'))
        eio.backend_message(session, text(b'40/chat,{"sid":"s-chat"}'))
        return session, eio

    def test_what_passes_is_learned_and_returned_unchanged(self) -> None:
        session, eio = self.joined()
        self.assertEqual((eio.ledger.sid, eio.ledger.interval, eio.ledger.timeout), ("abc", 25.0, 20.0))
        self.assertEqual(eio.ledger.joined, {b"/": b'40{"token":"t"}', b"/chat": b'40/chat,{"token":"t"}'})
        for message in (Message(b"\x00\x01binary", True), text(b""), text(b'451-["up",{"_placeholder":true}]'),
                        Message(b"4" * 100, True), text(b"6"), text(b"\xff\x00")):
            self.assertIs(eio.client_message(session, message), message)
            self.assertIs(eio.backend_message(session, message), message)
        self.assertTrue(eio.ledger.can_rejoin)

    def test_a_session_upgraded_from_polling_takes_over_its_polling_record(self) -> None:
        sticky = EngineIOStickiness(MemoryStickStore(Clock(), 60, 10), ExpiringStore(Clock(), 60, 10))
        sticky.learn_body(OPEN, "s1", 4)
        polling = RequestHead(method=b"POST", target=b"/socket.io/?EIO=4&transport=polling&sid=abc", version=b"1.1",
                              headers=[])
        peek = sticky.poll_peek(polling)
        assert peek is not None
        peek.feed(b'40{"token":"t"}\x1e40/chat,{"token":"t"}')
        peek.end()
        session = FakeSession()
        eio = EngineIOResume.for_session(session, WebSocketConfig(),  # type: ignore[arg-type]
                                         b"/socket.io/?EIO=4&transport=websocket&sid=abc", sticky)
        assert eio is not None
        self.assertFalse(eio.ledger.can_rejoin)  # until it takes the record over, at its first Socket.IO packet
        eio.client_message(session, text(b'42/chat,1["tick"]'))
        self.assertTrue(eio.ledger.can_rejoin)
        self.assertEqual((eio.ledger.sid, eio.ledger.interval, eio.ledger.timeout), ("abc", 25.0, 20.0))
        self.assertEqual(eio.ledger.joined, {b"/": b'40{"token":"t"}', b"/chat": b'40/chat,{"token":"t"}'})
        self.assertIsNone(sticky.polled.get(b"abc"))

    def test_an_untrusted_polling_record_gives_the_generic_resume(self) -> None:
        sticky = EngineIOStickiness(MemoryStickStore(Clock(), 60, 10), ExpiringStore(Clock(), 60, 10))
        sticky.learn_body(OPEN, "s1", 4)
        record = sticky.polled.get(b"abc")
        assert record is not None
        record.overflowed()
        session = FakeSession()
        eio = EngineIOResume.for_session(session, WebSocketConfig(),  # type: ignore[arg-type]
                                         b"/socket.io/?EIO=4&transport=websocket&sid=abc", sticky)
        assert eio is not None
        eio.client_message(session, text(b'40/other,'))  # a join on the WebSocket does not make it complete
        self.assertFalse(eio.moving())

    def test_acks_owed_by_the_lost_server_are_counted(self) -> None:
        session, eio = self.joined()
        for ack in (1, 2, 3):
            eio.client_message(session, text(b'42/chat,%d["tick",1]' % ack))
        eio.client_message(session, text(b'42["no ack"]'))
        eio.backend_message(session, text(b'43/chat,2["A"]'))
        eio.backend_message(session, text(b'43/chat,9["A"]'))  # an ack nobody waits for
        session.holding = True
        eio.client_message(session, text(b'42/chat,4["held"]'))  # held: the next server gets it
        self.assertTrue(eio.moving())
        self.assertEqual(eio.moved_off(), 2)
        leg = FakeLeg()
        self.assertTrue(eio.rejoin(leg))
        eio.backend_message(session, text(OPEN))
        eio.backend_message(session, text(b'40{"sid":"n1"}'))
        eio.backend_message(session, text(b'40/chat,{"sid":"n2"}'))
        self.assertEqual(session.rejoins, [leg])
        self.assertEqual(eio.moved_off(), 1)  # the held one, now owed by the new server

    def test_v4_rejoin_replays_the_connects_and_consumes_the_answers(self) -> None:
        session, eio = self.joined()
        self.assertTrue(eio.moving())
        leg = FakeLeg()
        self.assertTrue(eio.rejoin(leg))
        self.assertIsNone(eio.backend_message(session, text(OPEN.replace(b"abc", b"new"))))
        self.assertEqual(leg.sent, [b'40{"token":"t"}', b'40/chat,{"token":"t"}'])
        self.assertIsNone(eio.backend_message(session, text(b'40{"sid":"n1"}')))
        welcome = text(b'42["welcome"]')  # sent by the connect handler: the client is in "/"
        self.assertIs(eio.backend_message(session, welcome), welcome)
        self.assertEqual(session.rejoins, [])
        self.assertIsNone(eio.backend_message(session, text(b'40/chat,{"sid":"n2"}')))
        self.assertEqual(session.rejoins, [leg])
        self.assertEqual(eio.ledger.sid, "abc")  # the client's sid, not the new server's
        self.assertEqual(session.to_client, [b"2"])  # a ping: the client's heartbeat wait starts now
        self.assertIsNone(eio.client_message(session, text(b"3")))  # ... and its pong ends here
        pong = text(b"3")
        self.assertIs(eio.client_message(session, pong), pong)  # the next one answers the server

    def test_v4_heartbeat_while_moving(self) -> None:
        session, eio = self.joined()
        session.clock.advance(10)
        eio.backend_message(session, text(b"2"))  # the server's last ping
        session.clock.advance(5)
        eio.moving()
        session.clock.advance(19.9)
        self.assertEqual(session.to_client, [])
        session.clock.advance(0.1)  # an interval after the server's last ping
        self.assertEqual(session.to_client, [b"2"])
        session.clock.advance(25)
        self.assertEqual(session.to_client, [b"2", b"2"])
        self.assertIsNone(eio.client_message(session, text(b"3")))
        self.assertIsNone(eio.client_message(session, text(b"3")))
        eio.stop_moving()
        session.clock.advance(100)
        self.assertEqual(session.to_client, [b"2", b"2"])
        self.assertEqual(session.clock.getDelayedCalls(), [])

    def test_v3_the_proxy_answers_the_client_s_pings_and_rejoins_custom_namespaces(self) -> None:
        session, eio = self.joined(version=3)
        ping = text(b"2")
        self.assertIs(eio.client_message(session, ping), ping)  # relaying: the server answers
        eio.moving()
        self.assertEqual(session.clock.getDelayedCalls(), [])  # v3: the proxy does not ping the client
        self.assertIsNone(eio.client_message(session, text(b"2")))
        self.assertEqual(session.to_client, [b"3"])
        leg = FakeLeg()
        eio.rejoin(leg)
        eio.backend_message(session, text(OPEN))
        self.assertEqual(leg.sent, [b'40/chat,{"token":"t"}'])  # the default namespace is joined by the server
        self.assertIsNone(eio.backend_message(session, text(b"40")))
        self.assertIsNone(eio.backend_message(session, text(b"40/chat,")))
        self.assertEqual(session.rejoins, [leg])
        self.assertEqual(session.to_client, [b"3"])  # v3: no ping of the proxy's

    def test_a_refused_namespace_fails_the_rejoin(self) -> None:
        session, eio = self.joined()
        eio.moving()
        eio.rejoin(FakeLeg())
        eio.backend_message(session, text(OPEN))
        eio.backend_message(session, text(b'40{"sid":"n1"}'))
        self.assertIsNone(eio.backend_message(session, text(b'44/chat,{"message":"not authorized"}')))
        self.assertEqual(len(session.failures), 1)
        self.assertIn("/chat", session.failures[0])
        self.assertEqual(session.rejoins, [])

    def test_a_silent_server_fails_the_rejoin_in_time(self) -> None:
        session, eio = self.joined()
        eio.moving()
        eio.rejoin(FakeLeg())
        session.clock.advance(10)
        self.assertEqual(len(session.failures), 1)

    def test_an_unreadable_open_packet_fails_the_rejoin(self) -> None:
        session, eio = self.joined()
        eio.moving()
        eio.rejoin(FakeLeg())
        eio.backend_message(session, text(b"0{broken"))
        self.assertEqual(len(session.failures), 1)

    def test_namespaces_joined_out_of_sight_mean_the_generic_resume(self) -> None:
        session, eio = self.make(upgraded=True)  # upgraded from polling: CONNECTs may have gone that way
        eio.client_message(session, text(b'42["ev"]'))
        self.assertFalse(eio.ledger.can_rejoin)
        self.assertFalse(eio.moving())
        self.assertFalse(eio.rejoin(FakeLeg()))
        eio.stop_moving()
        session, eio = self.make(upgraded=True)
        eio.client_message(session, text(b"40"))  # joined on the WebSocket (python-socketio does)
        eio.client_message(session, text(b'42["ev"]'))
        self.assertTrue(eio.ledger.can_rejoin)
        eio.backend_message(session, text(b'42/other,["ev"]'))  # a namespace it never saw joined
        self.assertFalse(eio.ledger.can_rejoin)

    def test_what_a_crash_replays(self) -> None:
        replayable = EngineIOResume.replayable
        self.assertTrue(replayable(text(b'42["ev"]')))
        self.assertTrue(replayable(Message(b"40", True)))  # an attachment
        for payload in (b"40", b'40/chat,{"a":1}', b"3", b"2probe", b"5", b""):
            self.assertFalse(replayable(text(payload)), payload)

    def test_what_a_client_can_make_it_keep_is_bounded(self) -> None:
        session, eio = self.joined()
        eio.client_message(session, text(b"40/big," + b"x" * MAX_CONNECT))
        self.assertNotIn(b"/big", eio.ledger.joined)
        self.assertFalse(eio.ledger.can_rejoin)
        eio.client_message(session, text(b"40/later,"))
        self.assertFalse(eio.ledger.can_rejoin)  # for good
        session, eio = self.joined()
        for n in range(MAX_NAMESPACES + 10):
            eio.client_message(session, text(b"40/n%d," % n))
        self.assertEqual(len(eio.ledger.joined), MAX_NAMESPACES)
        self.assertFalse(eio.ledger.can_rejoin)
        for n in range(MAX_ACKS + 10):
            eio.client_message(session, text(b'42/chat,%d["x"]' % n))
        self.assertEqual(eio.moved_off(), MAX_ACKS)

    def test_what_crosses_to_another_process(self) -> None:
        session, eio = self.joined()
        eio.client_message(session, text(b'42/chat,1["tick"]'))
        session.holding = True
        eio.client_message(session, text(b'42/chat,2["held"]'))
        session.clock.advance(4)
        eio.backend_message(session, text(b"2"))
        session.clock.advance(3)
        state = json.loads(json.dumps(eio.carried()))
        self.assertEqual(set(state), {"sid", "interval", "timeout", "since_ping", "joined", "server_sids", "acks",
                                      "held_acks", "complete", "seen_traffic", "owed_pongs"})
        self.assertEqual((state["since_ping"], state["acks"], state["held_acks"]), (3.0, [["/chat", 1]], [["/chat", 2]]))
        _, other = self.make()
        other.restore(state)
        self.assertEqual(json.loads(json.dumps(other.carried())), state)
        self.assertEqual(other.ledger.joined, eio.ledger.joined)
        self.assertTrue(other.ledger.can_rejoin)

    def test_a_namespace_left_is_not_rejoined(self) -> None:
        session, eio = self.joined()
        eio.client_message(session, text(b"41/chat,"))
        self.assertEqual(list(eio.ledger.joined), [b"/"])


class EngineIOBackendProtocol(EchoBackendProtocol):
    """A tiny Engine.IO v4 server: an open packet on open, CONNECTs answered (unless the factory is ``mute``),
    everything else echoed."""

    factory: EngineIOBackendFactory

    def onOpen(self) -> None:
        super().onOpen()
        self.sendMessage(OPEN.replace(b"abc", b"sid-%d" % len(self.factory.handshakes)))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload[:2] != b"40":
            super().onMessage(payload, isBinary)
            return
        self.factory.received.append((payload, isBinary))
        if not self.factory.mute:
            namespace = payload[2:].partition(b",")[0] + b"," if payload[2:3] == b"/" else b""
            self.sendMessage(b'40%s{"sid":"server-side"}' % namespace)


class EngineIOBackendFactory(EchoBackendFactory):
    protocol = EngineIOBackendProtocol

    def __init__(self, mute: bool = False) -> None:
        super().__init__()
        self.mute = mute


class SessionRejoinTests(ProxyTestCase):
    """A session-mode Engine.IO session over the proxy, against tiny Engine.IO servers."""

    def start(self, *factories: EngineIOBackendFactory, **websocket: object) -> None:
        self.factories = factories
        self.listeners = [reactor.listenTCP(0, factory, interface="127.0.0.1") for factory in factories]
        for listener in self.listeners:
            self.addCleanup(lambda listener=listener: listener.stopListening() if listener.connected else None)
        config = WebSocketConfig(client_ping_interval=0, backend_ping_interval=0, resume_timeout=5, **websocket)  # type: ignore[arg-type]
        self.frontend = self.start_proxy(*(listener.getHost().port for listener in self.listeners), websocket=config)

    @defer.inlineCallbacks
    def joined(self):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, "/socket.io/?EIO=4&transport=websocket")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        yield client.wait_messages(1)  # the open packet
        client.sendMessage(b'40/chat,{"token":"t"}')
        yield client.wait_messages(2)  # its answer
        (index,) = [i for i, factory in enumerate(self.factories) if factory.open]
        return client, index

    def kill(self, index: int) -> None:
        self.listeners[index].stopListening()
        for protocol in list(self.factories[index].open):
            protocol.transport.abortConnection()

    @defer.inlineCallbacks
    def test_the_new_server_is_joined_and_the_client_sees_nothing_of_it(self):  # type: ignore[no-untyped-def]
        self.start(EngineIOBackendFactory(), EngineIOBackendFactory())
        client, first = yield self.joined()
        self.kill(first)
        client.sendMessage(b'42/chat,["after"]')
        messages = yield client.wait_messages(4)
        # The first server's answer, the proxy's ping as the rejoin ends, the echo from the new server.
        self.assertEqual([payload for payload, _ in messages[1:]],
                         [b'40/chat,{"sid":"server-side"}', b"2", b'42/chat,["after"]'])
        other = self.factories[1 - first]
        self.assertEqual(other.received, [(b'40/chat,{"token":"t"}', False), (b'42/chat,["after"]', False)])
        (handshake,) = other.handshakes
        self.assertNotIn("sid", handshake.params)
        self.assertEqual(handshake.params["EIO"], ["4"])
        self.assertFalse(client.closed.called)
        self.assertEqual(self.frontend.backend.resumes, 1)

    @defer.inlineCallbacks
    def test_a_drained_server_answers_the_acks_it_owes_before_its_leg_closes(self):  # type: ignore[no-untyped-def]
        # A server may drop its answers to what it reads together with the close (python-socketio does: on a
        # loaded machine the emit and the drain's close arrive in one read): the proxy waits for them first.
        self.start(EngineIOBackendFactory(), EngineIOBackendFactory())
        client, first = yield self.joined()
        drained = self.factories[first]
        (server,) = drained.open
        client.sendMessage(b'42/chat,7["tick"]')
        yield self.poll(lambda: len(drained.received) == 2, "the emit at its server")
        self.frontend.backend.drain_server(f"s{first + 1}")
        yield run_reactor_for(10)
        self.assertEqual((drained.open, drained.closes), ({server}, []))  # its leg open: it owes an ack
        server.sendMessage(b'43/chat,7["A"]')
        messages = yield client.wait_messages(4)
        self.assertEqual(messages[3][0], b'43/chat,7["A"]')  # after the echo of the emit
        yield self.poll(lambda: self.frontend.backend.resumes == 1, "the session moved")
        self.assertEqual([code for _, code, _ in drained.closes], [1001])
        self.assertEqual(self.frontend.backend.messages_lost, 0)
        self.assertFalse(client.closed.called)

    @defer.inlineCallbacks
    def test_a_drained_server_that_does_not_answer_is_left_at_the_deadline(self):  # type: ignore[no-untyped-def]
        self.start(EngineIOBackendFactory(), EngineIOBackendFactory(), open_handshake_timeout=0.3)
        client, first = yield self.joined()
        drained = self.factories[first]
        client.sendMessage(b'42/chat,7["tick"]')
        yield self.poll(lambda: len(drained.received) == 2, "the emit at its server")
        self.frontend.backend.drain_server(f"s{first + 1}")
        yield self.poll(lambda: self.frontend.backend.resumes == 1, "the session moved")
        self.assertEqual(self.frontend.backend.messages_lost, 1)  # the ack it owed never came
        client.sendMessage(b'42/chat,["after"]')
        messages = yield client.wait_messages(5)
        self.assertEqual(messages[-1][0], b'42/chat,["after"]')  # echoed by the new server
        self.assertFalse(client.closed.called)

    @defer.inlineCallbacks
    def test_with_engineio_off_the_old_handshake_is_sent(self):  # type: ignore[no-untyped-def]
        self.start(EngineIOBackendFactory(), EngineIOBackendFactory(), engineio="off")
        client, first = yield self.joined()
        self.kill(first)
        client.sendMessage(b'42/chat,["after"]')
        messages = yield client.wait_messages(4)
        self.assertEqual(messages[2][0][:1], b"0")  # the new server's open packet reaches the client as it is
        self.assertEqual(self.factories[1 - first].received, [(b'42/chat,["after"]', False)])

    @defer.inlineCallbacks
    def test_a_client_that_closes_while_its_session_rejoins_ends_once(self):  # type: ignore[no-untyped-def]
        self.start(EngineIOBackendFactory(), EngineIOBackendFactory(mute=True))
        client, first = yield self.joined()
        if first == 1:
            raise SkipTest("the client landed on the mute server")  # round robin starts with s1: not expected
        self.kill(first)
        yield self.poll(lambda: self.factories[1].received, "the CONNECT replayed to the mute server")
        client.sendClose(1000)
        yield client.closed
        yield self.settle(self.frontend)
        self.assertEqual(len(self.access_log.entries), 1)
        self.assertEqual(self.frontend.backend.resumes, 0)
