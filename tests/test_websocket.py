"""WebSocket proxying over real sockets: both modes against an Autobahn echo backend."""

from __future__ import annotations

import base64
import json
import os
import sys

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import alsoProvides

from rubrisproxy.config import HookConfig, WebSocketConfig
from rubrisproxy.frontend import drain
from rubrisproxy.websocket import Message, WebSocketHook, WebSocketSession, accept_key, new_key

from .helpers import ProxyTestCase, get, run_reactor_for
from .test_ws_keepalive import OP_TEXT, frame, parse_frames
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples")
if EXAMPLES not in sys.path:
    sys.path.append(EXAMPLES)  # the shipped example hooks, importable as websocket_hooks

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x01\x02\x03\x04"
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade(path: bytes = b"/chat", extra: bytes = b"", version: bytes = b"13", key: bytes = KEY) -> bytes:
    return get(
        path,
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: " + version
        + b"\r\nSec-WebSocket-Key: " + key + b"\r\n" + extra,
    )


class ModeTests:
    """Tests every mode must pass; subclasses set ``mode``."""

    mode = "session"

    def start(self, backend: EchoBackendFactory | None = None, **websocket: object) -> EchoBackendFactory:
        backend = backend or EchoBackendFactory()
        websocket.setdefault("client_ping_interval", 0)
        websocket.setdefault("backend_ping_interval", 0)
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
        self.frontend = self.start_proxy(  # type: ignore[attr-defined]
            port.getHost().port, websocket=WebSocketConfig(mode=self.mode, **websocket)  # type: ignore[arg-type]
        )
        return backend

    @defer.inlineCallbacks
    def open(self, path: str = "/chat", **kwargs):  # type: ignore[no-untyped-def]
        client = connect_client(self.proxy_port, path, **kwargs)  # type: ignore[attr-defined]
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)  # type: ignore[attr-defined]
        yield client.opened
        return client

    @defer.inlineCallbacks
    def test_text_and_binary_echo_in_order(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        for i in range(20):
            client.sendMessage(b"text %d" % i) if i % 2 else client.sendMessage(bytes([i]) * 100, isBinary=True)
        messages = yield client.wait_messages(20)
        expected = [(b"text %d" % i, False) if i % 2 else (bytes([i]) * 100, True) for i in range(20)]
        self.assertEqual(messages, expected)

    @defer.inlineCallbacks
    def test_large_messages_both_ways(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        big = bytes(range(256)) * (8 * 4096)  # 8 MiB
        client.sendMessage(big, isBinary=True)
        client.sendMessage(b"x" * (1 << 20))
        messages = yield client.wait_messages(2)
        self.assertEqual(messages[0], (big, True))
        self.assertEqual(messages[1], (b"x" * (1 << 20), False))

    @defer.inlineCallbacks
    def test_path_query_and_headers_reach_the_backend(self):  # type: ignore[no-untyped-def]
        backend = self.start()
        client = yield self.open("/room/7?user=ann", headers={"Cookie": "sid=abc", "Authorization": "Bearer t0k"})
        request = backend.handshakes[0]
        self.assertEqual(request.path, "/room/7")
        self.assertEqual(request.params, {"user": ["ann"]})
        self.assertEqual(request.headers["cookie"], "sid=abc")
        self.assertEqual(request.headers["authorization"], "Bearer t0k")
        self.assertIn("x-forwarded-for", request.headers)
        client.sendClose(1000)
        yield client.closed

    @defer.inlineCallbacks
    def test_backend_close_code_reaches_the_client(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open()
        client.sendMessage(b"close:1011:backend broke")
        clean, code, reason = yield client.closed
        self.assertEqual((code, reason), (1011, "backend broke"))
        yield self.settle(self.frontend)  # type: ignore[attr-defined]
        self.assertEqual(self.access_log.entries[-1].termination, "server-close")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_ends_without_a_close_are_logged_alike(self):  # type: ignore[no-untyped-def]
        """A side whose TCP connection ends without a close frame aborted, in either mode."""
        self.start(resume=False)
        client = yield self.open()
        client.sendMessage(b"ping")
        yield client.wait_messages(1)
        client.transport.loseConnection()  # a FIN, no close frame
        yield client.closed
        yield self.settle(self.frontend)  # type: ignore[attr-defined]
        client = yield self.open()
        client.sendMessage(b"drop")  # the backend resets its connection
        yield client.closed
        yield self.settle(self.frontend)  # type: ignore[attr-defined]
        self.assertEqual([entry.termination for entry in self.access_log.entries],  # type: ignore[attr-defined]
                         ["client-abort", "server-abort"])

    @defer.inlineCallbacks
    def test_client_close_code_reaches_the_backend(self):  # type: ignore[no-untyped-def]
        backend = self.start()
        client = yield self.open()
        client.sendMessage(b"ping")
        yield client.wait_messages(1)
        client.sendClose(4001, "bye now")
        yield client.closed
        yield self.poll(lambda: backend.closes, "the backend saw the close")  # type: ignore[attr-defined]
        self.assertEqual(backend.closes[0][1:], (4001, "bye now"))
        yield self.settle(self.frontend)  # type: ignore[attr-defined]
        self.assertEqual(self.access_log.entries[-1].status, 101)  # type: ignore[attr-defined]
        # The server ends the TCP connection after a close handshake, but a tunnel too logs who sent the first close.
        self.assertEqual(self.access_log.entries[-1].termination, "client-close")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_a_client_close_is_answered_in_kind(self):  # type: ignore[no-untyped-def]
        """A close with an application code (3000) reaches the backend with its reason; the backend (Autobahn's
        default) answers it with 1000. A tunnel relays that answer as it is; in session mode the proxy is the client's
        endpoint and echoes the client's code and reason (RFC 6455 5.5.1)."""
        backend = self.start()
        client = yield self.open()
        client.sendMessage(b"ping")
        yield client.wait_messages(1)
        client.sendClose(3000, "done here")
        clean, code, reason = yield client.closed
        self.assertTrue(clean)
        expected = (3000, "done here") if self.mode == "session" else (1000, None)
        self.assertEqual((code, reason), expected)
        yield self.poll(lambda: backend.closes, "the backend saw the close")  # type: ignore[attr-defined]
        self.assertEqual(backend.closes, [(True, 3000, "done here")])
        yield self.settle(self.frontend)  # type: ignore[attr-defined]
        self.assertEqual(self.access_log.entries[-1].termination, "client-close")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_a_client_that_half_closes_after_a_message_still_gets_its_echo(self):  # type: ignore[no-untyped-def]
        """A FIN without a close frame ends the client's WebSocket abnormally (1006), but what the backend answered to
        what the client sent before it still reaches the client, as it would directly: then the connection closes."""
        backend = self.start()
        client = yield self.connect()  # type: ignore[attr-defined]
        client.send(upgrade())
        yield client.until(lambda data: b"\r\n\r\n" in data)
        client.send(frame(OP_TEXT, b"hello", MASK))
        client.transport.loseWriteConnection()
        received = yield client.closed
        frames = parse_frames(received.partition(b"\r\n\r\n")[2])
        self.assertEqual(frames[0], (OP_TEXT, b"hello"))
        self.assertEqual(backend.received, [(b"hello", False)])
        yield self.settle(self.frontend)  # type: ignore[attr-defined]
        self.assertEqual(self.access_log.entries[-1].termination, "client-abort")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_subprotocol_negotiated_through_the_proxy(self):  # type: ignore[no-untyped-def]
        self.start(EchoBackendFactory(subprotocols=["chat.v2"]))
        client = yield self.open(protocols=["chat.v1", "chat.v2"])
        self.assertEqual(client.websocket_protocol_in_use, "chat.v2")

    @defer.inlineCallbacks
    def test_subprotocol_allowlist_withholds_and_refuses(self):  # type: ignore[no-untyped-def]
        backend = self.start(EchoBackendFactory(subprotocols=["chat.v1", "chat.v2"]), subprotocols=("chat.v2",))
        client = yield self.open(protocols=["chat.v1", "chat.v2"])
        self.assertEqual(client.websocket_protocol_in_use, "chat.v2")
        self.assertEqual(backend.handshakes[0].protocols, ["chat.v2"])
        (refused,) = yield self.request(upgrade(extra=b"Sec-WebSocket-Protocol: chat.v1\r\n"))  # type: ignore[attr-defined]
        self.assertEqual(refused.status, 400)

    @defer.inlineCallbacks
    def test_origin_allowlist(self):  # type: ignore[no-untyped-def]
        backend = self.start(origins=("https://app.example",))
        (refused,) = yield self.request(upgrade(extra=b"Origin: https://evil.example\r\n"))  # type: ignore[attr-defined]
        self.assertEqual(refused.status, 403)
        client = yield self.open(headers={"Origin": "https://app.example"})
        self.assertEqual(len(backend.handshakes), 1)
        client.sendClose(1000)
        yield client.closed

    @defer.inlineCallbacks
    def test_opaque_origin_with_a_compression_offer_opens(self):  # type: ignore[no-untyped-def]
        # A page from file:// or a sandboxed frame sends "Origin: null", and browsers always offer compression.
        backend = self.start()
        client = yield self.open(headers={"Origin": "null"}, compression=True)
        client.sendMessage(b"from an opaque origin")
        messages = yield client.wait_messages(1)
        self.assertEqual(messages, [(b"from an opaque origin", False)])
        self.assertEqual(len(backend.handshakes), 1)
        client.sendClose(1000)
        yield client.closed

    @defer.inlineCallbacks
    def test_bad_handshakes_are_refused_before_any_backend(self):  # type: ignore[no-untyped-def]
        backend = self.start()
        cases = [
            (upgrade(version=b"8"), 426),
            (upgrade(key=b"c2hvcnQ="), 400),  # decodes to 5 bytes
            (upgrade(key=b"not base64!!"), 400),
            (upgrade(extra=b"Sec-WebSocket-Key: " + KEY + b"\r\n"), 400),  # two keys
            (upgrade().replace(b"GET", b"POST", 1), 400),
            (upgrade().replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade-Not"), None),
        ]
        for request, status in cases:
            (response,) = yield self.request(request)  # type: ignore[attr-defined]
            if status is None:  # no "upgrade" token: a plain request, answered by the backend, not switched
                self.assertNotEqual(response.status, 101, request)
                continue
            self.assertEqual(response.status, status, request)
            if status == 426:
                self.assertEqual(response.header(b"sec-websocket-version"), b"13")
        self.assertEqual(backend.handshakes, [])

    @defer.inlineCallbacks
    def test_backend_refusal_is_passed_back_as_it_is(self):  # type: ignore[no-untyped-def]
        self.start(EchoBackendFactory(refuse=403))
        client = yield self.connect()  # type: ignore[attr-defined]
        client.send(upgrade())
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 403)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 403 refused by the test backend\r\n"))

    @defer.inlineCallbacks
    def test_flow_control_bounds_memory_when_the_client_stops_reading(self):  # type: ignore[no-untyped-def]
        backend = self.start()
        client = yield self.open()
        client.transport.pauseProducing()  # the client reads nothing more
        client.sendMessage(b"flood:400:65536")  # 25 MiB from the backend
        yield self.poll(lambda: backend.open, "backend open")  # type: ignore[attr-defined]
        (server,) = backend.open
        # The backend ends up blocked: its own send buffer fills because the proxy stopped reading.
        yield self.poll(lambda: len(server.transport.dataBuffer) + server.transport._tempDataLen > 4 << 20,  # type: ignore[attr-defined]
                        "backend blocked")
        (connection,) = self.frontend.connections
        buffered = len(connection.transport.dataBuffer) + connection.transport._tempDataLen
        self.assertLess(buffered, 4 << 20)  # the proxy holds at most a few messages, not the flood
        client.transport.resumeProducing()
        messages = yield client.wait_messages(400)
        self.assertEqual(len(messages), 400)


    @defer.inlineCallbacks
    def test_flow_control_bounds_memory_when_the_backend_stops_reading(self):  # type: ignore[no-untyped-def]
        backend = self.start()
        client = yield self.open()
        yield self.poll(lambda: backend.open, "backend open")  # type: ignore[attr-defined]
        (server,) = backend.open
        server.transport.pauseProducing()  # the backend reads nothing more
        chunk = b"u" * 65536
        for _ in range(400):  # 25 MiB towards the backend
            client.sendMessage(chunk, isBinary=True)
        sent = client.transport
        yield self.poll(lambda: len(sent.dataBuffer) + sent._tempDataLen > 4 << 20, "client blocked")  # type: ignore[attr-defined]
        # The backend's connection: a tunnel's own, a session's under its legs.
        origin_transports = [(relay._legs.origin if hasattr(relay, "_legs") else relay._origin).transport
                             for relay in self.frontend.websockets]
        self.assertEqual(len(origin_transports), 1)
        buffered = len(origin_transports[0].dataBuffer) + origin_transports[0]._tempDataLen
        self.assertLess(buffered, 4 << 20)
        server.transport.resumeProducing()
        yield self.poll(lambda: len(backend.received) == 400, "every message delivered")  # type: ignore[attr-defined]


class TunnelTests(ModeTests, ProxyTestCase):
    mode = "tunnel"

    @defer.inlineCallbacks
    def test_raw_bytes_after_101_are_relayed(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.connect()
        client.send(upgrade())
        yield client.until(lambda data: b"\r\n\r\n" in data)
        self.assertIn(b"HTTP/1.1 101", client.received)
        self.assertIn(b"Sec-WebSocket-Accept: " + ACCEPT, client.received)
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello"))
        client.send(b"\x81\x85" + mask + payload)
        yield client.until(lambda data: data.endswith(b"\x81\x05hello"))


class SessionTests(ModeTests, ProxyTestCase):
    mode = "session"

    @defer.inlineCallbacks
    def test_backend_drop_closes_the_client_with_1011_when_sessions_do_not_resume(self):  # type: ignore[no-untyped-def]
        self.start(resume=False)
        client = yield self.open()
        client.sendMessage(b"drop")
        clean, code, reason = yield client.closed
        self.assertEqual((code, reason), (1011, "backend connection lost"))

    @defer.inlineCallbacks
    def test_message_over_the_limit_closes_with_1009(self):  # type: ignore[no-untyped-def]
        backend = self.start(max_message_size=1 << 16, max_frame_size=1 << 16)
        client = yield self.open()
        client.sendMessage(b"x" * (1 << 17), isBinary=True)
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1009)
        yield self.poll(lambda: backend.closes, "backend closed")
        self.assertEqual(backend.received, [])

    @defer.inlineCallbacks
    def test_backend_headers_and_json(self):  # type: ignore[no-untyped-def]
        self.start()
        client = yield self.open(headers={"Cookie": "a=1"})
        client.sendMessage(b"headers")
        (message,) = yield client.wait_messages(1)
        headers = json.loads(message[0])
        self.assertEqual(headers["cookie"], "a=1")
        self.assertEqual(headers["sec-websocket-version"], "13")

    @defer.inlineCallbacks
    def test_compression_on_each_side(self):  # type: ignore[no-untyped-def]
        backend = self.start(compression=True)
        client = yield self.open(compression=True)
        self.assertIsNotNone(client._perMessageCompress)
        client.sendMessage(b"squeeze me " * 1000)
        (message,) = yield client.wait_messages(1)
        self.assertEqual(message, (b"squeeze me " * 1000, False))
        (server,) = backend.open
        self.assertIsNone(server._perMessageCompress)  # the echo backend accepts no extension


class UpperHook(WebSocketHook):
    """Changes, drops and injects messages, for the tests."""

    def client_message(self, session, message):  # type: ignore[no-untyped-def]
        if message.payload == b"secret":
            return None
        if message.payload == b"hello":
            session.send_to_client(Message(b"welcome " + session.session_id.encode(), False))
        return Message(message.payload.upper(), message.binary)

    def backend_message(self, session, message):  # type: ignore[no-untyped-def]
        return Message(b"<" + message.payload + b">", message.binary)


class HookTests(ProxyTestCase):
    """User hooks: the shipped examples (docs/examples/websocket_hooks.py) and a changing one."""

    def start(self, mode: str, *hooks: HookConfig) -> EchoBackendFactory:
        backend = EchoBackendFactory()
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)
        config = WebSocketConfig(mode=mode, client_ping_interval=0, backend_ping_interval=0, hooks=hooks)
        self.frontend = self.start_proxy(port.getHost().port, websocket=config)
        return backend

    @defer.inlineCallbacks
    def test_token_check_in_both_modes(self):  # type: ignore[no-untyped-def]
        for mode in ("tunnel", "session"):
            backend = self.start(mode, HookConfig("websocket_hooks.TokenCheck", {"tokens": ["t0k"]}))
            (refused,) = yield self.request(upgrade())
            self.assertEqual(refused.status, 401)
            (refused,) = yield self.request(upgrade(path=b"/chat?token=wrong"))
            self.assertEqual(refused.status, 401)
            self.assertEqual(backend.handshakes, [])
            for kwargs in ({"path": "/chat?token=t0k"}, {"headers": {"Authorization": "Bearer t0k"}}):
                client = connect_client(self.proxy_port, **kwargs)  # type: ignore[arg-type]
                yield client.opened
                client.sendClose(1000)
                yield client.closed
            self.assertEqual(len(backend.handshakes), 2)

    @defer.inlineCallbacks
    def test_message_logger_logs_each_message(self):  # type: ignore[no-untyped-def]
        self.start("session", HookConfig("websocket_hooks.MessageLogger", {"preview": 4}))
        events: list[dict] = []  # type: ignore[type-arg]
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = connect_client(self.proxy_port)
        yield client.opened
        client.sendMessage(b"hello there")
        yield client.wait_messages(1)
        lines = [formatEvent(e) for e in events if "ws {session}" in (e.get("log_format") or "")]
        self.assertEqual(len(lines), 2)
        self.assertIn("client->backend text 11 bytes b'hell'", lines[0])
        self.assertIn("backend->client text 11 bytes", lines[1])
        client.sendClose(1000)
        yield client.closed

    @defer.inlineCallbacks
    def test_hook_changes_drops_and_injects(self):  # type: ignore[no-untyped-def]
        backend = self.start("session", HookConfig("tests.test_websocket.UpperHook"))
        client = connect_client(self.proxy_port)
        yield client.opened
        for text in (b"hello", b"secret", b"abc"):
            client.sendMessage(text)
        messages = yield client.wait_messages(3)
        self.assertTrue(messages[0][0].startswith(b"welcome "))
        self.assertEqual([m[0] for m in messages[1:]], [b"<HELLO>", b"<ABC>"])
        self.assertEqual([m[0] for m in backend.received], [b"HELLO", b"ABC"])
        client.sendClose(1000)
        yield client.closed

    def test_a_hook_that_cannot_be_built_is_a_config_error(self):  # type: ignore[no-untyped-def]
        from rubrisproxy.config import ConfigError
        from rubrisproxy.websocket import build_hooks

        with self.assertRaises(ConfigError) as caught:
            build_hooks("backends.app.websocket.hooks", [HookConfig("websocket_hooks.TokenCheck")])
        self.assertIn("backends.app.websocket.hooks[0]", str(caught.exception))


class TimerTests(ProxyTestCase):
    """Pings, idle and half-closed tunnels, with short real intervals (each test waits on events, bounded)."""

    def start(self, backend: EchoBackendFactory | None = None, **options: object) -> EchoBackendFactory:
        backend = backend or EchoBackendFactory()
        port = listen_echo_backend(backend)
        self.addCleanup(port.stopListening)
        timeouts = {k: options.pop(k) for k in ("tunnel", "client_fin", "server_fin") if k in options}
        options.setdefault("client_ping_interval", 0)
        options.setdefault("backend_ping_interval", 0)
        self.frontend = self.start_proxy(port.getHost().port, websocket=WebSocketConfig(**options), **timeouts)  # type: ignore[arg-type]
        return backend

    @defer.inlineCallbacks
    def test_pings_keep_both_legs_alive(self):  # type: ignore[no-untyped-def]
        backend = self.start(client_ping_interval=0.2, client_ping_timeout=0.5, backend_ping_interval=0.2,
                             backend_ping_timeout=0.5)
        client = connect_client(self.proxy_port)
        yield client.opened
        yield self.poll(lambda: client.pings >= 3 and backend.pings >= 3, "three pings on each side")
        client.sendMessage(b"still here")
        (message,) = yield client.wait_messages(1)
        self.assertEqual(message[0], b"still here")
        client.sendClose(1000)
        yield client.closed
        yield self.settle(self.frontend)

    @defer.inlineCallbacks
    def test_client_without_pongs_is_closed(self):  # type: ignore[no-untyped-def]
        backend = self.start(client_ping_interval=0.2, client_ping_timeout=0.2)
        client = connect_client(self.proxy_port)
        client.silent = True
        yield client.opened
        yield client.closed
        yield self.poll(lambda: backend.closes, "the backend was told")
        self.assertEqual(backend.closes[0][1], 1001)
        yield self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, "ping-timeout")

    @defer.inlineCallbacks
    def test_backend_without_pongs_is_closed(self):  # type: ignore[no-untyped-def]
        self.start(EchoBackendFactory(silent=True), backend_ping_interval=0.2, backend_ping_timeout=0.2, resume=False)
        client = connect_client(self.proxy_port)
        yield client.opened
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1011)
        yield self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, "ping-timeout")

    @defer.inlineCallbacks
    def test_idle_session_is_closed_with_1001(self):  # type: ignore[no-untyped-def]
        backend = self.start(tunnel=0.3)
        client = connect_client(self.proxy_port)
        yield client.opened
        clean, code, reason = yield client.closed
        self.assertEqual((code, reason), (1001, "idle timeout"))
        yield self.poll(lambda: backend.closes, "backend closed")
        self.assertEqual(backend.closes[0][1], 1001)
        yield self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, "idle-timeout")

    @defer.inlineCallbacks
    def test_messages_passed_either_way_keep_a_session_open_and_are_counted(self):  # type: ignore[no-untyped-def]
        """Messages the legs pass as frames (no hook) move the idle deadline and count as those relayed one by one:
        echoed every 0.1 s, a session with a 0.3 s idle limit stays open for 1 s."""
        self.start(tunnel=0.3)
        one_by_one: list[bytes] = []
        for name in ("from_client", "from_backend"):
            self.patch(WebSocketSession, name, lambda session, payload, binary: one_by_one.append(payload))
        client = connect_client(self.proxy_port)
        yield client.opened
        for i in range(10):
            client.sendMessage(b"m%d" % i, isBinary=bool(i % 2))
            yield client.wait_messages(i + 1)
            yield run_reactor_for(10)
        self.assertEqual(one_by_one, [])
        (session,) = self.frontend.websockets
        self.assertEqual((session.messages_in, session.messages_out), (10, 10))
        self.assertEqual(session.describe()["messages_in"], 10)
        self.assertFalse(client.closed.called)
        clean, code, reason = yield client.closed  # then idle
        self.assertEqual((code, reason), (1001, "idle timeout"))
        yield self.settle(self.frontend)

    @defer.inlineCallbacks
    def test_idle_tunnel_is_cut(self):  # type: ignore[no-untyped-def]
        self.start(mode="tunnel", tunnel=0.3)
        client = connect_client(self.proxy_port)
        yield client.opened
        clean, code, reason = yield client.closed
        self.assertFalse(clean)
        yield self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, "idle-timeout")

    @defer.inlineCallbacks
    def test_drain_closes_sessions_with_1001(self):  # type: ignore[no-untyped-def]
        self.start()
        client = connect_client(self.proxy_port)
        yield client.opened
        yield drain(self.frontend, 5, 0.0, 1001)
        clean, code, reason = yield client.closed
        self.assertEqual(code, 1001)
        self.assertEqual(self.frontend.websockets, set())

    @defer.inlineCallbacks
    def test_a_tunnel_on_a_drained_server_is_closed_after_the_grace(self):  # type: ignore[no-untyped-def]
        self.start(mode="tunnel", drain_grace=0.2)
        client = connect_client(self.proxy_port)
        yield client.opened
        self.frontend.backend.drain_server("s1")
        self.assertFalse(client.closed.called)  # not at once: the grace lets it finish
        clean, code, reason = yield client.closed
        yield self.settle(self.frontend)
        self.assertEqual(self.access_log.entries[-1].termination, "drained")
        self.assertEqual(self.frontend.backend.servers[0].watchers, set())

    @defer.inlineCallbacks
    def test_a_tunnel_whose_server_is_ready_again_within_the_grace_stays(self):  # type: ignore[no-untyped-def]
        self.start(mode="tunnel", drain_grace=0.2)
        client = connect_client(self.proxy_port)
        yield client.opened
        self.frontend.backend.drain_server("s1")
        self.frontend.backend.ready_server("s1")
        yield run_reactor_for(40)
        self.assertFalse(client.closed.called)
        client.sendMessage(b"still open")
        (message,) = yield client.wait_messages(1)
        self.assertEqual(message[0], b"still open")

    @defer.inlineCallbacks
    def test_a_restart_closes_sessions_with_1012(self):  # type: ignore[no-untyped-def]
        self.start()
        client = connect_client(self.proxy_port)
        yield client.opened
        yield drain(self.frontend, 5, 0.0, 1012)
        clean, code, reason = yield client.closed
        self.assertEqual((code, reason), (1012, "proxy restarting"))


