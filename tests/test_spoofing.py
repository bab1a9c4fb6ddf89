"""Headers a client may not write for itself: forwarding headers, client-address headers and the session
header, in any spelling, never reach an origin from a client (only the proxy's own do)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.config import WebSocketConfig
from rubrisproxy.frontend import PeerSettings
from rubrisproxy.frontend._connection import LOCAL_CLIENT_DROPS
from rubrisproxy.frontend._proxied import TRUSTED_PROXY_DROPS
from rubrisproxy.http import spellings

from .helpers import ProxyTestCase, get
from .test_resume import switch

#: What a hostile client writes: every header here names it, or claims something, on its own word.
SPOOFED = (
    b"X-Rubris-Session: spoofed; resume=9\r\n"
    b"x_rubris_session: spoofed2; resume=9\r\n"
    b"X_Forwarded_For: 6.6.6.1\r\n"
    b"X-Forwarded_Proto: spoofed-proto\r\n"
    b"x_forwarded_host: spoofed.example\r\n"
    b"X-Forwarded-Port: 6661\r\n"
    b"X-Real-IP: 6.6.6.2\r\n"
    b"X_Real_Ip: 6.6.6.3\r\n"
    b"X-Client-IP: 6.6.6.4\r\n"
    b"x-client_ip: 6.6.6.5\r\n"
)
#: Headers that look alike but claim nothing: they pass.
BENIGN = b"X_Custom_Thing: kept-1\r\nX-Real-IPs: kept-2\r\nX-Session: kept-3\r\n"
SPOOFED_VALUES = (b"spoofed", b"6.6.6.", b"6661")


class Recorder(Protocol):
    """An origin that keeps what it is sent and answers each request head with 200, or a handshake with 101."""

    def __init__(self, heads: list[bytes]) -> None:
        self.heads = heads
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.heads.append(head + b"\r\n")
            if b"\r\nupgrade: websocket" in head.lower():
                self.transport.write(switch(head + b"\r\n\r\n"))
                return  # frames follow: not heads
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def header_lines(head: bytes, name: bytes) -> list[bytes]:
    """The values of the lines of ``head`` whose name reads as ``name`` (case and ``_`` ignored)."""
    wanted = name.lower().replace(b"_", b"-")
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
            if b":" in line and line.split(b":", 1)[0].lower().replace(b"_", b"-") == wanted]


def websocket_handshake(extra: bytes) -> bytes:
    return (b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


class DropListTests(SynchronousTestCase):
    def test_spellings(self) -> None:
        self.assertEqual(spellings((b"X-Real-IP",)), {b"x-real-ip", b"x_real-ip", b"x-real_ip", b"x_real_ip"})
        self.assertEqual(spellings((b"forwarded",)), {b"forwarded"})

    def test_local_and_trusted_lists(self) -> None:
        for name in (b"x_forwarded_for", b"x-forwarded-port", b"x-real-ip", b"x-client_ip", b"x-rubris-session",
                     b"forwarded", b"expect"):
            self.assertIn(name, LOCAL_CLIENT_DROPS)
        # A trusted proxy may write these (as a proxy spells them), and the chain it extends is rewritten.
        for name in (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-real-ip", b"x-client-ip"):
            self.assertNotIn(name, TRUSTED_PROXY_DROPS)
        for name in (b"x-forwarded-for", b"forwarded", b"x-rubris-session", b"x_rubris_session", b"x_real_ip",
                     b"x-forwarded_proto"):
            self.assertIn(name, TRUSTED_PROXY_DROPS)


class SpoofedHeaderTests(ProxyTestCase):
    """Each test sends the exact bytes a hostile client would and reads the bytes the origin got."""

    def start(self, peers: PeerSettings | None = None, **websocket: object) -> list[bytes]:
        heads: list[bytes] = []
        port = self.start_raw_origin(lambda: Recorder(heads))
        websocket.setdefault("client_ping_interval", 0)
        websocket.setdefault("backend_ping_interval", 0)
        self.frontend = self.start_proxy(port, websocket=WebSocketConfig(**websocket), peers=peers)  # type: ignore[arg-type]
        return heads

    def assert_clean(self, head: bytes) -> None:
        for value in SPOOFED_VALUES:
            self.assertNotIn(value, head)
        for value in (b"X_Custom_Thing: kept-1", b"X-Real-IPs: kept-2", b"X-Session: kept-3"):
            self.assertIn(value, head)

    @defer.inlineCallbacks
    def test_plain_http_from_a_local_client(self):  # type: ignore[no-untyped-def]
        heads = self.start()
        (response,) = yield self.request(get(b"/", SPOOFED + BENIGN))
        self.assertEqual(response.status, 200)
        (head,) = heads
        self.assert_clean(head)
        self.assertEqual(header_lines(head, b"x-forwarded-for"), [b"127.0.0.1"])
        self.assertEqual(header_lines(head, b"x-forwarded-proto"), [b"http"])
        self.assertEqual(header_lines(head, b"x-rubris-session"), [])

    @defer.inlineCallbacks
    def test_plain_http_from_an_untrusted_peer(self):  # type: ignore[no-untyped-def]
        heads = self.start(PeerSettings.build("proxied", ("10.0.0.0/8",), "off", "x-forwarded-for"))
        (response,) = yield self.request(get(b"/", SPOOFED + BENIGN + b"X-Forwarded-For: 6.6.6.9\r\n"))
        self.assertEqual(response.status, 200)
        (head,) = heads
        self.assert_clean(head)
        self.assertEqual(header_lines(head, b"x-forwarded-for"), [b"127.0.0.1"])

    @defer.inlineCallbacks
    def test_plain_http_from_a_trusted_proxy(self):  # type: ignore[no-untyped-def]
        heads = self.start(PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "x-forwarded-for"))
        trusted = (b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.7\r\n"
                   b"X-Forwarded-Port: 443\r\n")
        # A trusted proxy's own X-Real-IP, X-Client-IP and X-Forwarded-Port are its word: not sent as spoofed.
        spoofed = b"".join(line + b"\r\n" for line in SPOOFED.split(b"\r\n")
                           if line.split(b":")[0] not in (b"X-Real-IP", b"X-Client-IP", b"X-Forwarded-Port", b""))
        (response,) = yield self.request(get(b"/", spoofed + BENIGN + trusted))
        self.assertEqual(response.status, 200)
        (head,) = heads
        self.assert_clean(head)
        self.assertEqual(self.access_log.entries[0].client, "203.0.113.7")
        self.assertEqual(header_lines(head, b"x-forwarded-for"), [b"203.0.113.7, 127.0.0.1"])
        # What a proxy spells as a proxy does is its own word, kept as before.
        self.assertEqual(header_lines(head, b"x-forwarded-proto"), [b"https"])
        self.assertEqual(header_lines(head, b"x-real-ip"), [b"203.0.113.7"])
        self.assertEqual(header_lines(head, b"x-forwarded-port"), [b"443"])
        self.assertEqual(header_lines(head, b"x-rubris-session"), [])

    @defer.inlineCallbacks
    def websocket_head(self, **websocket: object):  # type: ignore[no-untyped-def]
        heads = self.start(**websocket)
        client = yield self.connect()
        client.send(websocket_handshake(SPOOFED + BENIGN))
        yield client.until(lambda data: b"\r\n\r\n" in data)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "), client.received)
        (head,) = heads
        self.assert_clean(head)
        return head

    @defer.inlineCallbacks
    def test_websocket_session_mode_only_the_proxys_session_header(self):  # type: ignore[no-untyped-def]
        head = yield self.websocket_head(mode="session")
        (session,) = header_lines(head, b"x-rubris-session")
        self.assertRegex(session, rb"^[\w-]+; resume=0$")

    @defer.inlineCallbacks
    def test_websocket_tunnel_mode(self):  # type: ignore[no-untyped-def]
        head = yield self.websocket_head(mode="tunnel")
        self.assertEqual(header_lines(head, b"x-rubris-session"), [])

    @defer.inlineCallbacks
    def test_a_session_header_named_otherwise(self):  # type: ignore[no-untyped-def]
        head = yield self.websocket_head(mode="session", session_header="X-App-Session")
        self.assertEqual(header_lines(head, b"x-rubris-session"), [])
        heads = self.start(session_header="X-App-Session")  # a plain request routed to that backend
        yield self.request(get(b"/", b"X-App-Session: spoofed; resume=9\r\nx_app_session: spoofed\r\n" + BENIGN))
        self.assertEqual(header_lines(heads[0], b"x-app-session"), [])
        self.assert_clean(heads[0])

    @defer.inlineCallbacks
    def test_websocket_session_header_named_otherwise_is_the_proxys(self):  # type: ignore[no-untyped-def]
        heads = self.start(mode="session", session_header="X-App-Session")
        client = yield self.connect()
        client.send(websocket_handshake(b"X-App-Session: spoofed; resume=9\r\nX_App_Session: spoofed\r\n"))
        yield client.until(lambda data: b"\r\n\r\n" in data)
        (session,) = header_lines(heads[0], b"x-app-session")
        self.assertRegex(session, rb"^[\w-]+; resume=0$")


class ForwardModeSpoofingTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_forward_mode_drops_them_too(self):  # type: ignore[no-untyped-def]
        heads: list[bytes] = []
        origin = self.start_raw_origin(lambda: Recorder(heads))
        service = self.start_from_config('[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                                         '[frontends.out.forward]\nallow-hosts = ["127.0.0.1"]\n')
        self.proxy_port = service.parts.frontends["out"].ports[0].getHost().port  # type: ignore[attr-defined]
        target = b"http://127.0.0.1:%d/" % origin
        (response,) = yield self.request(
            b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % origin + SPOOFED + BENIGN + b"\r\n")
        self.assertEqual(response.status, 200)
        (head,) = heads
        for value in SPOOFED_VALUES:
            self.assertNotIn(value, head)
        self.assertIn(b"X_Custom_Thing: kept-1", head)
