"""Interruptible sessions: a session-mode WebSocket survives the loss, restart or drain of its backend server."""

from __future__ import annotations

import base64
import hashlib

from prometheus_client import generate_latest
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher

from rubrisproxy.admin._metrics import registry_for
from rubrisproxy.config import WebSocketConfig
from rubrisproxy.websocket._move import SessionMove
from rubrisproxy.websocket._resume import is_refusal

from .helpers import ProxyTestCase, our_cyclic_garbage, run_reactor_for
from .wsecho import EchoBackendFactory, connect_client


class ResumeTests(ProxyTestCase):
    """Two (or more) Autobahn echo backends behind one session-mode backend."""

    def start(self, count: int = 2, backends: list[Factory] | None = None, maxconn: int = 0, **websocket: object):  # type: ignore[no-untyped-def]
        self.backends = backends or [EchoBackendFactory() for _ in range(count)]
        self.listeners = [self.listen(factory) for factory in self.backends]
        self.ports = [listener.getHost().port for listener in self.listeners]
        websocket.setdefault("client_ping_interval", 0)
        websocket.setdefault("backend_ping_interval", 0)
        websocket.setdefault("resume_timeout", 5)
        self.frontend = self.start_proxy(*self.ports, websocket=WebSocketConfig(**websocket), maxconn=maxconn)  # type: ignore[arg-type]
        self.backend = self.frontend.backend

    def listen(self, factory: EchoBackendFactory, port: int = 0):  # type: ignore[no-untyped-def]
        listener = reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.addCleanup(lambda: listener.stopListening() if listener.connected else None)
        return listener

    def kill(self, index: int) -> None:
        """The server process dies: its port refuses connections and its connections are reset."""
        self.listeners[index].stopListening()
        for protocol in list(self.backends[index].open):
            protocol.transport.abortConnection()

    def restart(self, index: int) -> None:
        self.listeners[index] = self.listen(self.backends[index], self.ports[index])

    @defer.inlineCallbacks
    def open(self, **kwargs):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, "/chat?room=1", **kwargs)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        return client

    def serving(self) -> int:
        """Which backend holds the (one) session."""
        (index,) = [i for i, factory in enumerate(self.backends) if getattr(factory, "open", None)]
        return index

    @defer.inlineCallbacks
    def exchange(self, client, texts: list[bytes]):  # type: ignore[no-untyped-def]
        start = len(client.messages)
        for text in texts:
            client.sendMessage(text)
        messages = yield client.wait_messages(start + len(texts))
        return [payload for payload, _ in messages[start:]]

    @defer.inlineCallbacks
    def test_backend_killed_session_moves_to_the_other(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        echoed = yield self.exchange(client, [b"one"])
        self.assertEqual(echoed, [b"one"])
        first = self.serving()
        self.kill(first)
        echoed = yield self.exchange(client, [b"two", b"three"])
        self.assertEqual(echoed, [b"two", b"three"])
        self.assertEqual(self.serving(), 1 - first)
        self.assertFalse(client.closed.called)
        (resumed,) = self.backends[1 - first].handshakes
        session, resume = resumed.headers["x-rubris-session"].split("; ")
        self.assertEqual(resume, "resume=1")
        self.assertEqual(self.backends[first].handshakes[0].headers["x-rubris-session"], f"{session}; resume=0")
        self.assertEqual(resumed.path, "/chat")
        self.assertEqual(resumed.params, {"room": ["1"]})
        self.assertEqual(self.backend.resumes, 1)

    @defer.inlineCallbacks
    def test_a_dead_servers_legs_go_without_the_cyclic_collector(self):  # type: ignore[no-untyped-def]
        """When a server dies, thousands of legs may end at once: reference counting frees each (no cycle among the
        leg, its connection and their collaborators), or the collector's next full pass walks them all."""
        self.start()
        client = yield self.open()
        yield self.exchange(client, [b"one"])
        self.collector_off()
        self.kill(self.serving())
        echoed = yield self.exchange(client, [b"two"])
        self.assertEqual(echoed, [b"two"])
        yield run_reactor_for(5)
        self.assertEqual(our_cyclic_garbage(), [])

    def test_an_ended_session_goes_without_the_cyclic_collector(self):  # type: ignore[no-untyped-def]
        """A mass disconnect ends thousands of sessions at once: reference counting frees each (its connections,
        legs, hand-over and timers), or the collector's next full pass walks them all."""
        return self.ends_without_the_cyclic_collector("session")

    def test_an_ended_tunnel_goes_without_the_cyclic_collector(self):  # type: ignore[no-untyped-def]
        return self.ends_without_the_cyclic_collector("tunnel")

    @defer.inlineCallbacks
    def ends_without_the_cyclic_collector(self, mode: str):  # type: ignore[no-untyped-def]
        self.start(mode=mode)
        client = yield self.open()
        yield self.exchange(client, [b"one"])
        self.collector_off()
        client.sendClose()
        yield client.closed
        yield self.poll(lambda: not self.frontend.websockets and not self.frontend.connections, "the session's end")
        yield run_reactor_for(5)
        self.assertEqual(our_cyclic_garbage(), [])

    @defer.inlineCallbacks
    def test_a_client_header_that_looks_like_the_resume_count_is_not_rewritten(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open(headers={"X-App": "keep; resume=0", "X-Rubris-Session": "spoofed; resume=0"})
        first = self.serving()
        self.kill(first)
        echoed = yield self.exchange(client, [b"after"])
        self.assertEqual(echoed, [b"after"])
        (resumed,) = self.backends[1 - first].handshakes
        self.assertEqual(resumed.headers["x-app"], "keep; resume=0")
        self.assertTrue(resumed.headers["x-rubris-session"].endswith("; resume=1"))
        self.assertNotIn("spoofed", resumed.headers["x-rubris-session"])

    @defer.inlineCallbacks
    def test_backend_closing_with_a_retryable_code_moves_the_session(self):  # type: ignore[no-untyped-def]
        for code in (1001, 1012):
            self.start()
            client = yield self.open()
            first = self.serving()
            client.sendMessage(b"close:%d:restarting" % code)
            yield self.poll(lambda: self.backend.resumes == 1, "the session moved")
            echoed = yield self.exchange(client, [b"after"])
            self.assertEqual(echoed, [b"after"])
            self.assertEqual(self.serving(), 1 - first)
            self.assertFalse(client.closed.called)
            client.sendClose(1000)
            yield client.closed
            yield self.settle(self.frontend)

    @defer.inlineCallbacks
    def test_a_code_that_is_not_retryable_reaches_the_client(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        client.sendMessage(b"close:1011:broken")
        clean, code, reason = yield client.closed
        self.assertEqual((code, reason), (1011, "broken"))
        self.assertEqual(self.backend.resumes, 0)

    @defer.inlineCallbacks
    def test_all_servers_down_then_one_returns(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        self.kill(0)
        self.kill(1)
        for i in range(5):
            client.sendMessage(b"held %d" % i)  # held while no server is there
        yield run_reactor_for(20)
        self.assertFalse(client.closed.called)
        self.restart(1)
        messages = yield client.wait_messages(5)
        self.assertEqual([m for m, _ in messages], [b"held %d" % i for i in range(5)])
        self.assertEqual(self.serving(), 1)

    @defer.inlineCallbacks
    def test_no_server_before_resume_timeout_closes_the_client_with_1013(self):  # type: ignore[no-untyped-def]
        self.start(resume_timeout=0.3)
        client = yield self.open()
        self.kill(0)
        self.kill(1)
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1013)
        self.assertIn("resume-timeout", reason)
        self.assertEqual(self.backend.resume_failures, {"timeout": 1})
        yield self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, "resume-failed")

    @defer.inlineCallbacks
    def test_a_server_that_drops_each_new_leg_at_once_is_dialled_with_backoff_then_given_up(self):  # type: ignore[no-untyped-def]
        """A 101 then the connection lost (a crash on resume, a protocol error): each such leg counts as a failed
        attempt of one move, backing off, and the moves together have resume-timeout, not one each; before, each
        leg was a move that succeeded, and the session dialled again at once, hundreds of times a second."""
        flapping = Factory.forProtocol(Flapping)
        flapping.handshakes = 0  # type: ignore[attr-defined]
        self.start(backends=[flapping], resume_timeout=1.5)
        client = yield self.open()
        client.sendMessage(b"the first leg goes")
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1013)
        self.assertLess(flapping.handshakes, 20)  # type: ignore[attr-defined]
        self.assertEqual(self.backend.resume_failures, {"timeout": 1})

    @defer.inlineCallbacks
    def test_session_buffer_limit_closes_the_client_with_1013(self):  # type: ignore[no-untyped-def]
        self.start(session_buffer=1000)
        client = yield self.open()
        self.kill(0)
        self.kill(1)
        for _ in range(3):
            client.sendMessage(b"x" * 400)
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1013)
        self.assertEqual(self.backend.resume_failures, {"session-buffer": 1})
        self.assertEqual(self.frontend.resume_budget.held, 0)

    @defer.inlineCallbacks
    def test_new_server_refusing_the_subprotocol_closes_the_client_with_1011(self):  # type: ignore[no-untyped-def]
        self.start(backends=[EchoBackendFactory(subprotocols=["chat"]), EchoBackendFactory()])
        client = yield self.open(protocols=["chat"])
        self.assertEqual(self.serving(), 0)  # only the first server speaks "chat"... as round robin begins
        self.kill(0)
        client.sendMessage(b"hello")
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1011)
        self.assertIn("subprotocol", reason)
        self.assertEqual(self.backend.resume_failures, {"subprotocol": 1})

    @defer.inlineCallbacks
    def test_planned_drain_loses_nothing_in_either_direction(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        first = self.serving()
        total = 300
        for i in range(total):
            client.sendMessage(b"%d" % i)
            if i == 100:
                self.backend.drain_server(f"s{first + 1}")
            if i % 25 == 0:
                yield run_reactor_for(1)
        messages = yield client.wait_messages(total)
        yield run_reactor_for(10)
        self.assertEqual([m for m, _ in client.messages], [b"%d" % i for i in range(total)])  # none lost, no dup
        received = [[m for m, _ in factory.received] for factory in self.backends]
        self.assertEqual(received[first] + received[1 - first], [b"%d" % i for i in range(total)])
        self.assertTrue(received[first] and received[1 - first])
        self.assertEqual(self.backends[first].closes[0][1], 1001)
        self.assertEqual(self.serving(), 1 - first)
        self.assertEqual(len(messages), total)

    @defer.inlineCallbacks
    def test_at_least_once_replay_after_a_crash(self):  # type: ignore[no-untyped-def]
        self.start(replay_messages=3)
        client = yield self.open()
        yield self.exchange(client, [b"a", b"b", b"c", b"d"])
        first = self.serving()
        self.kill(first)
        yield self.exchange(client, [b"e"])
        replayed = [m for m, _ in self.backends[1 - first].received]
        self.assertEqual(replayed, [b"b", b"c", b"d", b"e"])  # the last three again, then the new one

    @defer.inlineCallbacks
    def test_health_check_failure_moves_sessions(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        first = self.serving()
        self.backend.servers[first].set_up(False)  # as a failed health check does
        yield self.poll(lambda: self.backend.resumes == 1, "the session moved")
        echoed = yield self.exchange(client, [b"still here"])
        self.assertEqual(echoed, [b"still here"])
        self.assertEqual(self.serving(), 1 - first)


    @defer.inlineCallbacks
    def test_a_restarted_server_with_maxconn_takes_its_session_back(self):  # type: ignore[no-untyped-def]
        self.start(count=1, maxconn=1)
        client = yield self.open()
        yield self.exchange(client, [b"a"])
        self.kill(0)
        yield run_reactor_for(5)
        self.restart(0)
        echoed = yield self.exchange(client, [b"b"])
        self.assertEqual(echoed, [b"b"])
        self.assertEqual(self.backend.servers[0].active, 1)  # the session's one slot, not one per server it used

    @defer.inlineCallbacks
    def test_replay_that_overflows_the_buffer_closes_cleanly(self):  # type: ignore[no-untyped-def]
        self.start(replay_messages=5, session_buffer=100)
        client = yield self.open()
        yield self.exchange(client, [b"%d" % i + b"x" * 59 for i in range(5)])
        self.kill(self.serving())
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1013)
        yield self.settle(self.frontend)
        self.assertEqual(self.frontend.resume_budget.held, 0)
        self.assertEqual([s.active for s in self.backend.servers], [0, 0])

    @defer.inlineCallbacks
    def test_a_new_server_whose_101_autobahn_refuses_is_skipped(self):  # type: ignore[no-untyped-def]
        odd = Factory.forProtocol(OddExtension)
        self.start(backends=[EchoBackendFactory(), odd, EchoBackendFactory()])
        client = yield self.open()
        self.assertEqual(self.serving(), 0)
        self.kill(0)
        echoed = yield self.exchange(client, [b"still here"])
        self.assertEqual(echoed, [b"still here"])
        self.assertTrue(self.backends[2].open)
        self.assertEqual(self.backend.servers[1].active, 0)

    @defer.inlineCallbacks
    def test_held_messages_are_returned_to_the_budget_when_a_session_ends(self):  # type: ignore[no-untyped-def]
        self.start(backends=[Factory.forProtocol(BadOpcode)], resume=False, close_handshake_timeout=0.5)
        client = yield self.open()
        for i in range(3):
            client.sendMessage(b"m%d" % i)
        yield client.closed
        yield self.settle(self.frontend)
        self.assertEqual(self.frontend.resume_budget.held, 0)

    @defer.inlineCallbacks
    def test_a_session_landing_on_a_server_drained_meanwhile_moves_again(self):  # type: ignore[no-untyped-def]
        self.start(count=3)
        client = yield self.open()
        first = self.serving()
        target: list[str] = []
        dial_succeeded = SessionMove.dial_succeeded

        def drain_target_first(move, dial, *args):  # type: ignore[no-untyped-def]
            if not target:
                target.append(dial.server.name)
                self.backend.drain_server(dial.server.name)  # the drain arrives while the 101 is on its way
            return dial_succeeded(move, dial, *args)

        self.patch(SessionMove, "dial_succeeded", drain_target_first)
        self.backend.drain_server(f"s{first + 1}")
        yield self.poll(lambda: self.backend.resumes == 2, "two moves")
        echoed = yield self.exchange(client, [b"where now"])
        self.assertEqual(echoed, [b"where now"])
        serving = self.serving()
        self.assertNotIn(f"s{serving + 1}", (f"s{first + 1}", target[0]))

    @defer.inlineCallbacks
    def test_a_server_refusing_the_session_closes_the_client_with_1012_at_once(self):  # type: ignore[no-untyped-def]
        events: list[dict] = []  # type: ignore[type-arg]
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        refuser = Answering.factory(b"400 Bad Request")
        self.start(backends=[EchoBackendFactory(), refuser], resume_timeout=30)
        client = yield self.open()
        self.assertEqual(self.serving(), 0)
        self.kill(0)
        started = reactor.seconds()
        for i in range(3):
            client.sendMessage(b"held %d" % i)
        clean, code, reason = yield client.closed
        self.assertLess(reactor.seconds() - started, 2)  # not resume-timeout (30 s)
        self.assertEqual(code, 1012)
        self.assertIn("s2 refused it: it answered 400 Bad Request", reason)
        self.assertEqual(refuser.requests, 1)  # not retried server after server
        yield self.settle(self.frontend)
        self.assertEqual(self.backend.resume_failures, {"refused": 1})
        self.assertEqual(self.backend.messages_lost, 3)
        metrics = generate_latest(registry_for([self.frontend], {"app": self.backend}, self.frontend.resume_budget))
        self.assertIn(b'rubrisproxy_websocket_messages_lost_total{backend="app"} 3.0', metrics)
        self.assertIn(b'rubrisproxy_resume_failures_total{backend="app",reason="refused"} 1.0', metrics)
        self.assertEqual(self.frontend.resume_budget.held, 0)
        self.assertEqual(self.access_log.entries[-1].termination, "resume-failed")
        (line,) = [formatEvent(e) for e in events if "could not move" in formatEvent(e)]
        self.assertRegex(line, r"^session \S+ could not move: s2 refused it: it answered 400 Bad Request; no other"
                               r" server can take it; closing the client \(1012\); [0-3] held messages lost$")

    @defer.inlineCallbacks
    def test_a_refusal_while_another_server_may_take_the_session_moves_it_there(self):  # type: ignore[no-untyped-def]
        refuser = Answering.factory(b"404 Not Found")
        self.start(backends=[EchoBackendFactory(), refuser, EchoBackendFactory()], resume_timeout=30)
        client = yield self.open()
        self.assertEqual(self.serving(), 0)
        self.kill(0)
        echoed = yield self.exchange(client, [b"still here"])
        self.assertEqual(echoed, [b"still here"])
        self.assertTrue(self.backends[2].open)
        self.assertEqual((self.backend.resume_failures, self.backend.messages_lost), ({}, 0))

    @defer.inlineCallbacks
    def test_a_refusal_and_an_unreachable_server_leave_no_server_to_wait_for(self):  # type: ignore[no-untyped-def]
        refuser = Answering.factory(b"403 Forbidden")
        self.start(backends=[EchoBackendFactory(), refuser, EchoBackendFactory()], resume_timeout=30)
        client = yield self.open()
        self.assertEqual(self.serving(), 0)
        self.kill(2)  # s3 refuses connections: it may be restarting, but s2 refused the session outright
        self.kill(0)
        started = reactor.seconds()
        clean, code, reason = yield client.closed
        self.assertLess(reactor.seconds() - started, 2)
        self.assertEqual(code, 1012)
        self.assertIn("s2 refused it: it answered 403 Forbidden", reason)
        self.assertEqual(self.backend.resume_failures, {"refused": 1})

    @defer.inlineCallbacks
    def test_a_101_the_proxy_must_reject_is_a_refusal(self):  # type: ignore[no-untyped-def]
        self.start(backends=[EchoBackendFactory(), Factory.forProtocol(OddExtension)], resume_timeout=30)
        client = yield self.open()
        self.assertEqual(self.serving(), 0)
        self.kill(0)
        client.sendMessage(b"held")
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1012)
        self.assertIn("s2 refused it", reason)
        yield self.settle(self.frontend)
        self.assertEqual(self.backend.messages_lost, 1)
        self.assertEqual(self.backend.servers[1].active, 0)

    @defer.inlineCallbacks
    def test_a_server_down_or_busy_is_retried_until_one_comes_back(self):  # type: ignore[no-untyped-def]
        busy = Answering.factory(b"503 Service Unavailable")
        self.start(backends=[EchoBackendFactory(), busy], resume_timeout=30)
        client = yield self.open()
        self.assertEqual(self.serving(), 0)
        self.kill(0)
        for i in range(3):
            client.sendMessage(b"held %d" % i)
        yield self.poll(lambda: busy.requests >= 2, "the busy server asked twice")
        self.assertFalse(client.closed.called)
        self.restart(0)
        messages = yield client.wait_messages(3)
        self.assertEqual([m for m, _ in messages], [b"held %d" % i for i in range(3)])
        self.assertEqual((self.backend.resumes, self.backend.resume_failures), (1, {}))

    def test_which_answers_refuse_a_session_for_good(self) -> None:
        self.assertEqual([s for s in (400, 401, 403, 404, 410, 426) if not is_refusal(s)], [])
        self.assertEqual([s for s in (101, 200, 302, 408, 425, 429, 500, 502, 503) if is_refusal(s)], [])


