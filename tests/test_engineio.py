"""Engine.IO stickiness: the sid learned from the handshake keeps a Socket.IO session on its server."""

from __future__ import annotations

import json
import signal

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.backend import SESSION_GONE, UNKNOWN_SESSION, Backend, open_packet_sid, session_id
from rubrisproxy.backend._engineio import (
    POLL_PEEK_LIMIT,
    POLLED_RECORD_BYTES,
    EngineIOStickiness,
    PolledSession,
    is_engineio,
)
from rubrisproxy.backend._sticky import ExpiringStore, MemoryStickStore
from rubrisproxy.clients import ClientRegistry
from rubrisproxy.config import BackendConfig, ClientsConfig, ServerConfig, WebSocketConfig
from rubrisproxy.engineio import MAX_NAMESPACES, polling_packets
from rubrisproxy.http import RequestHead

from .eio.harness import (
    run_client,
    spawn_emitter,
    spawn_node_emitter,
    spawn_reconnecting_client,
    spawn_server,
    start_server,
)
from .helpers import ProxyTestCase

OPEN = b'{"sid":"abc123","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}'


def request(target: bytes) -> RequestHead:
    return RequestHead(method=b"GET", target=target, version=b"1.1", headers=[])


class ParsingTests(SynchronousTestCase):
    def test_open_packets_of_v4_and_v3(self) -> None:
        self.assertEqual(open_packet_sid(b"0" + OPEN), b"abc123")  # v4
        self.assertEqual(open_packet_sid(b"%d:0%s2:40" % (len(OPEN) + 1, OPEN)), b"abc123")  # v3 text payload
        self.assertEqual(open_packet_sid(b"\x00\x09\x07\xff0" + OPEN), b"abc123")  # v3 binary payload

    def test_what_is_not_an_open_packet(self) -> None:
        for body in (b'42["event",{"sid":"x"}]', b"0{not json", b'0{"sid":"x"}', b"ok", b"x" * 40 + b"0" + OPEN):
            self.assertIsNone(open_packet_sid(body), body)

    def test_requests(self) -> None:
        self.assertTrue(is_engineio(request(b"/socket.io/?EIO=4&transport=polling&t=1")))
        self.assertFalse(is_engineio(request(b"/socket.io/?transport=polling&XEIO=4")))
        self.assertEqual(session_id(request(b"/socket.io/?EIO=4&transport=websocket&sid=Q4Ro-y_A")), b"Q4Ro-y_A")
        self.assertIsNone(session_id(request(b"/socket.io/?EIO=4&transport=polling&xsid=1")))

    def test_the_io_cookie_names_the_sid_too(self) -> None:
        sticky = EngineIOStickiness(MemoryStickStore(Clock(), 60, 10), ExpiringStore(Clock(), 60, 10))
        sticky.learn_cookie([(b"Set-Cookie", b"io=cookie-sid; Path=/; HttpOnly")], "s2")
        self.assertEqual(sticky.server_for(request(b"/socket.io/?EIO=3&sid=cookie-sid&transport=polling")), "s2")
        self.assertIsNone(sticky.server_for(request(b"/socket.io/?EIO=3&sid=other&transport=polling")))


class GoneSessionTests(SynchronousTestCase):
    """Backend.assign for a request of a learned sid whose server can no longer take it."""

    def setUp(self) -> None:
        self.gone = SESSION_GONE
        servers = tuple(ServerConfig(f"s{i}", "127.0.0.1", 9000 + i) for i in (1, 2))
        self.backend = Backend(BackendConfig("app", servers), clock=Clock())
        self.backend.engineio.remember(b"abc", "s1")
        self.target = b"/socket.io/?EIO=4&transport=polling&sid=abc"

    def assign(self, gone: object = None, target: bytes | None = None) -> object:
        waiter = Waiting(target or self.target)
        return self.backend.assign(waiter, frozenset(), gone)

    def test_a_live_server_takes_its_sessions_draining_or_not(self) -> None:
        s1 = self.backend.server_named("s1")
        self.assertIs(self.assign(self.gone), s1)
        self.backend.drain_server("s1")
        self.assertIs(self.assign(self.gone), s1)
        self.assertIs(self.assign(), self.backend.server_named("s2"))  # a resume (no ``gone``): balanced, as before

    def test_a_down_or_removed_server_s_sessions_are_gone_and_forgotten(self) -> None:
        self.backend.server_named("s1").set_up(False)
        self.assertIs(self.assign(self.gone), self.gone)
        self.assertEqual(self.backend.engineio.server_for(request(self.target)), "")
        self.backend.server_named("s1").set_up(True)
        self.assertIs(self.assign(self.gone), self.gone)  # the sid stays forgotten: the restarted server has no such session
        self.backend.engineio.remember(b"def", "s2")
        self.backend.remove_server("s2")
        self.assertIs(self.assign(self.gone, b"/socket.io/?EIO=4&transport=polling&sid=def"), self.gone)

    def test_what_the_proxy_does_not_know_is_balanced(self) -> None:
        self.assertIn(self.assign(self.gone, b"/socket.io/?EIO=4&transport=polling&sid=unknown"), self.backend.servers)
        self.assertIn(self.assign(self.gone, b"/socket.io/?EIO=4&transport=polling"), self.backend.servers)


