"""Proxied connections: who the client is behind a trusted proxy, and what cannot be spoofed."""

from __future__ import annotations

import socket
import struct

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.frontend import PeerSettings
from rubrisproxy.frontend._peers import client_of, forwarded_chain
from rubrisproxy.lifecycle import ConnectionEnd

from .helpers import ProxyTestCase, get

V2_PREFIX = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(source: str, port: int) -> bytes:
    """A PROXY v2 header for a TCP/IPv4 connection from ``source``."""
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 80)
    return V2_PREFIX + b"\x21\x11" + struct.pack("!H", len(addresses)) + addresses


class ChainTests(SynchronousTestCase):
    settings = PeerSettings.build("proxied", ("127.0.0.0/8", "10.0.0.0/8"), "off", "x-forwarded-for")

    def client(self, peer: str, *headers: tuple[bytes, bytes]) -> str:
        return client_of(peer, list(headers), self.settings)

    def test_the_rightmost_untrusted_hop_is_the_client(self) -> None:
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"203.0.113.7, 10.1.1.1")), "203.0.113.7")
        spoofed = (b"X-Forwarded-For", b"1.2.3.4, 203.0.113.7")  # the client wrote 1.2.3.4 itself
        self.assertEqual(self.client("127.0.0.1", spoofed), "203.0.113.7")
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-For", b"10.0.0.2")),
                         "1.2.3.4")

    def test_an_untrusted_peer_is_the_client_whatever_it_says(self) -> None:
        self.assertEqual(self.client("192.0.2.1", (b"X-Forwarded-For", b"203.0.113.7")), "192.0.2.1")

    def test_forwarded_and_odd_values(self) -> None:
        forwarded = (b"Forwarded", b'for=198.51.100.1;proto=https, for="[2001:db8::1]:4711"')
        self.assertEqual(forwarded_chain([forwarded], b"forwarded"), ["198.51.100.1", "2001:db8::1"])
        self.assertEqual(self.client("127.0.0.1", forwarded), "127.0.0.1")  # not the header these proxies write
        rfc7239 = PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "forwarded")
        spoofed = (b"X-Forwarded-For", b"6.6.6.6")  # written by the client, passed on by a Forwarded-only proxy
        self.assertEqual(client_of("127.0.0.1", [spoofed, forwarded], rfc7239), "2001:db8::1")
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"<script>")), "unknown")
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"203.0.113.7:51234")), "203.0.113.7")
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"[2001:db8::7]:443, 2001:db8::8")), "2001:db8::8")
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"10.0.0.9")), "10.0.0.9")  # all trusted
        # An empty hop is no address (the trusted proxy passed on what a client wrote): it stops the chain.
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b"10.1.1.1,")), "unknown")
        self.assertEqual(self.client("127.0.0.1", (b"X-Forwarded-For", b" , 203.0.113.5")), "203.0.113.5")
        self.assertEqual(self.client("127.0.0.1"), "127.0.0.1")


