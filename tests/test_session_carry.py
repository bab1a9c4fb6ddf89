"""Session-mode WebSockets carried to a new process in an upgrade: two proxies in one reactor (the old and the
new), the client's socket passed between them over a UNIX socket pair with SCM_RIGHTS, as the upgrade's channel
passes it, and the record through JSON."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource
from websockets.sync.client import connect as ws_connect

from rubrisproxy._compat import unsent
from rubrisproxy.config import WebSocketConfig
from rubrisproxy.frontend import Frontend, ProxiedConnectionFactory, SessionAdopter, connection_factory
from rubrisproxy.transfer import Carried, Kind, Refused
from rubrisproxy.websocket import Message, WebSocketSession, _carry, read_record

from .browser import chromium_argv, spawn
from .helpers import ProxyTestCase, run_reactor_for
from .test_eioresume import EngineIOBackendFactory
from .test_ws_interop import CLIENT_GUARD, _Page, _Result, _TrackingSite
from .wsecho import EchoBackendFactory, connect_client


def _accept_deflate(offers: list[Any]) -> Any:
    """An echo backend's acceptance of permessage-deflate, with context takeover."""
    return next((PerMessageDeflateOfferAccept(offer) for offer in offers if isinstance(offer, PerMessageDeflateOffer)),
                None)


def masked_frame(payload: bytes) -> bytes:
    """One whole binary frame as a client sends it (masked, 64-bit length)."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes((0x82, 0x80 | 127)) + len(payload).to_bytes(8, "big") + mask + masked


class SocketPairCarrier:
    """The upgrade's channel, in small: each connection's fd crosses a socket pair (SCM_RIGHTS) and its record
    JSON, to ``adopter``; True once adopted, False when refused."""

    def __init__(self, adopter: SessionAdopter, version: int | None = None) -> None:
        self.adopter = adopter
        self.version = version  # a version to claim instead of the record's (a record the new one cannot read)
        self.sent: list[Carried] = []
        self.refusals: list[str] = []
        self.kept: list[tuple[Kind, str]] = []
        self._old, self._new = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def close(self) -> None:
        self._old.close()
        self._new.close()

    def carry(self, carried: Carried) -> defer.Deferred[bool]:
        self.sent.append(carried)
        message = json.dumps({"kind": carried.kind.value, "version": self.version or carried.version,
                              "frontend": carried.frontend, "record": carried.record})
        socket.send_fds(self._old, [b"session"], list(carried.sockets))  # the record goes beside: JSON, in memory
        _, fds, _, _ = socket.recv_fds(self._new, 16, 4)
        sent = json.loads(message)
        received = Carried(Kind(sent["kind"]), sent["version"], sent["frontend"], sent["record"], tuple(fds))
        try:
            self.adopter.adopt(received)
        except Refused as refusal:
            self.refusals.append(str(refusal))
            return defer.succeed(False)
        finally:
            for fd in fds:  # as the upgrade's channel does: the reactor works on its own duplicates
                os.close(fd)
        return defer.succeed(True)

    def keep(self, kind: Kind, why: str) -> None:
        self.kept.append((kind, why))


class TwoProxies(ProxyTestCase):
    """An old proxy and a new one, the same configuration built twice, in front of the same echo backends."""

    def start(self, count: int = 2, backends: list[EchoBackendFactory] | None = None,  # type: ignore[override]
              new: dict[str, Any] | None = None, **websocket: Any) -> None:
        """``new``: what the new process's configuration changes."""
        self.backends = backends or [EchoBackendFactory() for _ in range(count)]
        self.listeners = [self.listen(factory) for factory in self.backends]
        ports = self.ports = [listener.getHost().port for listener in self.listeners]
        websocket.setdefault("client_ping_interval", 0)
        websocket.setdefault("backend_ping_interval", 0)
        websocket.setdefault("resume_timeout", 5)
        config = WebSocketConfig(**websocket)
        self.new = self.start_proxy(*ports, websocket=replace(config, **new or {}))
        self.new_log = self.access_log
        self.old = self.start_proxy(*ports, websocket=config)  # the one clients connect to
        self.old_log = self.access_log
        self.adopter = SessionAdopter(reactor, self._factories, {self.new.backend.name: self.new.backend})

    def listen(self, factory: EchoBackendFactory, port: int = 0) -> Any:
        listener = reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.addCleanup(lambda: listener.stopListening() if listener.connected else None)
        return listener

    def _factories(self, name: str) -> Any:
        return connection_factory(self.new) if name == self.new.name else None

    def carrier(self, version: int | None = None) -> SocketPairCarrier:
        carrier = SocketPairCarrier(self.adopter, version)
        self.addCleanup(carrier.close)
        return carrier

    @defer.inlineCallbacks
    def open(self, path: str = "/chat", **kwargs: Any):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, path, **kwargs)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        return client

    @staticmethod
    def session_of(frontend: Frontend) -> WebSocketSession:
        (session,) = [relay for relay in frontend.websockets if isinstance(relay, WebSocketSession)]
        return session

    @defer.inlineCallbacks
    def move(self, carrier: SocketPairCarrier):  # type: ignore[no-untyped-def]
        self.session_of(self.old).move(carrier)
        yield self.poll(lambda: not self.old.websockets and self.new.websockets, "the session moved")
        session = self.session_of(self.new)
        yield self.poll(lambda: session.backend_open, "its new backend leg opened")
        return session