class Waiting:
    """A request waiting for a server, as the backend sees it."""

    def __init__(self, target: bytes) -> None:
        self.head = request(target)
        self.finished = False

    def client_address_for_balancing(self) -> str:
        return "127.0.0.1"

    def dequeued(self, server: object) -> None:
        pass

    def queue_timed_out(self) -> None:
        pass


class SocketIOClusterTests(ProxyTestCase):
    """Two real python-socketio servers behind round robin, and a real client that polls, then upgrades."""

    timeout = 60

    @defer.inlineCallbacks
    def connect_through_proxy(self, learn: bool):  # type: ignore[no-untyped-def]
        ports = yield defer.gatherResults([start_server(self, "A"), start_server(self, "B")])
        frontend = self.start_proxy(*ports)
        if not learn:
            frontend.backend.engineio = None  # as `engineio-sticky = false` leaves it
        result = yield run_client(f"http://127.0.0.1:{self.proxy_port}", 5)
        return frontend, result

    @defer.inlineCallbacks
    def test_the_learned_sid_keeps_polling_and_the_upgrade_on_one_server(self):  # type: ignore[no-untyped-def]
        frontend, result = yield self.connect_through_proxy(learn=True)
        self.assertEqual((result["connected"], result["error"], result["transport"]), (True, None, "websocket"), result)
        (first, *_) = result["polling_servers"]
        self.assertEqual(set(result["polling_servers"]), {first}, result)
        self.assertEqual(result["names"], [first] * 5, result)  # the WebSocket reached the handshake's server
        self.assertGreaterEqual(frontend.backend.engineio.learned, 1)

    @defer.inlineCallbacks
    def test_without_learning_round_robin_splits_the_session(self):  # type: ignore[no-untyped-def]
        _, result = yield self.connect_through_proxy(learn=False)
        same_server = (
            result["connected"] and result["transport"] == "websocket"
            and len(set(result["polling_servers"]) | set(result["names"])) == 1
        )
        self.assertFalse(same_server, result)