class ProxiedFrontendTests(ProxyTestCase):
    @defer.inlineCallbacks
    def through(self, data: bytes, trusted: tuple[str, ...] = ("127.0.0.0/8",), protocol: str = "off",  # type: ignore[no-untyped-def]
                answered: bool = True):
        """Send ``data`` on a new connection to a proxied frontend; wait for the answer, or the close."""
        frontend = self.start_proxy(self.start_web_origin(), peers=PeerSettings.build("proxied", trusted, protocol, "x-forwarded-for"))
        client = yield self.connect()
        client.send(data)
        yield client.responses(1) if answered else client.closed
        return frontend, client

    @defer.inlineCallbacks
    def test_a_trusted_proxys_chain_names_the_client_and_is_extended(self):  # type: ignore[no-untyped-def]
        frontend, client = yield self.through(get(b"/headers", b"X-Forwarded-For: 1.2.3.4, 203.0.113.7\r\n"
                                                                b"X-Forwarded-Proto: https\r\n"))
        self.assertEqual(self.access_log.entries[0].client, "203.0.113.7")
        body = client.received.lower()
        self.assertIn(b"x-forwarded-for: 1.2.3.4, 203.0.113.7, 127.0.0.1", body)
        self.assertIn(b"x-forwarded-proto: https", body)  # the proxy's own, kept
        self.assertEqual(body.count(b"x-forwarded-proto"), 1)

    @defer.inlineCallbacks
    def test_many_clients_over_one_connection(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_web_origin(), peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "x-forwarded-for"))
        client = yield self.connect()
        for address in (b"198.51.100.1", b"198.51.100.2"):
            count = len(self.access_log.entries) + 1
            client.send(get(b"/", b"X-Forwarded-For: " + address + b"\r\n"))
            yield client.responses(count)
        self.assertEqual([e.client for e in self.access_log.entries], ["198.51.100.1", "198.51.100.2"])

    @defer.inlineCallbacks
    def test_an_open_connection_keeps_the_settings_it_opened_with(self):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(self.start_web_origin(), peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "x-forwarded-for"))
        client = yield self.connect()
        client.send(get(b"/", b"X-Forwarded-For: 198.51.100.1\r\n"))
        yield client.responses(1)
        frontend.peers = PeerSettings.build("proxied", (), "off", "x-forwarded-for")  # a reload that trusts nobody
        client.send(get(b"/", b"X-Forwarded-For: 198.51.100.2\r\n"))
        yield client.responses(2)
        newcomer = yield self.connect()
        newcomer.send(get(b"/", b"X-Forwarded-For: 198.51.100.3\r\n"))
        yield newcomer.responses(1)
        self.assertEqual([e.client for e in self.access_log.entries], ["198.51.100.1", "198.51.100.2", "127.0.0.1"])

    @defer.inlineCallbacks
    def test_an_untrusted_peer_cannot_name_a_client(self):  # type: ignore[no-untyped-def]
        _, client = yield self.through(get(b"/headers", b"X-Forwarded-For: 203.0.113.7\r\n"), trusted=("10.0.0.0/8",))
        self.assertEqual(self.access_log.entries[0].client, "127.0.0.1")
        self.assertNotIn(b"203.0.113.7", client.received)

    @defer.inlineCallbacks
    def test_a_local_frontend_ignores_forwarding_headers(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_web_origin())
        (response,) = yield self.request(get(b"/headers", b"X-Forwarded-For: 203.0.113.7\r\n"))
        self.assertEqual(self.access_log.entries[0].client, "127.0.0.1")
        self.assertNotIn(b"203.0.113.7", response.body)

    @defer.inlineCallbacks
    def test_proxy_protocol_v1(self):  # type: ignore[no-untyped-def]
        data = b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n" + get(b"/")
        _, client = yield self.through(data, protocol="v1")
        self.assertEqual(self.access_log.entries[0].client, "198.51.100.9")

    @defer.inlineCallbacks
    def test_handlers_see_the_proxy_as_peer_and_the_proxy_header_as_source(self):  # type: ignore[no-untyped-def]
        from rubrisproxy.lifecycle import LifecycleHandlers

        from .test_lifecycle import Recorder

        recorder = Recorder()
        frontend = self.start_proxy(self.start_web_origin(),
                                    peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "v1", "x-forwarded-for"))
        frontend.handlers = LifecycleHandlers.of((recorder,))
        client = yield self.connect()
        client.send(b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n" + get(b"/"))
        yield client.responses(1)
        client.transport.loseConnection()
        yield self.poll(lambda: recorder.ended, "ended")
        ((info, _),) = recorder.ended
        (opened,) = recorder.opened  # told once the header named the source, so a handler may refuse by it
        self.assertEqual((opened.peer, opened.source, info.peer, info.source),
                         ("127.0.0.1", "198.51.100.9", "127.0.0.1", "198.51.100.9"))


    @defer.inlineCallbacks
    def test_proxy_protocol_v2(self):  # type: ignore[no-untyped-def]
        data = proxy_v2("198.51.100.10", 5555) + get(b"/")
        frontend, client = yield self.through(data, protocol="any")
        self.assertEqual(self.access_log.entries[0].client, "198.51.100.10")
        (connection,) = frontend.connections
        self.assertEqual(connection.bytes_in, len(data))  # the header is read from the connection too

    @defer.inlineCallbacks
    def test_a_missing_or_unexpected_proxy_header_closes_the_connection(self):  # type: ignore[no-untyped-def]
        for data, protocol in ((get(b"/"), "v1"), (proxy_v2("198.51.100.10", 1) + get(b"/"), "v1"),
                               (b"PROXY TCP4 198.51.100.9 127.0.0.1 port 80\r\n" + get(b"/"), "v1"),
                               (b"PROXY TCP4 1.1.1.1,2.2.2.2 127.0.0.1 5555 80\r\n" + get(b"/"), "any"),
                               (b"PROXY TCP4 \xff 127.0.0.1 5555 80\r\n" + get(b"/"), "v1")):
            frontend, client = yield self.through(data, protocol=protocol, answered=False)
            self.assertEqual(client.received, b"")
            ends = frontend.connection_ends
            yield self.poll(lambda: ends, "the connection ended")  # noqa: B023 - polled within this turn
            self.assertEqual(ends, {ConnectionEnd.PROTOCOL_READ_ERROR.value: 1})

    @defer.inlineCallbacks
    def test_a_proxy_header_from_an_untrusted_peer_is_refused(self):  # type: ignore[no-untyped-def]
        data = b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n" + get(b"/")
        frontend, client = yield self.through(data, trusted=("10.0.0.0/8",), protocol="v1", answered=False)
        self.assertEqual(client.received, b"")

    @defer.inlineCallbacks
    def test_a_bad_proxy_header_is_heard_of_opened_and_ended_once(self):  # type: ignore[no-untyped-def]
        from rubrisproxy.lifecycle import LifecycleHandlers

        from .test_lifecycle import Recorder

        recorder = Recorder(refuse=("127.0.0.1",))  # its refusal cannot hide why the connection closed
        frontend = self.start_proxy(self.start_web_origin(), peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "v1", "x-forwarded-for"))
        frontend.handlers = LifecycleHandlers.of((recorder,))
        client = yield self.connect()
        client.send(b"GET / HTTP/1.1\r\n")
        yield client.closed
        yield self.poll(lambda: recorder.ended, "ended")
        (opened,) = recorder.opened
        ((info, reason),) = recorder.ended
        self.assertEqual((opened.source, info.source, reason), (None, None, ConnectionEnd.PROTOCOL_READ_ERROR))

    @defer.inlineCallbacks
    def test_proxy_unknown_keeps_the_proxy_as_the_source(self):  # type: ignore[no-untyped-def]
        _, client = yield self.through(b"PROXY UNKNOWN\r\n" + get(b"/headers", b"X-Forwarded-For: 203.0.113.7\r\n"),
                                       protocol="v1")
        self.assertEqual(self.access_log.entries[0].client, "203.0.113.7")  # the proxy is trusted: its chain counts