class CarryTests(TwoProxies):
    """Sessions carried from the old proxy to the new one."""

    @defer.inlineCallbacks
    def numbered(self, both_sockets: bool):  # type: ignore[no-untyped-def]
        """Numbered messages both ways, sent before, during and after the carry: none lost, duplicated or
        reordered; the one access-log line is the new process's. Returns the carrier."""
        if not both_sockets:
            self.patch(WebSocketSession, "_takes_backend", lambda session: False)  # as for a TLS backend connection
        self.start()
        client = yield self.open()
        carrier = self.carrier()
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                client.sendMessage(b"n%d" % sent)
                sent += 1

        send(20)
        yield client.wait_messages(10)
        self.session_of(self.old).move(carrier)
        send(20)  # while it crosses
        yield self.poll(lambda: self.new.websockets, "the session moved")
        send(20)
        messages = yield client.wait_messages(60)
        self.assertEqual([payload for payload, _ in messages], [b"n%d" % i for i in range(60)])
        self.assertFalse(client.closed.called)
        self.assertEqual(len(carrier.sent), 1)
        self.assertEqual(len(carrier.sent[0].sockets), 2 if both_sockets else 1)
        self.assertFalse(self.old.connections)
        self.assertEqual(len(self.new.connections), 1)
        self.assertEqual(self.old_log.entries, [])  # its one line is the new process's
        self.assertEqual(self.old_log.connections, [])
        new = self.session_of(self.new)
        self.assertEqual(new.messages_out, 60)
        self.assertEqual(new.resumes, 0 if both_sockets else 1)
        self.assertEqual(self.new.backend.servers[0].active + self.new.backend.servers[1].active, 1)
        self.assertEqual(self.old.backend.servers[0].active + self.old.backend.servers[1].active, 0)
        client.sendClose(1000)
        yield client.closed
        yield self.poll(lambda: self.new_log.entries, "the new process logged it")
        (line,) = self.new_log.entries
        self.assertEqual((line.status, line.termination, line.target), (101, "client-close", "/chat"))
        self.assertGreater(line.total_ms, 0)
        self.assertGreater(line.bytes_in, 60 * 6)  # the whole life's frames, the old process's too
        return carrier

    @defer.inlineCallbacks
    def test_numbered_messages_both_ways_both_sockets_cross(self):  # type: ignore[no-untyped-def]
        yield self.numbered(both_sockets=True)
        handshakes = [request for backend in self.backends for request in backend.handshakes]
        self.assertEqual([h.headers["x-rubris-session"].rsplit("; ", 1)[1] for h in handshakes], ["resume=0"])
        (closes,) = [backend.closes for backend in self.backends if backend.handshakes]
        self.assertEqual(closes, [(True, 1000, None)])  # the backend saw one WebSocket, closed by its client

    @defer.inlineCallbacks
    def test_numbered_messages_both_ways_through_the_resume_path(self):  # type: ignore[no-untyped-def]
        yield self.numbered(both_sockets=False)
        handshakes = [request for backend in self.backends for request in backend.handshakes]
        self.assertEqual([h.headers["x-rubris-session"].rsplit("; ", 1)[1] for h in handshakes],
                         ["resume=0", "resume=1"])

    @defer.inlineCallbacks
    def test_a_large_message_arrives_whole_once(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        carrier = self.carrier()
        big = bytes(range(256)) * 4096  # 1 MiB
        frame = masked_frame(big)
        half = len(frame) // 2
        client.transport.write(frame[:half])
        leg = self.session_of(self.old)._legs.client
        yield self.poll(lambda: leg.current_frame is not None, "the proxy is inside the message")
        self.session_of(self.old).move(carrier)
        yield run_reactor_for(10)
        self.assertEqual(carrier.sent, [])  # the move waits for the message's end
        client.transport.write(frame[half:])
        client.sendMessage(b"after")
        messages = yield client.wait_messages(2)
        self.assertEqual(messages, [(big, True), (b"after", False)])
        self.assertEqual(len(carrier.sent), 1)
        self.assertTrue(self.new.websockets)
        received = [payload for backend in self.backends for payload, _ in backend.received]
        self.assertEqual(received, [big, b"after"])  # once each, in order

    @defer.inlineCallbacks
    def test_a_session_resuming_with_held_messages_is_carried(self):  # type: ignore[no-untyped-def]
        self.start(count=1)
        client = yield self.open()
        # Its server goes away: the session holds what the client sends while it dials, then it is carried.
        self.listeners[0].stopListening()
        for protocol in list(self.backends[0].open):
            protocol.transport.abortConnection()
        yield self.poll(lambda: self.session_of(self.old).resuming, "it is resuming")
        for i in range(5):
            client.sendMessage(b"held %d" % i)
        yield run_reactor_for(5)
        old = self.session_of(self.old)
        self.assertEqual(old.buffered_bytes, 5 * 6)
        carrier = self.carrier()
        old.move(carrier)
        yield self.poll(lambda: self.new.websockets, "the session moved")
        self.assertEqual(carrier.sent[0].record["state"], "resuming")
        self.assertEqual(len(carrier.sent[0].record["held"]), 5)
        self.listeners[0] = self.listen(self.backends[0], self.ports[0])  # back: the new process's dials take
        messages = yield client.wait_messages(5)
        self.assertEqual([payload for payload, _ in messages], [b"held %d" % i for i in range(5)])
        self.assertEqual(self.old.resume_budget.held, 0)

    @defer.inlineCallbacks
    def test_a_refused_version_leaves_it_relaying_in_the_old_process(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        carrier = self.carrier(version=99)
        self.session_of(self.old).move(carrier)
        yield self.poll(lambda: carrier.refusals, "the new process refused it")
        self.assertIn("version 99", carrier.refusals[0])
        messages = []
        for i in range(5):
            client.sendMessage(b"still %d" % i)
        messages = yield client.wait_messages(5)
        self.assertEqual([payload for payload, _ in messages], [b"still %d" % i for i in range(5)])
        self.assertTrue(self.old.websockets)
        self.assertFalse(self.new.websockets)
        self.assertFalse(self.new.connections)
        self.assertFalse(client.closed.called)

    @defer.inlineCallbacks
    def test_a_deflate_session_with_context_takeover_is_carried(self):  # type: ignore[no-untyped-def]
        self.start(compression=True)
        client = yield self.open(compression=True)
        self.assertEqual(client.websocket_extensions_in_use[0].EXTENSION_NAME, "permessage-deflate")
        texts = [b"the same words again and again, message %d" % i for i in range(90)]
        for text in texts[:30]:
            client.sendMessage(text)
        yield client.wait_messages(30)
        leg = self.session_of(self.old)._legs.client
        self.assertTrue(leg.inflate_window())  # what the client's compressor may refer to
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        for text in texts[30:60]:  # compressed by the client against what it sent before the carry
            client.sendMessage(text)
        yield self.poll(lambda: self.new.websockets, "the session moved")
        for text in texts[60:]:
            client.sendMessage(text)
        messages = yield client.wait_messages(90)
        self.assertEqual([payload for payload, _ in messages], texts)
        self.assertFalse(client.closed.called)
        self.assertTrue(carrier.sent[0].record["inflate_window"])
        self.assertIsNone(self.session_of(self.new)._termination)

    @defer.inlineCallbacks
    def test_a_socketio_session_rejoins_from_the_new_process(self):  # type: ignore[no-untyped-def]
        self.patch(WebSocketSession, "_takes_backend", lambda session: False)  # the resume path
        self.start(backends=[EngineIOBackendFactory(), EngineIOBackendFactory()])
        client = yield self.open("/socket.io/?EIO=4&transport=websocket")
        yield client.wait_messages(1)  # the open packet
        client.sendMessage(b'40/chat,{"token":"t"}')
        yield client.wait_messages(2)  # its answer
        (first,) = [i for i, factory in enumerate(self.backends) if factory.open]
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        client.sendMessage(b'42/chat,["held"]')
        yield self.poll(lambda: self.new.websockets, "the session moved")
        state = json.loads(json.dumps(carrier.sent[0].record["engineio"]))
        self.assertEqual((state["sid"], state["joined"]), ("sid-1", [["/chat", '40/chat,{"token":"t"}']]))
        messages = yield client.wait_messages(4)
        self.assertEqual([payload for payload, _ in messages[1:]],
                         [b'40/chat,{"sid":"server-side"}', b"2", b'42/chat,["held"]'])
        joined = [payload for factory in self.backends for payload, _ in factory.received]
        self.assertEqual(joined.count(b'40/chat,{"token":"t"}'), 2)  # joined on the first server, then again
        handshakes = [handshake for factory in self.backends for handshake in factory.handshakes]
        self.assertNotIn("sid", handshakes[-1].params)
        self.assertFalse(client.closed.called)

    @defer.inlineCallbacks
    def websockets_client(self, messages: int):  # type: ignore[no-untyped-def]
        """The websockets library's own client (nothing of this project's), in a thread, sending numbered
        messages and reading their echoes; the session carried half way. Returns what it read, the extensions
        it negotiated and the carrier."""
        received: list[str] = []
        extensions: list[str] = []
        url = f"ws://127.0.0.1:{self.proxy_port}/chat"

        def client() -> None:
            with ws_connect(url, open_timeout=5, close_timeout=2) as websocket:
                extensions.append(websocket.response.headers.get("Sec-WebSocket-Extensions", ""))
                for i in range(messages):
                    websocket.send(f"numbered message {i}, with words that repeat")
                    received.append(str(websocket.recv(timeout=5)))
                    time.sleep(0.01)

        done = threads.deferToThread(client)
        yield self.poll(lambda: len(received) >= messages // 3, "the client is a third of the way")
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        yield done
        self.assertEqual(received, [f"numbered message {i}, with words that repeat" for i in range(messages)])
        self.assertEqual(len(carrier.sent), 1)
        self.assertFalse(self.old.websockets)
        return extensions[0], carrier

    @defer.inlineCallbacks
    def test_a_python_websockets_client_through_a_carry(self):  # type: ignore[no-untyped-def]
        self.start()
        extensions, _ = yield self.websockets_client(60)
        self.assertEqual(extensions, "")

    @defer.inlineCallbacks
    def test_a_python_websockets_client_with_permessage_deflate_through_a_carry(self):  # type: ignore[no-untyped-def]
        self.start(compression=True)
        extensions, carrier = yield self.websockets_client(60)
        self.assertTrue(extensions.startswith("permessage-deflate"))  # with context takeover: it asked for none
        self.assertNotIn("no_context_takeover", extensions)
        self.assertTrue(carrier.sent[0].record["inflate_window"])

    @defer.inlineCallbacks
    def test_a_client_that_stops_inside_a_message_keeps_its_session_here(self):  # type: ignore[no-untyped-def]
        self.patch(_carry, "CARRY_WAIT", 0.2)
        self.start()
        client = yield self.open()
        frame = masked_frame(b"y" * 100_000)
        client.transport.write(frame[:1000])
        leg = self.session_of(self.old)._legs.client
        yield self.poll(lambda: leg.current_frame is not None, "the proxy is inside the message")
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        yield run_reactor_for(40)
        self.assertEqual(carrier.sent, [])
        client.transport.write(frame[1000:])
        client.sendMessage(b"after")
        messages = yield client.wait_messages(2)
        self.assertEqual(messages, [(b"y" * 100_000, True), (b"after", False)])
        self.assertEqual(carrier.sent, [])  # it stayed, and moved to a server of the old process's
        self.assertEqual(self.session_of(self.old).resumes, 1)
        self.assertFalse(self.new.websockets)

    @defer.inlineCallbacks
    def test_what_the_client_had_not_taken_yet_goes_with_it_once(self):  # type: ignore[no-untyped-def]
        self.start(count=1)
        client = yield self.open()
        old = self.session_of(self.old)
        # Small kernel buffers (no autotuning), so what the client does not read stays in the proxy's.
        old._client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.listeners[0].stopListening()  # its server dies: the session resumes, and dials wait
        for protocol in list(self.backends[0].open):
            protocol.transport.abortConnection()
        yield self.poll(lambda: old.resuming, "it is resuming")
        client.transport.pauseProducing()  # the client reads nothing for now
        sent = [Message(b"%03d" % i + b"f" * 65533, True) for i in range(40)]
        for message in sent:  # as a Socket.IO session's heartbeat writes to its client while it moves
            old.send_to_client(message)
        self.assertGreater(unsent(old._client.transport), 0)
        carrier = self.carrier()
        old.move(carrier)
        yield self.poll(lambda: carrier.sent, "it was carried")
        self.assertGreater(len(carrier.sent[0].record["unsent"]), 1 << 20)
        self.listeners[0] = self.listen(self.backends[0], self.ports[0])
        client.transport.resumeProducing()
        client.sendMessage(b"after")
        messages = yield client.wait_messages(41)
        self.assertEqual(messages, [(message.payload, True) for message in sent] + [(b"after", False)])
        self.assertFalse(client.closed.called)


    @defer.inlineCallbacks
    def test_a_socketio_session_crossed_whole_rejoins_later_from_what_it_carried(self):  # type: ignore[no-untyped-def]
        self.start(backends=[EngineIOBackendFactory(), EngineIOBackendFactory()])
        client = yield self.open("/socket.io/?EIO=4&transport=websocket")
        yield client.wait_messages(1)
        client.sendMessage(b'40/chat,{"token":"t"}')
        yield client.wait_messages(2)
        (first,) = [i for i, factory in enumerate(self.backends) if factory.open]
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        yield self.poll(lambda: self.new.websockets, "the session moved, with its backend connection")
        self.assertEqual(len(carrier.sent[0].sockets), 2)
        client.sendMessage(b'42/chat,["crossed"]')
        yield client.wait_messages(3)
        # Its server dies under the new process: the session rejoins the other from the state it carried.
        self.listeners[first].stopListening()
        for protocol in list(self.backends[first].open):
            protocol.transport.abortConnection()
        client.sendMessage(b'42/chat,["after"]')
        messages = yield client.wait_messages(5)
        self.assertEqual([payload for payload, _ in messages[2:]], [b'42/chat,["crossed"]', b"2", b'42/chat,["after"]'])
        other = self.backends[1 - first]
        self.assertEqual(other.received, [(b'40/chat,{"token":"t"}', False), (b'42/chat,["after"]', False)])
        self.assertFalse(client.closed.called)

    @defer.inlineCallbacks
    def test_a_new_process_that_would_negotiate_otherwise_refuses_and_touches_nothing(self):  # type: ignore[no-untyped-def]
        self.start(compression=True, new={"compression": False})
        client = yield self.open(compression=True)
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        yield self.poll(lambda: carrier.refusals, "the new process refused it")
        self.assertIn("extensions", carrier.refusals[0])
        self.assertFalse(self.new.websockets)
        self.assertFalse(self.new.connections)
        texts = [b"still here, still compressed %d" % i for i in range(20)]
        for text in texts:
            client.sendMessage(text)
        messages = yield client.wait_messages(20)
        self.assertEqual([payload for payload, _ in messages], texts)
        self.assertFalse(client.closed.called)
        self.assertEqual([factory.closes for factory in self.backends], [[], []])  # the backend noticed nothing

    @defer.inlineCallbacks
    def test_a_backend_compressing_with_context_takeover_crosses_too(self):  # type: ignore[no-untyped-def]
        backends = [EchoBackendFactory() for _ in range(2)]
        for factory in backends:
            factory.setProtocolOptions(perMessageCompressionAccept=_accept_deflate)
        self.start(backends=backends, compression=True)
        client = yield self.open()
        old = self.session_of(self.old)
        self.assertTrue(old._legs.backend.inflate_window() == b"")  # nothing compressed by the backend yet
        texts = [b"the backend compresses these words again and again, %d" % i for i in range(60)]
        for text in texts[:20]:
            client.sendMessage(text)
        yield client.wait_messages(20)
        self.assertTrue(old._legs.backend.inflate_window())
        carrier = self.carrier()
        old.move(carrier)
        yield self.poll(lambda: self.new.websockets, "the session moved")
        self.assertEqual(len(carrier.sent[0].sockets), 2)
        self.assertTrue(carrier.sent[0].record["backend_socket"]["inflate_window"])
        for text in texts[20:]:
            client.sendMessage(text)
        messages = yield client.wait_messages(60)
        self.assertEqual([payload for payload, _ in messages], texts)
        self.assertEqual([factory.closes for factory in backends], [[], []])


    @defer.inlineCallbacks
    def test_a_frontend_or_backend_the_new_process_lacks_refuses_it(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        refusals = []
        for adopter in (SessionAdopter(reactor, lambda name: None, {self.new.backend.name: self.new.backend}),
                        SessionAdopter(reactor, self._factories, {}),
                        SessionAdopter(reactor, lambda name: ProxiedConnectionFactory(self.new),
                                       {self.new.backend.name: self.new.backend})):
            carrier = SocketPairCarrier(adopter)
            self.addCleanup(carrier.close)
            self.session_of(self.old).move(carrier)
            yield self.poll(lambda carrier=carrier: carrier.refusals, "the new process refused it")
            refusals.append(carrier.refusals[0])
            client.sendMessage(b"still")
            yield client.wait_messages(len(refusals))
        self.assertEqual([refusal.split(" ", 2)[:2] for refusal in refusals],
                         [["no", "frontend"], ["no", "session-mode"], ["frontend", "'web'"]])
        self.assertFalse(self.new.connections)
        self.assertFalse(client.closed.called)
        self.assertEqual([factory.closes for factory in self.backends], [[], []])


    @defer.inlineCallbacks
    def test_carried_again_its_one_line_still_covers_its_whole_life(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        back = SocketPairCarrier(SessionAdopter(
            reactor, lambda name: connection_factory(self.old), {self.old.backend.name: self.old.backend}))
        self.addCleanup(back.close)
        there = self.carrier()
        for i, (source, carrier) in enumerate(((self.old, there), (self.new, back))):
            client.sendMessage(b"before %d" % i)
            yield client.wait_messages(2 * i + 1)
            self.session_of(source).move(carrier)
            yield self.poll(lambda source=source: not source.websockets, "it moved on")
            client.sendMessage(b"after %d" % i)
            yield client.wait_messages(2 * i + 2)
        self.assertEqual([payload for payload, _ in client.messages], [b"before 0", b"after 0", b"before 1", b"after 1"])
        self.assertEqual(back.sent[0].record["messages_out"], 3)  # counted on across processes
        session = self.session_of(self.old)  # back where it began, in what stands for a third process
        self.assertEqual(session.messages_out, 4)
        client.sendClose(1000)
        yield client.closed
        yield self.poll(lambda: self.old_log.entries, "the last process logged it")
        (line,) = self.old_log.entries
        self.assertEqual(self.new_log.entries, [])
        self.assertEqual((line.status, line.termination, line.server), (101, "client-close", "s1"))
        first, second = there.sent[0].record["log"], back.sent[0].record["log"]
        before, after = 2 + 4 + len(b"before 0"), 2 + 4 + len(b"after 0")  # the client's masked frames
        self.assertEqual(first["bytes_in"], before)  # the first process read "before 0"
        self.assertEqual(second["bytes_in"], 2 * before + after)  # and the second "after 0", "before 1"
        close = 2 + 4 + 2
        # Its one line: the upgrade request's head, then every frame the client sent, in whichever process.
        self.assertEqual(line.bytes_in, first["line"]["bytes_in"] + 2 * before + 2 * after + close)


class BrowserCarryTests(TwoProxies):
    """A headless Chromium page's WebSocket (permessage-deflate with context takeover) through a carry."""

    async def _chromium(self) -> None:
        self.start(compression=True)
        argv, env = chromium_argv(self)
        root = resource.Resource()
        root.putChild(b"carry_client.html", _Page("carry_client.html"))
        results = _Result()
        root.putChild(b"result", results)
        site = _TrackingSite(root)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(site.abort_all)  # runs after Chromium is killed
        count = 150
        ws = quote(f"ws://127.0.0.1:{self.proxy_port}/chat", safe="")
        argv.append(f"http://127.0.0.1:{port.getHost().port}/carry_client.html?ws={ws}&count={count}")
        browser = spawn(self, "chromium", argv, env=env)
        await self.poll(lambda: any(getattr(relay, "messages_out", 0) >= 40 for relay in self.old.websockets),
                        "the page is a quarter of the way", ticks=2000)
        carrier = self.carrier()
        self.session_of(self.old).move(carrier)
        try:
            result = await results.result.addTimeout(CLIENT_GUARD, reactor)
        except defer.TimeoutError:
            self.fail(f"Chromium reported nothing within {CLIENT_GUARD:.0f} s\n{browser.describe()}")
        self.assertEqual(result["errors"], [])
        self.assertEqual(len(result["received"]), count)
        self.assertIn("permessage-deflate", result["extensions"])
        self.assertEqual(len(carrier.sent), 1)
        self.assertTrue(carrier.sent[0].record["inflate_window"])
        self.assertTrue(self.new.websockets)

    def test_chromium(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._chromium())


class RecordTests(SynchronousTestCase):
    def test_a_version_or_a_shape_it_does_not_read_is_refused(self) -> None:
        with self.assertRaisesRegex(Refused, "version 2"):
            read_record(2, {})
        with self.assertRaisesRegex(Refused, "without session_id, backend"):
            read_record(1, {"state": "open"})
