"""Hostile message rules over real loopback sockets: framing named in Connection, Host, Forwarded, route paths.

Each test sends the exact bytes to the proxy; the origin the test starts records every
request it parsed, so a smuggled or rewritten request shows up as what the origin got.
"""

from __future__ import annotations

import httptools
from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientCreator, Protocol
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.config import HookConfig, RouteConfig, WebSocketConfig
from rubrisproxy.frontend import PeerSettings
from rubrisproxy.frontend._peers import client_of, forwarded_chain, forwarded_elements, forwarded_quote
from rubrisproxy.http import HTTPError, normalise_path, route_host, valid_host
from rubrisproxy.listening import bound_address
from rubrisproxy.routing import Router
from rubrisproxy.websocket import Handshake, WebSocketHook

from .helpers import ProxyTestCase, RawClient, parse_responses, run_reactor_for

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Received:
    """One request as the origin parsed it."""

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return b", ".join(values) if values else None


class RecordingOrigin(Protocol):
    """Parses what the proxy sends, records each request, and answers each with ``answer``."""

    def __init__(self, log: list[Received], raw: list[bytes], answer: bytes) -> None:
        self.log, self.raw, self.answer = log, raw, answer
        self.parser = httptools.HttpRequestParser(self)
        self.current = Received()

    def dataReceived(self, data: bytes) -> None:
        self.raw.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an upgrade it declines: already answered as a plain request
        except httptools.HttpParserError:
            self.transport.loseConnection()

    def on_url(self, url: bytes) -> None:
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.log.append(self.current)
        self.current = Received()
        self.transport.write(self.answer)


class HardeningTestCase(ProxyTestCase):
    def start_recording_origin(self, answer: bytes = OK) -> int:
        self.received: list[Received] = []
        self.raw: list[bytes] = []
        return self.start_raw_origin(lambda: RecordingOrigin(self.received, self.raw, answer))

    @defer.inlineCallbacks
    def refused(self, data: bytes, status: int = 400):  # type: ignore[no-untyped-def]
        """Send ``data``: the proxy answers ``status`` and closes; the origin gets nothing."""
        client = yield self.connect()
        client.send(data)
        received = yield client.until(lambda data: False)  # resolved by the close
        responses = parse_responses(received)
        self.assertEqual([r.status for r in responses], [status], received)
        self.assertEqual(responses[0].header(b"Connection"), b"close")
        yield run_reactor_for(3)
        self.assertEqual(self.raw, [], "the origin was sent something")


