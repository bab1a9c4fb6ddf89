"""A WebSocket close the proxy begins ends with a FIN, not a reset, on real sockets on 127.0.0.1.

A reset (an abort, or a close with bytes unread) makes browsers report 1006 and Node's and Python's clients a
connection reset instead of the close code, and can destroy the close frame in flight (docs/websocket.md,
"How a close ends"). Each test here has a peer on a blocking socket, in a thread, do what a client (or server) of
its own does: read the proxy's close frame, maybe send data frames still, answer with its close, and read on: it
must get the end of stream (``recv`` returns b""), not ECONNRESET. Then a client nobody here wrote (``websockets``,
Node's ``ws``) must see the proxy's code with a clean close.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import sys
import time
from typing import Any, cast

from twisted.internet import threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest

from rubrisproxy.config import WebSocketConfig
from rubrisproxy.frontend import drain
from rubrisproxy.websocket import accept_key

from .helpers import GUARD, ProxyTestCase
from .test_ws_interop import INTEROP, ensure_node_ws, has_websockets, run_client_script
from .wsecho import EchoBackendFactory, listen_echo_backend

OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8
EOF = "EOF"


def encode(opcode: int, payload: bytes, mask: bytes | None) -> bytes:
    """One final frame of any size; masked (a client's) when ``mask`` is given."""
    size = len(payload)
    bit = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes((0x80 | opcode, bit | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((0x80 | opcode, bit | 127)) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Peer:
    """One end of a WebSocket on a blocking socket (run its methods in a thread): reads frames until a close."""

    def __init__(self, sock: socket.socket, buffered: bytes, mask: bytes | None) -> None:
        self.sock = sock
        self.sock.settimeout(GUARD)
        self.buffer = buffered
        self.mask = mask  # a client's frames are masked

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(encode(opcode, payload, self.mask))

    def until_close(self) -> tuple[int, bytes]:
        """Read (and drop) data frames until a close frame: its code and reason."""
        while True:
            frame = self._frame()
            if frame is None:
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError("the connection ended before a close frame")
                self.buffer += data
                continue
            opcode, payload = frame
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:]

    def answer_and_read_to_the_end(self, code: int, data_frames: int = 0) -> str:
        """Send ``data_frames`` text frames (crossing the close, as a client still talking does), then a close with
        ``code``, then read until the connection ends: ``EOF`` (a FIN), or the error (a reset)."""
        for i in range(data_frames):
            self.send(OP_TEXT, b"still talking %d" % i)
        self.send(OP_CLOSE, struct.pack("!H", code))
        return self.read_to_the_end()

    def read_to_the_end(self) -> str:
        """Read until the connection ends, then end this side too, as a client does on the server's FIN (a proxy
        lingering after a protocol error waits for it, up to close-handshake-timeout)."""
        try:
            while self.sock.recv(65536):
                pass
        except OSError as error:
            return repr(error)
        self.sock.shutdown(socket.SHUT_WR)
        return EOF

    def _frame(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, start = struct.unpack("!Q", data[2:10])[0], 10
        mask = None
        if data[1] & 0x80:
            mask, start = data[start:start + 4], start + 4
        if len(data) < start + size:
            return None
        self.buffer = data[start + size:]
        payload = data[start:start + size]
        if mask is not None:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return data[0] & 0x0F, payload

    def close(self) -> None:
        self.sock.close()


def connect_client(port: int) -> Peer:
    """A raw client's WebSocket to the proxy, open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"no answer to the upgrade: {received!r}")
        received += data
    head, rest = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return Peer(sock, rest, mask=os.urandom(4))


class RawBackend:
    """A WebSocket server on a blocking socket: accepts one upgrade (``serve``, in a thread) and hands its peer over."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(GUARD)
        self.port = self.listener.getsockname()[1]

    def serve(self) -> Peer:
        sock, _ = self.listener.accept()
        sock.settimeout(GUARD)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, rest = received.split(b"\r\n\r\n", 1)
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")
        return Peer(sock, rest, mask=None)

    def close(self) -> None:
        self.listener.close()


def in_thread(function: Any, *args: Any) -> Deferred[Any]:
    return threads.deferToThread(function, *args)


class CleanCloseCase(ProxyTestCase):
    """A proxy in front of the echo backend (pings off)."""

    def start(self, mode: str = "session", **settings: Any) -> EchoBackendFactory:
        backend = EchoBackendFactory()
        listener = listen_echo_backend(backend)
        self.addCleanup(listener.stopListening)
        timeouts = {name: settings.pop(name) for name in ("tunnel",) if name in settings}
        self.frontend = self.start_proxy(
            cast(IPv4Address, listener.getHost()).port,
            websocket=WebSocketConfig(mode=mode, client_ping_interval=0, backend_ping_interval=0, **settings),
            **timeouts,
        )
        return backend

    async def client(self) -> Peer:
        peer = cast(Peer, await in_thread(connect_client, self.proxy_port))
        self.addCleanup(peer.close)
        return peer


class SessionCloseTests(CleanCloseCase):
    """Session mode: the proxy's close frame, the client's answer read, then a FIN."""

    async def closed_by_proxy(self, trigger: bytes | None, code: int, data_frames: int = 0, **settings: Any) -> None:
        self.start(**settings)
        peer = await self.client()
        if trigger is not None:
            await in_thread(peer.send, OP_TEXT, trigger)
        got, _ = await in_thread(peer.until_close)
        self.assertEqual(got, code)
        end = await in_thread(peer.answer_and_read_to_the_end, got, data_frames)
        self.assertEqual(end, EOF)  # a FIN: not ECONNRESET
        await self.settle(self.frontend)

    def test_backend_gone_without_resume(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.closed_by_proxy(b"drop", 1011, resume=False))

    def test_backend_gone_while_the_client_still_sends(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.closed_by_proxy(b"drop", 1011, data_frames=20, resume=False))

    def test_backend_close_relayed(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.closed_by_proxy(b"close:4000:bye", 4000))

    def test_idle_timeout(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.closed_by_proxy(None, 1001, tunnel=0.3))

    def test_idle_timeout_while_the_client_still_sends(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.closed_by_proxy(None, 1001, data_frames=20, tunnel=0.3))

    def test_drain(self) -> Deferred[None]:
        async def check() -> None:
            self.start()
            peer = await self.client()
            closing = in_thread(peer.until_close)
            drained = drain(self.frontend, 5, 0.0, 1001)  # done once every connection has ended (cut after 5 s)
            code, reason = await closing
            self.assertEqual((code, reason), (1001, b"proxy shutting down"))
            self.assertEqual(await in_thread(peer.answer_and_read_to_the_end, code, 20), EOF)
            await drained
            await self.settle(self.frontend)
        return Deferred.fromCoroutine(check())

    def test_a_frame_too_big_still_being_sent(self) -> Deferred[None]:
        """The proxy refuses a frame over max-frame-size (1009) while the client is still sending it: the rest is
        read and discarded, so the client reads the close, answers and gets a FIN (7.1.7: it is not waited for)."""
        async def check() -> None:
            self.start(max_frame_size=1024, max_message_size=1024)
            peer = await self.client()
            await in_thread(peer.send, OP_BINARY, b"x" * 2_000_000)
            code, _ = await in_thread(peer.until_close)
            self.assertEqual(code, 1009)
            self.assertEqual(await in_thread(peer.answer_and_read_to_the_end, code, 20), EOF)
            await self.settle(self.frontend)
            self.assertEqual(self.access_log.entries[-1].termination, "protocol-error")
        return Deferred.fromCoroutine(check())


class HeldFailureTests(ProxyTestCase):
    """A client's protocol error waits for the backend's close before the client is answered: meanwhile nothing more
    is read from the client (it is not parsed, and would be held in memory)."""

    def test_the_rest_of_a_frame_too_big_is_not_held_while_the_backend_closes(self) -> Deferred[None]:
        async def check() -> None:
            server = RawBackend()
            self.addCleanup(server.close)
            self.frontend = self.start_proxy(server.port, websocket=WebSocketConfig(
                mode="session", client_ping_interval=0, backend_ping_interval=0, resume=False,
                max_frame_size=1024, max_message_size=1024, close_handshake_timeout=30.0))
            accepted = in_thread(server.serve)
            client = cast(Peer, await in_thread(connect_client, self.proxy_port))
            self.addCleanup(client.close)
            backend = cast(Peer, await accepted)
            self.addCleanup(backend.close)
            sent = await in_thread(self.send_for, client.sock, 1.5)
            # The backend is asked to close (its close is not answered here): the client's bytes are not read.
            code, _ = await in_thread(backend.until_close)
            self.assertEqual(code, 1001)  # the client went away, as far as the backend is told
            self.assertLess(sent, 24 << 20)  # socket buffers, not the 64 MiB offered
        return Deferred.fromCoroutine(check())

    @staticmethod
    def send_for(sock: socket.socket, seconds: float) -> int:
        """A binary frame of 1 GiB begun (masked), and as much of its payload as the proxy takes in ``seconds``."""
        sock.sendall(bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 30) + b"\x01\x02\x03\x04")
        sock.settimeout(0.05)
        chunk, sent, until = b"x" * (1 << 20), 0, time.monotonic() + seconds
        while time.monotonic() < until and sent < 64 << 20:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, TimeoutError):
                continue
        sock.settimeout(GUARD)
        return sent


class BackendLegCloseTests(ProxyTestCase):
    """The backend leg a proxy closes ends with a FIN too, also when the backend does not end TCP after the closing
    handshake (a server should: the proxy, its client, waits a second for it, then closes)."""

    async def backend(self, **settings: Any) -> tuple[Peer, Peer]:
        server = RawBackend()
        self.addCleanup(server.close)
        self.frontend = self.start_proxy(server.port, websocket=WebSocketConfig(
            mode="session", client_ping_interval=0, backend_ping_interval=0, resume=False), **settings)
        accepted = in_thread(server.serve)
        client = await in_thread(connect_client, self.proxy_port)
        self.addCleanup(client.close)
        peer = cast(Peer, await accepted)
        self.addCleanup(peer.close)
        return client, peer

    def test_a_backend_that_keeps_tcp_open_after_the_closing_handshake(self) -> Deferred[None]:
        async def check() -> None:
            client, backend = await self.backend(tunnel=0.3)  # the idle timeout closes both legs with 1001
            code, _ = await in_thread(backend.until_close)
            self.assertEqual(code, 1001)
            await in_thread(backend.send, OP_CLOSE, struct.pack("!H", code))  # answered, TCP left open
            self.assertEqual(await in_thread(backend.read_to_the_end), EOF)
            self.assertEqual((await in_thread(client.until_close))[0], 1001)
            await self.settle(self.frontend)
        return Deferred.fromCoroutine(check())


class TunnelCloseTests(CleanCloseCase):
    """Tunnel mode relays bytes and so sends no close frame of its own: an idle tunnel ends with a FIN each way."""

    def test_idle_timeout(self) -> Deferred[None]:
        async def check() -> None:
            self.start(mode="tunnel", tunnel=0.3)
            peer = await self.client()
            self.assertEqual(await in_thread(peer.read_to_the_end), EOF)
            await self.settle(self.frontend)
            self.assertEqual(self.access_log.entries[-1].termination, "idle-timeout")
        return Deferred.fromCoroutine(check())


class InteropCloseTests(CleanCloseCase):
    """Clients nobody here wrote see the proxy's close code, cleanly, when the backend goes away (resume off)."""

    def test_python_websockets(self) -> Deferred[None]:
        async def check() -> None:
            if not has_websockets():
                raise SkipTest("the websockets library (>= 13) is not importable (pip install websockets)")
            self.start(resume=False)
            argv = [sys.executable, str(INTEROP / "websockets_closed.py"), self.url(), "drop"]
            result = await run_client_script(self, "python websockets", argv)
            self.assertEqual(result["received"], [1011, "backend connection lost"], result)
            self.assertEqual(result["sent"], [1011, "backend connection lost"], result)
            self.assertIsNone(result["cause"], result)  # a clean end: no ConnectionResetError under it
            await self.settle(self.frontend)
        return Deferred.fromCoroutine(check())

    def test_node_ws(self) -> Deferred[None]:
        async def check() -> None:
            node = shutil.which("node")
            if node is None:
                raise SkipTest("no node binary (apt-get install nodejs npm)")
            await ensure_node_ws(self)
            self.start(resume=False)
            result = await run_client_script(self, "node ws", [node, str(INTEROP / "ws_closed.js"), self.url(), "drop"])
            self.assertEqual(result["close"], {"code": 1011, "reason": "backend connection lost"}, result)
            self.assertEqual(result["resets"], [], result)  # no ECONNRESET on its socket
            await self.settle(self.frontend)
        return Deferred.fromCoroutine(check())

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.proxy_port}/chat"

