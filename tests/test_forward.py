"""Forward-proxy mode: absolute-form requests and CONNECT tunnels, access rules, proxy authentication."""

from __future__ import annotations

import base64
import os
import sys

from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.config import CommandLine, ForwardConfig, load_config
from rubrisproxy.frontend import _forward, hash_password
from rubrisproxy.frontend._auth import FREE_FAILURES
from rubrisproxy.frontend._forward import ForwardProxy, destination
from rubrisproxy.http import HTTPError, RequestHead
from rubrisproxy.service import build_service

from .helpers import ProxyTestCase, RawClient
from .test_admin import ROOT
from .test_tls_origin import listen_tls_echo
from .tlscerts import CertificateAuthority


class ForwardTests(ProxyTestCase):
    rules = ""

    def setUp(self) -> None:
        self.origin_port = self.start_web_origin()
        ca_pem, self.tls_port = listen_tls_echo(self)
        self.ca = ssl.Certificate.loadPEM(ca_pem)
        self.ca_path = self.mktemp()
        with open(self.ca_path, "wb") as f:
            f.write(ca_pem)
        self.start_forward(self.rules.format(tls_port=self.tls_port, users=self.users_file()))

    def users_file(self) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"ann:{hash_password('s3cret', b'salt1234', 1000)}\n")
        return path

    def start_forward(self, rules: str) -> None:
        service = self.start_from_config(f'[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n{rules}\n')
        self.parts = service.parts  # type: ignore[attr-defined]
        self.proxy_port = self.parts.frontends["out"].ports[0].getHost().port

    @defer.inlineCallbacks
    def curl(self, *args: str):  # type: ignore[no-untyped-def]
        out, err, code = yield getProcessOutputAndValue(
            "curl", ["-sS", "--max-time", "10", "-x", f"http://127.0.0.1:{self.proxy_port}", *args], env=dict(os.environ)
        )
        return out.decode(), err.decode(), code