class ForwardingHeaderTests(ProxyTestCase):
    """Only the header the trusted proxies write is believed; the origin gets both, from the same hops."""

    @defer.inlineCallbacks
    def headers_seen(self, believed: str, extra: bytes):  # type: ignore[no-untyped-def]
        peers = PeerSettings.build("proxied", ("127.0.0.0/8",), "off", believed)
        self.start_proxy(self.start_web_origin(), peers=peers)
        (response,) = yield self.request(get(b"/headers", extra))
        lines = response.body.lower().split(b"\n")
        return {name: [line for line in lines if line.startswith(name + b": ")] for name in (b"x-forwarded-for", b"forwarded")}

    @defer.inlineCallbacks
    def test_forwarded_believed_an_x_forwarded_for_written_by_the_client_is_not_passed_on(self):  # type: ignore[no-untyped-def]
        seen = yield self.headers_seen("forwarded", b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=1.2.3.4\r\n")
        self.assertEqual(seen[b"x-forwarded-for"], [b"x-forwarded-for: 1.2.3.4, 127.0.0.1"])
        self.assertEqual(len(seen[b"forwarded"]), 1)
        self.assertTrue(seen[b"forwarded"][0].startswith(b"forwarded: for=1.2.3.4, for=127.0.0.1;proto=http;host="))

    @defer.inlineCallbacks
    def test_x_forwarded_for_believed_a_forwarded_written_by_the_client_is_not_passed_on(self):  # type: ignore[no-untyped-def]
        seen = yield self.headers_seen(
            "x-forwarded-for", b"Forwarded: for=9.9.9.9\r\nX-Forwarded-For: 2001:db8::5, not-an-ip\r\n")
        self.assertEqual(seen[b"x-forwarded-for"], [b"x-forwarded-for: 2001:db8::5, not-an-ip, 127.0.0.1"])
        (forwarded,) = seen[b"forwarded"]
        self.assertTrue(forwarded.startswith(b'forwarded: for="[2001:db8::5]", for=unknown, for=127.0.0.1;proto=http'))
        self.assertNotIn(b"9.9.9.9", forwarded)