def switch(data: bytes, extra: bytes = b"") -> bytes:
    """A 101 answering the handshake in ``data``, with ``extra`` header lines."""
    key = [line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n")


class OddExtension(Protocol):
    """Answers any handshake with a 101 that names an extension nobody offered."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(switch(data, b"Sec-WebSocket-Extensions: x-foo\r\n"))


class Flapping(Protocol):
    """Answers any handshake with a valid 101; from the second on, drops the connection just after (the first it
    drops when it next hears anything). The factory counts the handshakes."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.handshakes += 1  # type: ignore[attr-defined]
        if self.factory.handshakes == 1:  # type: ignore[attr-defined]
            self.transport.write(switch(data))
            self.dataReceived = lambda data: self.transport.abortConnection()  # type: ignore[method-assign]
            return
        self.transport.write(switch(data))
        self.drop = reactor.callLater(0.01, self.transport.abortConnection)  # once the proxy has opened the leg

    def connectionLost(self, reason: object = None) -> None:
        drop = getattr(self, "drop", None)
        if drop is not None and drop.active():
            drop.cancel()


class BadOpcode(Protocol):
    """A valid 101, then a frame with a reserved opcode, then silence (no answer to the proxy's close)."""

    answered = False

    def dataReceived(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.transport.write(switch(data) + b"\x83\x00")


class Answering(Protocol):
    """Answers any request with one fixed status and closes; the factory counts the requests."""

    status = b""

    @classmethod
    def factory(cls, status: bytes) -> Factory:
        factory = Factory.forProtocol(type("Answering", (cls,), {"status": status}))
        factory.requests = 0  # type: ignore[attr-defined]
        return factory

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.factory.requests += 1  # type: ignore[attr-defined]
            self.transport.write(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.loseConnection()
