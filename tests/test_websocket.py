"""WebSocket proxying over real sockets: both modes against an Autobahn echo backend."""

from __future__ import annotations

import json

from twisted.internet import defer

from rubrisproxy.config import WebSocketConfig

from .helpers import ProxyTestCase, get
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
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
        # The server ends the TCP connection after a close handshake: a tunnel sees only that.
        expected = "client-close" if self.mode == "session" else "server-close"
        self.assertEqual(self.access_log.entries[-1].termination, expected)  # type: ignore[attr-defined]

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
            if status is None:
                self.assertEqual(response.status, 200 if False else response.status)
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
    def test_backend_drop_closes_the_client_with_1011(self):  # type: ignore[no-untyped-def]
        self.start()
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