class OpenForwardTests(ForwardTests):
    # The origins are on this host: only an allow rule naming loopback lets the proxy reach them.
    rules = '[frontends.out.forward]\nconnect-ports = [{tls_port}]\nallow-hosts = ["127.0.0.1"]\n'

    @defer.inlineCallbacks
    def test_absolute_form_get(self):  # type: ignore[no-untyped-def]
        target = f"http://127.0.0.1:{self.origin_port}/hello?x=1".encode()
        (response,) = yield self.request(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertEqual((response.status, response.body), (200, b"path=/hello?x=1"))
        self.assertIn(b"rubrisproxy", response.header(b"via"))

    @defer.inlineCallbacks
    def test_curl_forward_get(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.curl(f"http://127.0.0.1:{self.origin_port}/via-curl")
        self.assertEqual((code, out), (0, "path=/via-curl"), err)

    @defer.inlineCallbacks
    def test_connect_then_a_verified_tls_handshake_through_the_tunnel(self):  # type: ignore[no-untyped-def]
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(f"CONNECT 127.0.0.1:{self.tls_port} HTTP/1.1\r\nHost: 127.0.0.1:{self.tls_port}\r\n\r\n".encode())
        yield client.until(lambda data: data.endswith(b"\r\n\r\n"))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200 Connection established"))
        client.received = b""
        client.transport.startTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=self.ca))  # service-identity checks
        client.send(b"GET /inside HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        received = yield client.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 200"), received[:200])
        self.assertTrue(received.endswith(b"path=/inside"))

    @defer.inlineCallbacks
    def test_curl_connect(self):  # type: ignore[no-untyped-def]
        out, err, code = yield self.curl("-p", "--cacert", self.ca_path, f"https://127.0.0.1:{self.tls_port}/tunnelled")
        self.assertEqual((code, out), (0, "path=/tunnelled"), err)

    @defer.inlineCallbacks
    def test_connect_to_a_port_not_allowed_is_403(self):  # type: ignore[no-untyped-def]
        (response,) = yield self.request(f"CONNECT 127.0.0.1:{self.origin_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(response.status, 403)

    @defer.inlineCallbacks
    def test_nothing_listening_is_502_and_a_reverse_style_target_400(self):  # type: ignore[no-untyped-def]
        (refused,) = yield self.request(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(refused.status, 502)
        (origin_form,) = yield self.request(b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(origin_form.status, 400)


class _Counting(Protocol):
    """A raw origin that only counts the connections it gets."""

    connections = 0

    def connectionMade(self) -> None:
        type(self).connections += 1
        self.transport.loseConnection()


class LocalDestinationTests(ProxyTestCase):
    """A forward proxy with no rules at all still refuses this host: loopback, link-local, unspecified,
    a name resolving there, in every spelling, for requests and CONNECT, and so never reaches its own admin API."""

    def setUp(self) -> None:
        _Counting.connections = 0
        self.origin_port = self.start_raw_origin(_Counting)
        service = self.start_from_config('[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                                         f'[frontends.out.forward]\nconnect-ports = [443, {self.origin_port}]\n'
                                         '[admin]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
        self.proxy_port = service.parts.frontends["out"].ports[0].getHost().port  # type: ignore[attr-defined]
        self.admin_port = service.getServiceNamed("admin").ports[0].getHost().port
        self.frontend = service.parts.frontends["out"].frontend  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_the_admin_api_is_not_reachable_through_the_proxy(self):  # type: ignore[no-untyped-def]
        (response,) = yield self.request(
            f"POST http://127.0.0.1:{self.admin_port}/reload HTTP/1.1\r\nHost: 127.0.0.1:{self.admin_port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 0\r\n\r\n".encode())
        self.assertEqual(response.status, 403)
        out, err, code = yield getProcessOutputAndValue(
            "curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{self.proxy_port}",
                     f"http://127.0.0.1:{self.admin_port}/backends"], env=dict(os.environ))
        self.assertEqual(out, b"403", err)

    @defer.inlineCallbacks
    def test_every_spelling_of_this_host_is_403_and_nothing_is_connected(self):  # type: ignore[no-untyped-def]
        port = self.origin_port
        hosts = ["127.0.0.1", "127.0.0.2", "0.0.0.0", "[::]", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]",
                 "[::127.0.0.1]", "169.254.169.254", "[fe80::1]", "localhost", "LocalHost.", "anything.localhost"]
        for host in hosts:
            (response,) = yield self.request(f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(response.status, 403, host)
            (tunnel,) = yield self.request(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(tunnel.status, 403, host)
        for spelling in ("127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "0"):  # never read as an address
            (response,) = yield self.request(f"GET http://{spelling}:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(response.status, 400, spelling)
        self.assertEqual(_Counting.connections, 0)
        self.assertEqual(self.frontend.terminations.get("denied"), 2 * len(hosts))


class _Recording(Protocol):
    """A raw origin that keeps what it is sent."""

    received: list[bytes] = []

    def connectionMade(self) -> None:
        self.received.append(b"")

    def dataReceived(self, data: bytes) -> None:
        self.received[-1] += data


class OwnAddressTests(ProxyTestCase):
    """An address of this host outside the local ranges (a network interface's): the connection shows it, with
    the same address at both ends, and is closed before a byte is sent. Loopback stands in for such an
    address here, taken out of the local ranges."""

    def setUp(self) -> None:
        self.patch(_forward, "LOCAL_NETWORKS", tuple(n for n in _forward.LOCAL_NETWORKS if n.version == 6))
        _Recording.received = []
        self.origin_port = self.start_raw_origin(_Recording)

    def start_forward(self, rules: str) -> None:
        service = self.start_from_config('[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                                         f'[frontends.out.forward]\nconnect-ports = [{self.origin_port}]\n{rules}\n')
        self.proxy_port = service.parts.frontends["out"].ports[0].getHost().port  # type: ignore[attr-defined]
        self.frontend = service.parts.frontends["out"].frontend  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_a_connection_to_this_host_is_closed_unused_unless_named(self):  # type: ignore[no-untyped-def]
        for rules in ("", 'allow-hosts = ["127.0.0.0/8"]'):  # none, or a network wider than the address
            self.start_forward(rules)
            (response,) = yield self.request(
                f"GET http://127.0.0.1:{self.origin_port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(response.status, 403, rules)
            (tunnel,) = yield self.request(f"CONNECT 127.0.0.1:{self.origin_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(tunnel.status, 403, rules)
            self.assertEqual(self.frontend.terminations.get("denied"), 2)
            yield self.poll(lambda: len(_Recording.received) == 2, "both connections made")
            self.assertEqual(_Recording.received, [b"", b""])
            _Recording.received = []
        self.start_forward('allow-hosts = ["127.0.0.1"]')
        client = yield self.connect()
        client.send(f"GET http://127.0.0.1:{self.origin_port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield self.poll(lambda: _Recording.received and _Recording.received[0].startswith(b"GET / HTTP/1.1"), "sent")


class RestrictedForwardTests(ForwardTests):
    rules = ('[frontends.out.forward]\nallow-hosts = ["127.0.0.0/8"]\ndeny-hosts = ["blocked.test", "127.0.0.2/32"]\n'
             'clients = ["127.0.0.0/8"]\nusers-file = "{users}"\n')

    def auth(self, credentials: str) -> bytes:
        return b"Proxy-Authorization: Basic " + base64.b64encode(credentials.encode()) + b"\r\n"

    def get(self, url: str, extra: bytes = b"") -> bytes:
        return f"GET {url} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"

    @defer.inlineCallbacks
    def test_credentials_are_required_checked_and_not_forwarded(self):  # type: ignore[no-untyped-def]
        url = f"http://127.0.0.1:{self.origin_port}/private"
        (missing,) = yield self.request(self.get(url))
        self.assertEqual(missing.status, 407)
        self.assertEqual(missing.header(b"proxy-authenticate"), b'Basic realm="rubrisproxy"')
        (wrong,) = yield self.request(self.get(url, self.auth("ann:nope")))
        self.assertEqual(wrong.status, 407)
        (right,) = yield self.request(self.get(url, self.auth("ann:s3cret")))
        self.assertEqual((right.status, right.body), (200, b"path=/private"))
        (seen,) = yield self.request(self.get(f"http://127.0.0.1:{self.origin_port}/headers", self.auth("ann:s3cret")))
        self.assertNotIn(b"proxy-authorization", seen.body.lower())
        self.assertIn(b"via", seen.body.lower())

    @defer.inlineCallbacks
    def test_only_valid_credentials_are_remembered(self):  # type: ignore[no-untyped-def]
        url = f"http://127.0.0.1:{self.origin_port}/"
        forward = self.parts.frontends["out"].frontend.forward
        for _ in range(2):
            (wrong,) = yield self.request(self.get(url, self.auth("ann:nope")))
            self.assertEqual(wrong.status, 407)
            (stranger,) = yield self.request(self.get(url, self.auth("eve:s3cret")))
            self.assertEqual(stranger.status, 407)
        self.assertEqual(forward.auth.verified, {})
        (right,) = yield self.request(self.get(url, self.auth("ann:s3cret")))
        self.assertEqual(right.status, 200)
        self.assertEqual(len(forward.auth.verified), 1)

    @defer.inlineCallbacks
    def test_a_guessing_client_gets_429_and_a_known_login_still_passes(self):  # type: ignore[no-untyped-def]
        url = f"http://127.0.0.1:{self.origin_port}/"
        (right,) = yield self.request(self.get(url, self.auth("ann:s3cret")))
        self.assertEqual(right.status, 200)
        statuses = []
        for i in range(FREE_FAILURES + 2):
            (guess,) = yield self.request(self.get(url, self.auth(f"ann:guess{i}")))
            statuses.append(guess.status)
        self.assertEqual(statuses, [407] * (FREE_FAILURES + 1) + [429])
        self.assertEqual(guess.header(b"retry-after"), b"1")
        out, err, code = yield self.curl("-o", "/dev/null", "-w", "%{http_code}", "--proxy-user", "ann:guess", url)
        self.assertEqual(out, "429", err)
        (right,) = yield self.request(self.get(url, self.auth("ann:s3cret")))  # known: no hash, no wait
        self.assertEqual((right.status, right.body), (200, b"path=/"))

    @defer.inlineCallbacks
    def test_denied_destinations_are_403(self):  # type: ignore[no-untyped-def]
        for url in ("http://blocked.test/", "http://127.0.0.2:80/", "http://10.1.2.3/", "http://[::ffff:127.0.0.2]/"):
            (response,) = yield self.request(self.get(url, self.auth("ann:s3cret")))
            self.assertEqual(response.status, 403, url)


class DestinationTests(SynchronousTestCase):
    """What a forward-proxy request names as its destination, and the access rules that judge it."""

    def where(self, target: str, method: bytes = b"GET"):  # type: ignore[no-untyped-def]
        return destination(RequestHead(method=method, target=target.encode(), version=b"1.1", headers=[]))

    def test_hosts_are_canonical(self) -> None:
        self.assertEqual(self.where("http://Example.COM./x").host, "example.com")
        self.assertEqual(self.where("http://[0:0::1]:8080/").host, "::1")
        self.assertEqual(self.where("[::1]:443", b"CONNECT").port, 443)

    def test_what_is_no_host_is_400(self) -> None:
        for target in ("http://user:pw@example.com/", "http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/",
                       "http://010.0.0.1/", "http://exa mple.com/", "http://-bad.example/", "http://::1/",
                       "http://[::1%eth0]/", "http://example.com:0/", "http://example.com:99999/"):
            with self.assertRaises(HTTPError, msg=target) as caught:
                self.where(target)
            self.assertEqual(caught.exception.status, 400)

    def proxy(self, **rules: tuple[str, ...]) -> ForwardProxy:
        return ForwardProxy(ForwardConfig(**rules), reactor)  # type: ignore[arg-type]

    def test_bare_addresses_are_networks_and_mapped_addresses_are_seen_through(self) -> None:
        proxy = self.proxy(deny_hosts=("192.0.2.2", "10.0.0.0/8"))
        for target in ("http://192.0.2.2/", "http://[::ffff:192.0.2.2]/", "http://[::ffff:10.1.2.3]/"):
            where = self.where(target)
            with self.assertRaises(HTTPError, msg=target):
                proxy.check_address(where, where.host)
        allowed = self.where("http://192.0.2.3/")
        proxy.check_address(allowed, allowed.host)

    def test_network_rules_need_the_address_name_rules_do_not(self) -> None:
        by_name = self.proxy(allow_hosts=(".example.com",))
        self.assertFalse(by_name.needs_address(self.where("http://www.example.com/")))
        with self.assertRaises(HTTPError):
            by_name.check_address(self.where("http://elsewhere.test/"), None)
        by_network = self.proxy(allow_hosts=(".example.com", "10.0.0.0/8"))
        self.assertFalse(by_network.needs_address(self.where("http://www.example.com/")))
        self.assertTrue(by_network.needs_address(self.where("http://elsewhere.test/")))
        self.assertFalse(by_network.needs_address(self.where("http://10.1.1.1/")))
        self.assertTrue(self.proxy(deny_hosts=("10.0.0.0/8",)).needs_address(self.where("http://www.example.com/")))


    def test_a_local_destination_needs_an_allow_rule_that_names_it(self) -> None:
        def refused(proxy: ForwardProxy, target: str, address: str) -> bool:
            where = self.where(target)
            try:
                proxy.check_name(where)
                proxy.check_address(where, address)
            except HTTPError as error:
                self.assertEqual(error.status, 403)
                return True
            return False

        wide = self.proxy(allow_hosts=("0.0.0.0/0", "::/0", ".example.com", "0.0.0.0/1"))
        for target, address in [("http://127.0.0.1/", "127.0.0.1"), ("http://[::1]/", "::1"),
                                ("http://www.example.com/", "127.0.0.1"), ("http://www.example.com/", "::ffff:127.0.0.1"),
                                ("http://0.0.0.0/", "0.0.0.0"), ("http://[::]/", "::"), ("http://localhost/", "127.0.0.1"),
                                ("http://169.254.169.254/", "169.254.169.254"), ("http://[fe80::1]/", "fe80::1")]:
            self.assertTrue(refused(wide, target, address), (target, address))
        self.assertFalse(refused(wide, "http://www.example.com/", "192.0.2.7"))
        named = self.proxy(allow_hosts=("127.0.0.0/8", "::1", "localhost", "169.254.169.254"))
        for target, address in [("http://127.0.0.5/", "127.0.0.5"), ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
                                ("http://[::1]/", "::1"), ("http://localhost/", "::1"), ("http://other.test/", "127.0.0.1"),
                                ("http://169.254.169.254/", "169.254.169.254")]:
            self.assertFalse(refused(named, target, address), (target, address))
        for target, address in [("http://0.0.0.0/", "0.0.0.0"), ("http://[::]/", "::"), ("http://a.localhost/", "127.0.0.1"),
                                ("http://169.254.0.1/", "169.254.0.1")]:
            self.assertTrue(refused(named, target, address), (target, address))


class OpenRelayWarningTests(SynchronousTestCase):
    """A forward listener that anyone off this machine may use is named in a warning at start."""

    def warnings(self, listen: str, rules: str = "") -> list[str]:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'[frontends.out]\nmode = "forward"\nlisten = ["{listen}"]\n[frontends.out.forward]\n{rules}\n')
        events: list[dict] = []  # type: ignore[type-arg]
        globalLogPublisher.addObserver(events.append)
        try:
            build_service(load_config(CommandLine(config_path=path, access_log="off")), reactor)  # not started
        finally:
            globalLogPublisher.removeObserver(events.append)
        return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]

    def test_an_open_forward_listener_is_warned_of(self) -> None:
        key, certificate = CertificateAuthority().issue("proxy")
        pem = os.path.abspath(self.mktemp())
        with open(pem, "wb") as f:
            f.write(key + certificate)
        for listen in ("tcp:3128", "tcp:3128:interface=0.0.0.0", "tcp6:3128", f"ssl:3128:interface=10.0.0.1:privateKey={pem}"):
            (warning,) = self.warnings(listen)
            self.assertIn("frontend out: a forward proxy open to any client on " + listen, warning)
        for listen, rules in (("tcp:3128:interface=127.0.0.1", ""), ("tcp:3128", 'clients = ["10.0.0.0/8"]'),
                              ("unix:/tmp/rubrisproxy-test.sock", "")):
            self.assertEqual(self.warnings(listen, rules), [], listen)


class PasswdTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_passwd_writes_a_line_the_users_file_takes(self):  # type: ignore[no-untyped-def]
        from twisted.internet.protocol import ProcessProtocol

        from rubrisproxy.frontend._auth import check_password

        class Feed(ProcessProtocol):
            def __init__(self) -> None:
                self.out = b""
                self.done: defer.Deferred[bytes] = defer.Deferred()

            def connectionMade(self) -> None:
                self.transport.write(b"hunter2\n")
                self.transport.closeStdin()

            def outReceived(self, data: bytes) -> None:
                self.out += data

            def processEnded(self, reason: object) -> None:
                self.done.callback(self.out)

        feed = Feed()
        reactor.spawnProcess(feed, sys.executable, [sys.executable, "-m", "rubrisproxy.ctl", "passwd", "bob"],
                             env={**os.environ, "PYTHONPATH": ROOT})
        line = (yield feed.done).decode().strip()
        user, _, stored = line.partition(":")
        self.assertEqual(user, "bob")
        self.assertTrue(check_password("hunter2", stored))
        self.assertFalse(check_password("hunter3", stored))


class ParentTests(ProxyTestCase):
    """rubrisproxy -> rubrisproxy (the parent) -> origin, for requests and CONNECT tunnels."""

    def setUp(self) -> None:
        self.origin_port = self.start_web_origin()
        ca_pem, self.tls_port = listen_tls_echo(self)
        self.ca = ssl.Certificate.loadPEM(ca_pem)
        self.parent = self.start(f'[frontends.out.forward]\nconnect-ports = [{self.tls_port}]\nallow-hosts = ["127.0.0.1", "::1"]\n')

    def start(self, text: str, parent_port: int | None = None):  # type: ignore[no-untyped-def]
        parents = f'[backends.parents]\nservers = ["127.0.0.1:{parent_port}"]\n' if parent_port is not None else ""
        service = self.start_from_config(f'[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n{text}\n'
                                         + parents)
        return service.parts  # type: ignore[attr-defined]

    def child(self, rules: str = "", parent_port: int | None = None):  # type: ignore[no-untyped-def]
        port = parent_port or self.parent.frontends["out"].ports[0].getHost().port
        if "allow-hosts" not in rules:
            rules += 'allow-hosts = ["127.0.0.1", "::1"]\n'  # the origins are on this host
        parts = self.start(f'[frontends.out.forward]\nparents = "parents"\nconnect-ports = [{self.tls_port}]\n{rules}', port)
        self.proxy_port = parts.frontends["out"].ports[0].getHost().port
        return parts

    def parent_requests(self) -> int:
        return self.parent.frontends["out"].frontend.requests  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def test_a_request_goes_through_the_parent(self):  # type: ignore[no-untyped-def]
        self.child()
        url = f"http://127.0.0.1:{self.origin_port}/headers".encode()
        (response,) = yield self.request(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body.lower().count(b"via:"), 2)  # one each proxy
        self.assertEqual(self.parent_requests(), 1)

    @defer.inlineCallbacks
    def test_connect_through_the_parent_with_tls_inside(self):  # type: ignore[no-untyped-def]
        self.child()
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(f"CONNECT 127.0.0.1:{self.tls_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield client.until(lambda data: data.endswith(b"\r\n\r\n"))
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200"))
        client.received = b""
        client.transport.startTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=self.ca))
        client.send(b"GET /chained HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        received = yield client.closed
        self.assertTrue(received.endswith(b"path=/chained"))
        self.assertEqual(self.parent_requests(), 1)

    @defer.inlineCallbacks
    def test_access_rules_hold_on_the_way_to_the_parent(self):  # type: ignore[no-untyped-def]
        self.child('deny-hosts = ["127.0.0.1"]\n')
        for target in (f"127.0.0.1:{self.origin_port}", f"localhost:{self.origin_port}"):
            (denied,) = yield self.request(f"GET http://{target}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(denied.status, 403, target)
        self.child('allow-hosts = ["10.0.0.0/8"]\n')
        (outside,) = yield self.request(f"CONNECT localhost:{self.tls_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(outside.status, 403)
        self.assertEqual(self.parent_requests(), 0)

    @defer.inlineCallbacks
    def test_this_host_is_refused_before_the_parent_is_asked(self):  # type: ignore[no-untyped-def]
        self.child("allow-hosts = []\n")  # no rules: an open relay, but not to this host
        for host in ("127.0.0.1", "localhost", "[::]"):
            (denied,) = yield self.request(f"GET http://{host}:{self.origin_port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(denied.status, 403, host)
            (tunnel,) = yield self.request(f"CONNECT {host}:{self.tls_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(tunnel.status, 403, host)
        self.assertEqual(self.parent_requests(), 0)

    @defer.inlineCallbacks
    def test_connect_to_an_ipv6_literal_through_the_parent_is_bracketed(self):  # type: ignore[no-untyped-def]
        self.child()
        (response,) = yield self.request(f"CONNECT [::1]:{self.tls_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # The parent parsed the bracketed authority and tried ::1 (where nothing listens): 502, not 400.
        self.assertEqual(response.status, 502)
        self.assertEqual(self.parent_requests(), 1)

    @defer.inlineCallbacks
    def test_direct_destinations_skip_the_parent(self):  # type: ignore[no-untyped-def]
        self.child('direct = ["127.0.0.1/32"]\n')
        (response,) = yield self.request(f"GET http://127.0.0.1:{self.origin_port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(response.status, 200)
        self.assertEqual(self.parent_requests(), 0)

    @defer.inlineCallbacks
    def test_no_parent_up_is_503_unless_direct_is_allowed(self):  # type: ignore[no-untyped-def]
        request = f"GET http://127.0.0.1:{self.origin_port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        strict = self.child(parent_port=1)
        strict.backends["parents"].servers[0].set_up(False)
        (refused,) = yield self.request(request)
        self.assertEqual(refused.status, 503)
        lenient = self.child("never-direct = false\n", parent_port=1)
        lenient.backends["parents"].servers[0].set_up(False)
        (direct,) = yield self.request(request)
        self.assertEqual(direct.status, 200)