class SocketIOFailoverTests(ProxyTestCase):
    """A real python-socketio client on a session-mode WebSocket whose server is killed, with the generic resume
    (``engineio = "off"``): the other server refuses the old sid, so the client is told at once."""

    timeout = 60

    @defer.inlineCallbacks
    def test_a_killed_server_s_client_is_told_at_once_and_reconnects_to_the_other(self):  # type: ignore[no-untyped-def]
        servers = {name: spawn_server(self, name) for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        # session mode, resume-timeout 30 s: the defaults
        frontend = self.start_proxy(*ports, websocket=WebSocketConfig(engineio="off"))
        client = spawn_reconnecting_client(self, f"http://127.0.0.1:{self.proxy_port}")
        line = yield client.next_line()
        self.assertTrue(line.startswith("ON "), client.lines)
        first = line.split()[1]
        (other,) = set(servers) - {first}
        servers[first].transport.signalProcess("KILL")  # type: ignore[union-attr]
        killed = reactor.seconds()
        line = yield client.next_line()
        noticed = reactor.seconds() - killed
        self.assertTrue(line.startswith("DISCONNECTED"), client.lines)
        self.assertLess(noticed, 2.0, client.lines)  # not resume-timeout (30 s) in limbo
        line = yield client.next_line()
        self.assertEqual(line, f"BACK {other} websocket", client.lines)
        self.assertEqual(frontend.backend.resume_failures, {"refused": 1})


class SocketIOResumeTests(ProxyTestCase):
    """Engine.IO-aware resume (the default): a python-socketio client in two namespaces, with auth, emitting with
    acks every 100 ms, whose server is SIGKILLed, does not notice."""

    timeout = 60

    def test_python_socketio(self):  # type: ignore[no-untyped-def]
        return self.kill_the_client_s_server(spawn_emitter)

    def test_python_socketio_upgraded_from_polling(self):  # type: ignore[no-untyped-def]
        return self.kill_the_client_s_server(lambda case, url: spawn_emitter(case, url, "upgrade"))

    def test_socket_io_javascript_client(self):  # type: ignore[no-untyped-def]
        return self.kill_the_client_s_server(spawn_node_emitter)

    def test_socket_io_javascript_client_upgraded_from_polling(self):  # type: ignore[no-untyped-def]
        # socket.io-client's default transports: it joins its namespaces (with auth) over long polling, then
        # upgrades; what the proxy read of the polling bodies lets the WebSocket session rejoin them.
        return self.kill_the_client_s_server(lambda case, url: spawn_node_emitter(case, url, "upgrade"))

    @defer.inlineCallbacks
    def test_a_drained_server_s_client_loses_no_emit(self):  # type: ignore[no-untyped-def]
        servers = {name: spawn_server(self, name) for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        frontend = self.start_proxy(*ports)
        client = spawn_emitter(self, f"http://127.0.0.1:{self.proxy_port}")
        line = yield client.next_line()
        self.assertTrue(line.startswith("ON "), client.lines)
        first = {"A": "s1", "B": "s2"}[line.split()[1]]
        yield task.deferLater(reactor, 0.5, lambda: None)
        frontend.backend.drain_server(first)
        line = yield client.next_line()
        self.assertTrue(line.startswith("MOVED "), client.lines)
        line = yield client.next_line()
        self.assertTrue(line.startswith("DONE "), client.lines)
        report = json.loads(line[5:])
        self.assertTrue(report["connected"], report)
        self.assertEqual((report["unacked"], frontend.backend.messages_lost), ([], 0), report)
        self.assertEqual(frontend.backend.resumes, 1)

    @defer.inlineCallbacks
    def test_a_move_longer_than_the_heartbeat_keeps_the_client(self):  # type: ignore[no-untyped-def]
        # A 1 s ping interval and timeout: a client not pinged for 2 s gives up. The next server is stopped
        # (SIGSTOP) for 3.5 s while the client's server is killed, so only the proxy's pings keep the client.
        servers = {name: spawn_server(self, name, EIO_PING_INTERVAL="1") for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        frontend = self.start_proxy(*ports)
        client = spawn_emitter(self, f"http://127.0.0.1:{self.proxy_port}")
        line = yield client.next_line()
        self.assertTrue(line.startswith("ON "), client.lines)
        first = line.split()[1]
        (other,) = set(servers) - {first}
        servers[other].transport.signalProcess(signal.SIGSTOP)  # type: ignore[union-attr]
        self.addCleanup(lambda: servers[other].reason is None and servers[other].transport.signalProcess(signal.SIGCONT))  # type: ignore[union-attr]
        servers[first].transport.signalProcess("KILL")  # type: ignore[union-attr]
        yield task.deferLater(reactor, 3.5, lambda: None)
        servers[other].transport.signalProcess(signal.SIGCONT)  # type: ignore[union-attr]
        line = yield client.next_line()
        self.assertEqual(line, f"MOVED {other}", client.lines)
        line = yield client.next_line()
        self.assertTrue(line.startswith("DONE "), client.lines)
        report = json.loads(line[5:])
        self.assertTrue(report["connected"], report)
        self.assertEqual(frontend.backend.resumes, 1)

    @defer.inlineCallbacks
    def kill_the_client_s_server(self, spawn):  # type: ignore[no-untyped-def]
        """``spawn``'s client (tests/eio/emitter.py's lines) sees no disconnect when its server is SIGKILLed."""
        servers = {name: spawn_server(self, name) for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        frontend = self.start_proxy(*ports)
        client = spawn(self, f"http://127.0.0.1:{self.proxy_port}")
        line = yield client.next_line()
        self.assertTrue(line.startswith("ON "), client.lines)
        first = line.split()[1]
        (other,) = set(servers) - {first}
        yield task.deferLater(reactor, 0.5, lambda: None)
        servers[first].transport.signalProcess("KILL")  # type: ignore[union-attr]
        line = yield client.next_line()
        self.assertEqual(line, f"MOVED {other}", client.lines)
        line = yield client.next_line()
        self.assertTrue(line.startswith("DONE "), client.lines)
        report = json.loads(line[5:])
        self.assertTrue(report["connected"], report)
        self.assertEqual(report.get("transport", "websocket"), "websocket", report)
        self.assertEqual(report["sid"], report["sid_after"], report)  # the client keeps its Engine.IO sid ...
        for start, end in report["sids"].values():
            self.assertEqual(start, end, report)  # ... and its socket ids
        self.assertGreater(report["servers"].get(other, 0), 5, report)  # events continue on the other server
        backend = frontend.backend
        self.assertEqual(backend.resumes, 1)
        self.assertEqual(backend.resume_failures, {})
        # The emits in flight at the kill never got their ack: the proxy counted exactly those lost.
        self.assertEqual(len(report["unacked"]), backend.messages_lost, report)
        self.assertLessEqual(len(report["unacked"]), 3, report)
        # The other server's connect handlers saw the client's auth in both namespaces, on the resumed handshake.
        connects = [line for line in servers[other].stdout.decode().splitlines() if line.startswith("CONNECT ")]
        self.assertEqual(sorted(connect.split()[1] for connect in connects), ["/", "/chat"], connects)
        for connect in connects:
            _, _, auth, session = connect.split(" ", 3)
            self.assertEqual(auth, '{"token":"secret-1"}', connects)
            self.assertTrue(session.endswith("; resume=1"), connects)


class SocketIOPollingFailoverTests(ProxyTestCase):
    """A real python-socketio client on long polling only (no WebSocket) whose server goes away: its next
    request is answered at once as an unknown sid, never sent to a server that does not know it, and the
    client is back on the other server with a new session within a second or two."""

    timeout = 60

    @defer.inlineCallbacks
    def lose_the_server(self, how: str, mode: str = "polling"):  # type: ignore[no-untyped-def]
        servers = {name: spawn_server(self, name) for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        frontend = self.start_proxy(*ports)
        self.registry = frontend.clients = ClientRegistry("web", ClientsConfig(("sid",), 60), frontend.clock)
        self.addCleanup(self.registry.stop)
        client = spawn_reconnecting_client(self, f"http://127.0.0.1:{self.proxy_port}", mode)
        line = yield client.next_line()
        self.assertTrue(line.startswith("ON "), client.lines)
        first = line.split()[1]
        (other,) = set(servers) - {first}
        if mode == "polling-idle":
            yield task.deferLater(reactor, 0.3, lambda: None)  # its long poll is surely waiting
        name, other_name = ("s1", "s2") if first == "A" else ("s2", "s1")
        (old_sid,) = {e.target.partition("sid=")[2].partition("&")[0] for e in self.access_log.entries if "sid=" in e.target}
        lost = reactor.seconds()
        if how == "kill":
            servers[first].transport.signalProcess("KILL")  # type: ignore[union-attr]
        else:
            frontend.backend.remove_server(name)
        line = yield client.next_line()
        self.assertLess(reactor.seconds() - lost, 1.0, client.lines)
        self.assertTrue(line.startswith("DISCONNECTED"), client.lines)
        line = yield client.next_line()
        self.assertLess(reactor.seconds() - lost, 2.0, client.lines)
        self.assertEqual(line, f"BACK {other} polling", client.lines)
        old = [e for e in self.access_log.entries if f"sid={old_sid}" in e.target and e.at >= lost]
        self.assertTrue(old, self.access_log.entries)
        for entry in old:
            self.assertNotEqual(entry.server, other_name, entry)  # never a request the other server cannot know
            self.assertIn((entry.status, entry.termination), {(400, "session-gone"), (502, "server-abort")}, entry)
            self.assertLess(entry.total_ms, 1000, entry)  # no wait for a queue or any timeout
        if "session-gone" in {e.termination for e in old}:
            self.assertEqual(frontend.backend.engineio.server_for(request(old[0].target.encode())), "")  # forgotten
        return old

    @defer.inlineCallbacks
    def test_a_killed_server_s_clients_next_request_fails_at_once(self):  # type: ignore[no-untyped-def]
        old = yield self.lose_the_server("kill")
        # The client's requests in flight may all have been cut (502); one more of its session, as a late
        # emit would be, meets the refused connect (or the forgotten sid): 400 as Engine.IO's own, at once.
        target = old[0].target.partition("&t=")[0]
        (response,) = yield self.request(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n4ping" % (
            target.encode()))
        self.assertEqual((response.status, response.body), (400, UNKNOWN_SESSION))
        # The last POST of the old sid is this one; the reconnected client's requests may be logged after it.
        old_posts = [e.termination for e in self.access_log.entries if e.method == "POST" and e.target == target]
        self.assertEqual(old_posts[-1], "session-gone", old_posts)

    @defer.inlineCallbacks
    def test_a_long_poll_in_flight_at_the_kill_fails_at_once(self):  # type: ignore[no-untyped-def]
        old = yield self.lose_the_server("kill", "polling-idle")
        poll = old[0]  # waiting since before the kill; cut with its server, or retried on a new connection, refused
        self.assertEqual(poll.method, "GET", old)
        self.assertIn((poll.status, poll.termination), {(400, "session-gone"), (502, "server-abort")}, old)
        self.assertGreater(poll.total_ms, 250, old)

    @defer.inlineCallbacks
    def test_a_draining_server_keeps_its_sessions(self):  # type: ignore[no-untyped-def]
        servers = {name: spawn_server(self, name) for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        frontend = self.start_proxy(*ports)
        client = spawn_reconnecting_client(self, f"http://127.0.0.1:{self.proxy_port}", "polling")
        line = yield client.next_line()
        first = line.split()[1]
        frontend.backend.drain_server("s1" if first == "A" else "s2")
        drained = reactor.seconds()
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(client.lines, [line])  # no disconnect
        after = [e for e in self.access_log.entries if e.at >= drained]
        self.assertGreater(len(after), 5, after)  # the emits went on, every 100 ms
        self.assertEqual({(e.status, e.server) for e in after}, {(200, "s1" if first == "A" else "s2")}, after)

    @defer.inlineCallbacks
    def test_a_removed_server_s_clients_are_told_at_once(self):  # type: ignore[no-untyped-def]
        # The server lives on: the long poll waiting there is answered too (the client waits for it).
        old = yield self.lose_the_server("remove")
        self.assertEqual({(e.status, e.termination) for e in old}, {(400, "session-gone")}, old)
        self.assertNotIn(old[0].session, self.registry.sessions)
        self.assertEqual(set(self.registry.destroyed), {"closed-by-server"})  # as after the server's own 400

    @defer.inlineCallbacks
    def test_the_socket_io_javascript_client_on_polling_is_told_at_once(self):  # type: ignore[no-untyped-def]
        servers = {name: spawn_server(self, name) for name in ("A", "B")}
        ports = yield defer.gatherResults([servers["A"].port, servers["B"].port])
        frontend = self.start_proxy(*ports)
        client = spawn_node_emitter(self, f"http://127.0.0.1:{self.proxy_port}", "polling")
        line = yield client.next_line()
        self.assertTrue(line.startswith("ON "), client.lines)
        name = "s1" if line.split()[1] == "A" else "s2"
        lost = reactor.seconds()
        frontend.backend.remove_server(name)  # alive: its long poll would otherwise wait for its next ping
        line = yield client.next_line()
        self.assertLess(reactor.seconds() - lost, 1.0, client.lines)
        self.assertTrue(line.startswith("DISCONNECTED "), client.lines)  # the client reconnects from here
        after = [e for e in self.access_log.entries if e.at >= lost and "sid=" in e.target]
        self.assertTrue(after, self.access_log.entries)
        self.assertEqual({(e.status, e.termination) for e in after}, {(400, "session-gone")}, after)



class PollingRecordTests(SynchronousTestCase):
    """What the proxy keeps of a session's polling phase (:class:`PolledSession`), for its WebSocket session."""

    def sticky(self, version: int = 4) -> tuple[EngineIOStickiness, PolledSession]:
        sticky = EngineIOStickiness(MemoryStickStore(Clock(), 60, 10), ExpiringStore(Clock(), 60, 10))
        body = b"0" + OPEN if version >= 4 else b"%d:0%s" % (len(OPEN) + 1, OPEN)
        self.assertIsNone(sticky.learn_body(body, "s1", version))
        record = sticky.polled.get(b"abc123")
        assert record is not None
        self.assertEqual((record.open.ping_interval, record.open.ping_timeout, record.version), (25.0, 20.0, version))
        return sticky, record

    def poll(self, sticky: EngineIOStickiness, method: bytes, chunks: list[bytes]) -> None:
        head = RequestHead(method=method, target=b"/socket.io/?EIO=4&transport=polling&sid=abc123", version=b"1.1",
                           headers=[])
        peek = sticky.poll_peek(head)
        assert peek is not None
        for chunk in chunks:
            peek.feed(chunk)
        peek.end()

    def test_polling_payloads_of_v4_and_v3(self) -> None:
        self.assertEqual(polling_packets(b'40{"token":"t"}\x1e40/chat,{"token":"t"}', 4),
                         [b'40{"token":"t"}', b'40/chat,{"token":"t"}'])
        self.assertEqual(polling_packets('2:406:40/ch,3:4é1'.encode(), 3), [b"40", b"40/ch,", "4é1".encode()])
        for body in (b"\x00\x02\xff40", b"9:40", b"x:40", b"2:40junk"):
            self.assertIsNone(polling_packets(body, 3), body)

    def test_connects_and_answers_are_kept_per_sid(self) -> None:
        sticky, record = self.sticky()
        self.poll(sticky, b"POST", [b'40{"token":"t"}\x1e40/ch', b'at,{"token":"t"}\x1e40/gone,'])
        self.poll(sticky, b"GET", [b'40{"sid":"x"}\x1e40/chat,{"sid":"y"}\x1e44/gone,{"message":"no"}'])
        self.poll(sticky, b"POST", [b'42["event"]'])
        self.assertEqual(record.connects, {b"/": b'40{"token":"t"}', b"/chat": b'40/chat,{"token":"t"}'})
        self.assertEqual(record.answers, {b"/": b'40{"sid":"x"}', b"/chat": b'40/chat,{"sid":"y"}'})
        self.assertTrue(record.complete)
        self.assertIs(sticky.take_polled(b"abc123"), record)
        self.assertIsNone(sticky.polled.get(b"abc123"))

    def test_what_cannot_be_kept_makes_the_record_untrusted(self) -> None:
        sticky, record = self.sticky()
        self.poll(sticky, b"POST", [b"40/a," + b"x" * POLL_PEEK_LIMIT])  # a body past the peek
        self.assertEqual((record.complete, record.connects), (False, {}))
        sticky, record = self.sticky()
        self.poll(sticky, b"POST", [b"\x1e".join(b"40/n%d," % n for n in range(MAX_NAMESPACES + 1))])
        self.assertFalse(record.complete)
        sticky, record = self.sticky(3)
        self.poll(sticky, b"POST", [b"\x00\x02\xff40"])  # v3's binary framing is not read
        self.assertFalse(record.complete)
        half = POLLED_RECORD_BYTES // 2
        sticky, record = self.sticky()  # a record's CONNECTs and answers share one budget
        self.poll(sticky, b"POST", [b'40{"token":"%s"}' % (b"t" * half)])
        self.assertTrue(record.complete)
        self.poll(sticky, b"GET", [b'40{"sid":"%s"}' % (b"s" * half)])
        self.assertEqual((record.complete, record.connects, record.answers), (False, {}, {}))

    def test_a_forgotten_sid_keeps_no_record(self) -> None:
        sticky, _ = self.sticky()
        sticky.forget(RequestHead(method=b"GET", target=b"/socket.io/?EIO=4&sid=abc123", version=b"1.1", headers=[]))
        self.assertIsNone(sticky.take_polled(b"abc123"))