class HalfCloseOrigin(Protocol):
    """Answers any upgrade with a 101, echoes bytes, and says goodbye when the proxy half-closes."""

    def connectionMade(self) -> None:
        alsoProvides(self, IHalfCloseableProtocol)
        self.buffer = b""
        self.switched = False

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self.transport.write(data)
            return
        self.buffer += data
        head, found, rest = self.buffer.partition(b"\r\n\r\n")
        if found:
            key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key")][0]
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n" + rest)
            self.switched = True

    def readConnectionLost(self) -> None:
        self.transport.write(b"goodbye")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class TunnelHalfCloseTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_client_half_close_reaches_the_origin_and_its_answer_comes_back(self):  # type: ignore[no-untyped-def]
        port = self.start_raw_origin(HalfCloseOrigin)
        frontend = self.start_proxy(port, websocket=WebSocketConfig(mode="tunnel"))
        client = yield self.connect()
        client.send(upgrade() + b"early bytes")
        yield client.until(lambda data: data.endswith(b"early bytes"))
        client.transport.loseWriteConnection()
        received = yield client.closed
        self.assertTrue(received.endswith(b"early bytesgoodbye"))
        yield self.settle(frontend)


class NewKeyTests(unittest.TestCase):
    """The proxy's own handshake keys: 16 random bytes each, base64-encoded, never the same twice."""

    def setUp(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.addCleanup(os.close, self.read_end)
        self.addCleanup(os.close, self.write_end)

    def test_keys_are_16_bytes_and_distinct_across_reads_from_the_system(self) -> None:
        keys = [new_key() for _ in range(1000)]  # 16 KB: several 4 KiB reads
        self.assertEqual(len(set(keys)), len(keys))
        self.assertTrue(all(len(base64.b64decode(key, validate=True)) == 16 for key in keys))

    def test_a_forked_child_reads_its_own(self) -> None:
        new_key()
        child = os.fork()
        if child == 0:  # the child: its next key must not be the parent's next one
            os.write(self.write_end, new_key())
            os._exit(0)
        os.waitpid(child, 0)
        self.assertNotEqual(os.read(self.read_end, 24), new_key())