class ConnectionFramingTests(HardeningTestCase):
    """A Connection header cannot strip Content-Length, Transfer-Encoding or Host from a message."""

    @defer.inlineCallbacks
    def test_a_request_whose_connection_names_its_framing_is_refused(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())
        smuggled = b"GET /admin HTTP/1.1\r\nHost: a\r\nX-Ignore: "
        for connection in (b"content-length", b"Content-Length", b"close, content-length", b"CONTENT-LENGTH ,keep-alive"):
            yield self.refused(
                b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (connection, len(smuggled), smuggled)
            )
        for connection in (b"transfer-encoding", b"Transfer-Encoding, close"):
            yield self.refused(
                b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n" % connection
            )
        for connection in (b"keep-alive, Host", b"host", b"HOST"):
            yield self.refused(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: %s\r\n\r\n" % connection)
        # Two Connection lines: the second still counts.
        yield self.refused(
            b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: content-length\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )

    @defer.inlineCallbacks
    def test_an_http_1_0_request_with_a_transfer_encoding_is_refused(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())  # RFC 9112 6.1: its framing is faulty
        yield self.refused(b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        yield self.refused(
            b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc"
        )
        self.assertEqual(self.received, [])

    @defer.inlineCallbacks
    def test_other_listed_headers_are_still_removed_and_the_body_keeps_its_length(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())
        (response,) = yield self.request(
            b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 3\r\n\r\nabc"
        )
        self.assertEqual(response.status, 200)
        (seen,) = self.received
        self.assertEqual((seen.target, seen.body, seen.header(b"Content-Length")), (b"/x", b"abc", b"3"))
        self.assertIsNone(seen.header(b"X-Secret"))

    @defer.inlineCallbacks
    def check_response_framing(self, answer: bytes, body: bytes):  # type: ignore[no-untyped-def]
        """The origin's ``answer`` reaches the client framed, and the connection goes on with a second exchange."""
        self.start_proxy(self.start_recording_origin(answer))
        client = yield self.connect()
        client.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        (first,) = yield client.responses(1)
        self.assertEqual(first.body, body)
        self.assertTrue(first.header(b"Content-Length") is not None or first.header(b"Transfer-Encoding") == b"chunked")
        client.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        responses = yield client.responses(2)
        self.assertEqual([r.body for r in responses], [body, body])
        self.assertEqual([r.target for r in self.received], [b"/1", b"/2"])

    def test_a_response_whose_connection_names_content_length_keeps_it(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello", b"hello")

    def test_a_response_whose_connection_names_its_framing_in_any_case_keeps_it(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CONTENT-LENGTH, Transfer-Encoding\r\nContent-Length: 5\r\n\r\nhello",
            b"hello")

    def test_a_closing_response_whose_connection_names_content_length_keeps_it(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: close, content-length\r\nContent-Length: 5\r\n\r\nhello", b"hello")

    def test_a_chunked_response_whose_connection_names_transfer_encoding_stays_chunked(self):  # type: ignore[no-untyped-def]
        return self.check_response_framing(
            b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n", b"hello")


class RoutePathTests(HardeningTestCase):
    """Routes match the path and host the origin receives, however the client spells them."""

    def setUp(self) -> None:
        frontend = self.start_proxy(self.start_recording_origin())
        routes = [
            RouteConfig(path_prefix="/internal", deny=403),
            RouteConfig(path_regex="^/private/", deny=403),
            RouteConfig(host="admin.example.com", deny=403),
        ]
        frontend.router = Router(routes, {"app": frontend.backend}, frontend.backend)

    @defer.inlineCallbacks
    def answered(self, data: bytes, status: int):  # type: ignore[no-untyped-def]
        (response,) = yield self.request(data)
        self.assertEqual(response.status, status, data)
        return response

    @defer.inlineCallbacks
    def test_every_spelling_of_a_denied_path_is_denied(self):  # type: ignore[no-untyped-def]
        for target in (
            b"/internal/x", b"/%69nternal/x", b"/%69%6E%74ernal/x", b"/./internal/x", b"//internal/x",
            b"/y/../internal/x", b"/%2e%2e/internal/x", b"/y/%2E%2e/internal", b"/y/..;/internal/x",
            b"/;x/internal", b"/.;/internal", b"/internal;jsessionid=1", b"/internal?x=1", b"/a/b/../../internal",
            b"/private;x/y", b"/../private/y", b"/private/./y", b"//private//y",
            b"http://www.example.com/y/../internal",
        ):
            yield self.answered(b"GET %s HTTP/1.1\r\nHost: www.example.com\r\n\r\n" % target, 403)
        self.assertEqual(self.raw, [])

    @defer.inlineCallbacks
    def test_every_spelling_of_a_denied_host_is_denied(self):  # type: ignore[no-untyped-def]
        for host in (b"admin.example.com", b"ADMIN.Example.COM", b"admin.example.com.", b"admin.example.com.:8080"):
            yield self.answered(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host, 403)
        # An absolute target's authority is the host, whatever Host says.
        yield self.answered(b"GET http://Admin.example.com./x HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 403)
        self.assertEqual(self.raw, [])

    @defer.inlineCallbacks
    def test_the_origin_receives_the_normalised_path_and_the_query_as_sent(self):  # type: ignore[no-untyped-def]
        cases = [
            (b"/a/./b/../c//d%7e%41%2fe?x=/../%2e&y=%zz", b"/a/c/d~A%2Fe?x=/../%2e&y=%zz"),
            (b"/internals/../public/", b"/public/"),
            (b"/a;v=1/b", b"/a;v=1/b"),
            (b"/group%2Fproject", b"/group%2Fproject"),
            (b"http://www.example.com", b"/"),
            (b"http://www.example.com?q=1", b"/?q=1"),
        ]
        for sent, _ in cases:
            yield self.answered(b"GET %s HTTP/1.1\r\nHost: www.example.com\r\n\r\n" % sent, 200)
        self.assertEqual([r.target for r in self.received], [expected for _, expected in cases])

    @defer.inlineCallbacks
    def test_an_absolute_targets_authority_replaces_host(self):  # type: ignore[no-untyped-def]
        yield self.answered(b"GET http://www.example.com:8080/x HTTP/1.1\r\nHost: admin.example.com\r\n\r\n", 200)
        yield self.answered(b"GET HTTP://www.example.com/y HTTP/1.0\r\n\r\n", 200)
        self.assertEqual([(r.target, r.header(b"Host")) for r in self.received],
                         [(b"/x", b"www.example.com:8080"), (b"/y", b"www.example.com")])
        self.assertIn(b'host="www.example.com:8080"', self.received[0].header(b"Forwarded"))

    @defer.inlineCallbacks
    def test_a_path_no_route_can_read_is_refused(self):  # type: ignore[no-untyped-def]
        for target in (
            b"/a\\..\\internal", b"/%zz", b"/a%4", b"/a%00b", b"/x/..%2Finternal", b"/x/..%2finternal",
            b"/%2Finternal", b"/%5Cinternal", b"/public;x%2F..%2F..%2Finternal", b"/a#frag", b"/a?b#frag",
            b"http:///internal", b"http://user@www.example.com/", b"https://a b/", b"ftp://www.example.com/",
        ):
            yield self.refused(b"GET %s HTTP/1.1\r\nHost: www.example.com\r\n\r\n" % target)


class HostTests(HardeningTestCase):
    """A Host that is not a host (RFC 3986 host and port, narrowed to DNS names) is refused."""

    @defer.inlineCallbacks
    def test_an_invalid_host_is_refused(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())
        for host in (
            b'a", for=6.6.6.6;host="x', b"a b", b"a@b", b"a/b", b"a\\b", b"[::1", b"[::1]x", b"[zz::1]",
            b"[fe80::1%25eth0]", b"a:99999", b"a:", b"a:b", b"a..b", b".a", b"a:80:80", b"%61dmin",
            b"a,b", b"a;b", b"a'b", b"\xc3\xa9.example",
        ):
            yield self.refused(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)

    @defer.inlineCallbacks
    def test_valid_hosts_pass_as_sent(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin())
        hosts = [b"www.example.com", b"WWW.example.com.", b"127.0.0.1:8080", b"[2001:db8::1]:443", b"my_host-1",
                 b"xn--bcher-kva.example", b"a.b.c.d.e.f"]
        for host in hosts:
            (response,) = yield self.request(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
            self.assertEqual(response.status, 200)
        (response,) = yield self.request(b"GET / HTTP/1.1\r\nHost: \r\n\r\n")  # empty: allowed (RFC 9112 3.2)
        self.assertEqual(response.status, 200)
        (response,) = yield self.request(b"GET / HTTP/1.1\r\nHost: a.example \t\r\n\r\n")  # OWS is not the value
        self.assertEqual(response.status, 200)
        self.assertEqual([r.header(b"Host") for r in self.received], [*hosts, b"", b"a.example"])


#: What a proxy that quotes correctly writes for a client that sent ``Host: a", for=6.6.6.6;host="x``.
ESCAPED = b'for=203.0.113.9;host="a\\", for=6.6.6.6;host=\\"x"'


class ForwardedChainTests(SynchronousTestCase):
    """The Forwarded parser reads quoted strings as values, whatever they hold."""

    settings = PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "forwarded")

    def test_a_quoted_comma_is_no_new_hop(self) -> None:
        headers = [(b"Forwarded", ESCAPED)]
        self.assertEqual(forwarded_chain(headers, b"forwarded"), ["203.0.113.9"])
        self.assertEqual(client_of("127.0.0.1", headers, self.settings), "203.0.113.9")
        (element,) = forwarded_elements(ESCAPED.decode())  # type: ignore[misc]
        self.assertEqual(element["host"], 'a", for=6.6.6.6;host="x')

    def test_a_value_that_does_not_parse_is_one_unknown_hop(self) -> None:
        for value in (b'for="6.6.6.6', b"for=1.1.1.1;for=6.6.6.6", b"for=6.6.6.6 x", b"for=", b"=6.6.6.6",
                      b'for="6.6.6.6\\"', b"for=6.6.6.6;host=a,b=", b'for=6.6.6.6"x"'):
            headers = [(b"Forwarded", value), (b"Forwarded", b"for=127.0.0.2")]
            self.assertEqual(forwarded_chain(headers, b"forwarded"), ["unknown", "127.0.0.2"], value)
            self.assertEqual(client_of("127.0.0.1", headers, self.settings), "unknown")

    def test_quoting_round_trips(self) -> None:
        for host in (b"a", b'a"b', b"a\\b", b'\\"', b'a", for=6.6.6.6;host="x'):
            (element,) = forwarded_elements((b"for=1.2.3.4;host=" + forwarded_quote(host)).decode())  # type: ignore[misc]
            self.assertEqual(element["host"].encode(), host)


class ForwardedHeaderTests(HardeningTestCase):
    """What the origin reads from Forwarded names the right client, through one proxy or two."""

    def chain_seen(self, received: Received) -> list[str]:
        return forwarded_chain([(b"Forwarded", received.header(b"Forwarded") or b"")], b"forwarded")

    @defer.inlineCallbacks
    def test_a_quoted_host_cannot_add_a_hop_behind_a_trusted_proxy(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin(),
                         peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "forwarded"))
        (response,) = yield self.request(b"GET / HTTP/1.1\r\nHost: www.example.com\r\nForwarded: %s\r\n\r\n" % ESCAPED)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.access_log.entries[0].client, "203.0.113.9")
        (seen,) = self.received
        self.assertEqual(seen.header(b"X-Forwarded-For"), b"203.0.113.9, 127.0.0.1")
        self.assertEqual(self.chain_seen(seen), ["203.0.113.9", "127.0.0.1"])

    @defer.inlineCallbacks
    def test_a_unix_socket_client_is_forwarded_as_unknown_without_an_x_forwarded_for(self):  # type: ignore[no-untyped-def]
        origin = self.start_recording_origin()
        path = self.mktemp() + ".sock"
        self.service = self.start_from_config(f"""
[frontends.web]
listen = ["unix:{path}"]
backend = "app"
[backends.app]
servers = ["127.0.0.1:{origin}"]
[backends.app.health]
check = "none"
""")
        client = RawClient()
        yield ClientCreator(reactor, lambda: client).connectUNIX(path)
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
        (response,) = yield client.responses(1)
        client.transport.loseConnection()
        self.assertEqual(response.status, 200)
        (seen,) = self.received
        self.assertIsNone(seen.header(b"X-Forwarded-For"))  # the client's own dropped, and no empty one written
        (port,) = self.service.getServiceNamed("frontend:web").ports  # type: ignore[attr-defined]
        self.assertEqual(bound_address(port), path)  # as the listening line and the admin API show it
        self.assertEqual(seen.header(b"Forwarded"), b'for=unknown;proto=http;host="a"')

    @defer.inlineCallbacks
    def test_a_broken_forwarded_value_is_passed_on_as_unknown(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin(),
                         peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "forwarded"))
        (response,) = yield self.request(b'GET / HTTP/1.1\r\nHost: a\r\nForwarded: for="6.6.6.6, for=1.2.3.4\r\n\r\n')
        self.assertEqual(response.status, 200)
        self.assertEqual(self.access_log.entries[0].client, "unknown")
        (seen,) = self.received
        self.assertTrue(seen.header(b"Forwarded").startswith(b"for=unknown, for=127.0.0.1;proto=http;host="))  # type: ignore[union-attr]
        self.assertEqual(self.chain_seen(seen), ["unknown", "127.0.0.1"])
        self.assertEqual(seen.header(b"X-Forwarded-For"), b"unknown, 127.0.0.1")

    @defer.inlineCallbacks
    def test_two_proxies_in_a_row(self):  # type: ignore[no-untyped-def]
        """A local frontend in front of a proxied one: the hostile Host stops at the first."""
        self.start_proxy(self.start_recording_origin(),
                         peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "forwarded"))
        inner_log = self.access_log
        self.start_proxy(self.proxy_port)
        yield self.refused(b'GET / HTTP/1.1\r\nHost: a", for=6.6.6.6;host="x\r\n\r\n')
        (response,) = yield self.request(b"GET / HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n")
        self.assertEqual(response.status, 200)
        (seen,) = self.received
        self.assertEqual(self.chain_seen(seen), ["127.0.0.1", "127.0.0.1"])
        self.assertEqual(seen.header(b"Forwarded"),
                         b'for=127.0.0.1;proto=http;host="www.example.com:8080", '
                         b'for=127.0.0.1;proto=http;host="www.example.com:8080"')
        self.assertEqual(inner_log.entries[-1].client, "127.0.0.1")

    @defer.inlineCallbacks
    def test_a_trusted_proxys_header_removed_by_its_connection_header_is_written_afresh(self):  # type: ignore[no-untyped-def]
        self.start_proxy(self.start_recording_origin(), peers=PeerSettings.build("proxied", ("127.0.0.0/8",), "off", "x-forwarded-for"))
        (response,) = yield self.request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-proto, X-Forwarded-Host\r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: b\r\n\r\n")
        self.assertEqual(response.status, 200)
        (seen,) = self.received
        self.assertEqual((seen.header(b"X-Forwarded-Proto"), seen.header(b"X-Forwarded-Host")), (b"http", b"a"))

    @defer.inlineCallbacks
    def test_each_request_on_a_connection_names_its_own_host(self):  # type: ignore[no-untyped-def]
        """The forwarding lines are made once per client and Host: a connection's requests to other hosts get theirs."""
        self.start_proxy(self.start_recording_origin())
        hosts = [b"a.example", b"b.example:8080", b"a.example", b"[::1]:81"]
        responses = yield self.request(b"".join(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host for host in hosts), len(hosts))
        self.assertEqual([response.status for response in responses], [200] * len(hosts))
        self.assertEqual([(seen.header(b"X-Forwarded-Host"), seen.header(b"Forwarded")) for seen in self.received],
                         [(host, b'for=127.0.0.1;proto=http;host="%s"' % host) for host in hosts])


class NormalFormTests(SynchronousTestCase):
    """The normal form itself, case by case."""

    def test_paths(self) -> None:
        for path, normal in [
            (b"/", b"/"), (b"/a/", b"/a/"), (b"/a/.", b"/a/"), (b"/a/..", b"/"), (b"/..", b"/"), (b"/../../a", b"/a"),
            (b"/a//", b"/a/"), (b"/a/./", b"/a/"), (b"/.well-known/x", b"/.well-known/x"), (b"/a..b/...", b"/a..b/..."),
            (b"/%7e%41%20%2f%3b", b"/~A%20%2F%3B"), (b"/%252e%252e/x", b"/%252e%252e/x"), (b"/a/%2E/b", b"/a/b"),
            (b"/a/..;x", b"/"), (b"/a;x/b;y", b"/a;x/b;y"), (b"/a/;x/b", b"/a/b"),
        ]:
            self.assertEqual(normalise_path(path), normal, path)
            self.assertEqual(normalise_path(normal), normal, normal)  # normal is a fixed point

    def test_refused_paths(self) -> None:
        for path in (b"/a\\b", b"/%", b"/%4", b"/%4g", b"/%00", b"/a/..%2F", b"/%2F", b"/a%2F%2Fb", b"/a%5C.", b"/a%2F..;x"):
            with self.assertRaises(HTTPError) as caught:
                normalise_path(path)
            self.assertEqual(caught.exception.status, 400, path)

    def test_hosts(self) -> None:
        for host in (b"a", b"a.", b"A-1_b~c.d", b"1.2.3.4:0", b"[::1]", b"[::ffff:1.2.3.4]:65535"):
            self.assertTrue(valid_host(host), host)
        for host in (b"", b".", b"a..", b"..a", b"a:65536", b"a:123456", b"[::1]:", b"[1::2::3]", b"[::1]]", b"a:-1",
                     b"a b", b"a%20b", b"a\tb"):
            self.assertFalse(valid_host(host), host)
        self.assertEqual(
            [route_host(h) for h in (b"A.Example.COM.", b"a.example.com:80", b"[2001:DB8::1]:8080", b"a.:1")],
            [b"a.example.com", b"a.example.com", b"[2001:db8::1]", b"a"],
        )


class TargetRecorder(WebSocketHook):
    """Remembers the target each handshake showed it."""

    seen: list[bytes] = []

    def handshake(self, request: Handshake) -> None:
        TargetRecorder.seen.append(request.target)


class HookTargetTests(HardeningTestCase):
    @defer.inlineCallbacks
    def test_a_websocket_hook_sees_the_target_the_origin_receives(self):  # type: ignore[no-untyped-def]
        TargetRecorder.seen = []
        hooks = (HookConfig("tests.test_hardening_http.TargetRecorder"),)
        self.start_proxy(self.start_recording_origin(), websocket=WebSocketConfig(hooks=hooks))
        (response,) = yield self.request(
            b"GET /x/..;/%63hat?token=a/../b HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        self.assertEqual(response.status, 200)  # the recording origin declines the upgrade
        self.assertEqual(TargetRecorder.seen, [b"/chat?token=a/../b"])
        self.assertEqual([r.target for r in self.received], [b"/chat?token=a/../b"])
