"""TLS listeners over loopback, with clients nobody here wrote: curl, openssl s_client, Chromium, and TLS
clients on Twisted: ALPN, SNI, the version floor, certificates re-read on reload, and bad key files."""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest
from zope.interface import implementer

from rubrisproxy.checks import check_config
from rubrisproxy.config import CertificateFiles, CommandLine, ConfigError, ListenerTLSConfig, load_config
from rubrisproxy.frontend import connection_factory
from rubrisproxy.listening import ListeningService, ListenSettings
from rubrisproxy.reload import Reloader, ReloadOnHangup
from rubrisproxy.service import build_service
from rubrisproxy.tls import build_contexts, listener

from .browser import chromium_argv, spawn, wait_exit
from .helpers import ProxyTestCase, RawClient, get
from .test_plugin import run_twistd
from .test_ws_interop import InteropTests
from .tlscerts import CertificateAuthority, spki_hash

CHILD_GUARD = 30.0  # seconds for curl, openssl or Chromium to finish

CONFIG = """
[shutdown]
grace = "1s"

[frontends.web]
listen = [{listen}]
backend = "app"

{tls}

[backends.app]
servers = ["127.0.0.1:{origin}"]
"""


@implementer(IOpenSSLClientConnectionCreator)
class _SNIOnly:
    """A TLS client that sends a server name (for a DNS name) and checks nothing."""

    def __init__(self, name: str) -> None:
        self.name = name

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N802
        connection = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        if not self.name[0].isdigit():
            connection.set_tlsext_host_name(self.name.encode())
        connection.set_connect_state()
        return connection


class TLSListenerCase(ProxyTestCase):
    """A proxy built from a configuration file whose frontend serves TLS, in front of the echo origin."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.ca_file = self.write_file(self.ca.pem)
        self.origin = self.start_web_origin()
        self.path = self.mktemp()

    def write_file(self, data: bytes, path: str | None = None) -> str:
        path = os.path.abspath(path or self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def issue(self, common_name: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[str, str]:
        """Key and certificate files of a new certificate from the test CA."""
        key_pem, cert_pem = self.ca.issue(common_name, dns, ips)
        return self.write_file(key_pem), self.write_file(cert_pem)

    def write_config(self, tls: str | None, listen: str = '"tcp:0:interface=127.0.0.1"', more: str = "") -> None:
        """The proxy's configuration file: ``tls`` is the body of the frontend's [tls] table (None: no table);
        ``more`` is appended (further tables)."""
        table = "" if tls is None else f"[frontends.web.tls]\n{tls}"
        with open(self.path, "w") as f:
            f.write(CONFIG.format(listen=listen, tls=table, origin=self.origin) + more)

    def start(self, tls: str | None, listen: str = '"tcp:0:interface=127.0.0.1"', more: str = "") -> int:
        """Write the configuration, start the proxy it describes; its frontend's port."""
        self.write_config(tls, listen, more)
        self.command_line = CommandLine(config_path=self.path, access_log="off")
        self.service = build_service(load_config(self.command_line), reactor, self.command_line)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.running = self.service.parts.frontends["web"]
        return self.running.ports[0].getHost().port  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def tls_client(self, port: int, name: str = "127.0.0.1", protocols: tuple[bytes, ...] | None = None):  # type: ignore[no-untyped-def]
        """A connected client trusting the test CA and checking ``name``; it sends SNI for a DNS name."""
        options = ssl.optionsForClientTLS(name, trustRoot=ssl.Certificate.loadPEM(self.ca.pem),
                                          acceptableProtocols=protocols)
        client = RawClient()
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", port, options), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        return client

    @defer.inlineCallbacks
    def served_name(self, port: int, name: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
        """The common name of the certificate served to a client sending SNI ``name`` (none for an address), after
        a request through it; the client does not check the certificate, so a default one is seen too."""
        client = RawClient()
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", port, _SNIOnly(name)), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(get(b"/which"))
        (response,) = yield client.responses(1)
        self.assertEqual(response.status, 200)
        peer = client.transport.getPeerCertificate()
        client.transport.abortConnection()
        return peer.get_subject().commonName

    @defer.inlineCallbacks
    def run_child(self, name: str, argv: list[str]):  # type: ignore[no-untyped-def]
        if shutil.which(argv[0]) is None:
            raise SkipTest(f"no {argv[0]} binary")
        child = yield defer.Deferred.fromCoroutine(wait_exit(self, spawn(self, name, argv), CHILD_GUARD))
        return child


class ClosingTests(TLSListenerCase):
    @defer.inlineCallbacks
    def test_a_silent_connection_is_closed_after_http_request(self):  # type: ignore[no-untyped-def]
        """A TLS connection closes (close_notify, then TCP) once the proxy closes it: no producer holds it open."""
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]',
                          more='\n[timeouts]\nhttp-request = "200ms"\nclient = "20s"\n')
        client = yield self.tls_client(port)
        started = reactor.seconds()
        yield client.closed.addTimeout(10, reactor)
        self.assertLess(reactor.seconds() - started, 5)  # http-request, not the 20 s client timeout after it

    @defer.inlineCallbacks
    def test_connection_close_response_ends_the_tls_connection(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]', more='\n[timeouts]\nclient = "20s"\n')
        client = yield self.tls_client(port)
        client.send(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = yield client.closed.addTimeout(10, reactor)
        self.assertIn(b"path=/bye", received)


#: A frontend that does not speak HTTP/2, appended to the configuration: its listeners offer http/1.1 only.
NO_HTTP2 = "\n[frontends.web.http2]\nenabled = false\n"


class ALPNTests(TLSListenerCase):
    @defer.inlineCallbacks
    def test_curl_with_its_default_alpn(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("web.test", dns=("web.test",))
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        child = yield self.run_child("curl", [
            "curl", "-sS", "-v", "--cacert", self.ca_file, "--resolve", f"web.test:{port}:127.0.0.1",
            f"https://web.test:{port}/over-curl"])
        self.assertEqual(child.exit_code, 0, child.describe())
        self.assertEqual(child.out, b"path=/over-curl")
        self.assertIn(b"ALPN: server accepted h2", child.err)
        self.assertIn(b"< HTTP/2 200", child.err)

    @defer.inlineCallbacks
    def test_curl_gets_http1_from_a_frontend_without_http2(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("web.test", dns=("web.test",))
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]', more=NO_HTTP2)
        child = yield self.run_child("curl", [
            "curl", "-sS", "-v", "--cacert", self.ca_file, "--resolve", f"web.test:{port}:127.0.0.1",
            f"https://web.test:{port}/over-curl"])
        self.assertEqual(child.exit_code, 0, child.describe())
        self.assertEqual(child.out, b"path=/over-curl")
        self.assertIn(b"ALPN: server accepted http/1.1", child.err)

    @defer.inlineCallbacks
    def test_ssl_endpoint_string_negotiates_alpn(self):  # type: ignore[no-untyped-def]
        """Before: every client offering ALPN got 'tlsv1 alert internal error' from an ssl: listener."""
        key, cert = self.issue("127.0.0.1")
        port = self.start(None, listen=f'"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"')
        child = yield self.run_child("curl", ["curl", "-sS", "-v", "--cacert", self.ca_file,
                                              f"https://127.0.0.1:{port}/ssl-string"])
        self.assertEqual(child.exit_code, 0, child.describe())
        self.assertEqual(child.out, b"path=/ssl-string")
        self.assertIn(b"ALPN: server accepted h2", child.err)

    @defer.inlineCallbacks
    def test_an_ssl_endpoint_string_of_a_frontend_without_http2_offers_http1_only(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("127.0.0.1")
        port = self.start(None, listen=f'"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"', more=NO_HTTP2)
        child = yield self.run_child("curl", ["curl", "-sS", "-v", "--cacert", self.ca_file,
                                              f"https://127.0.0.1:{port}/ssl-string"])
        self.assertEqual(child.exit_code, 0, child.describe())
        self.assertEqual(child.out, b"path=/ssl-string")
        self.assertIn(b"ALPN: server accepted http/1.1", child.err)

    @defer.inlineCallbacks
    def test_a_client_offering_only_h2_gets_no_alpn_answer_and_speaks_http1(self):  # type: ignore[no-untyped-def]
        """From a frontend that does not speak HTTP/2."""
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]', more=NO_HTTP2)
        client = yield self.tls_client(port, protocols=(b"h2",))
        client.send(get(b"/h2-only"))
        (response,) = yield client.responses(1)
        self.assertEqual((response.status, response.body), (200, b"path=/h2-only"))
        self.assertIsNone(client.transport.negotiatedProtocol)

    @defer.inlineCallbacks
    def test_alpn_answers_http1_to_a_client_offering_it_after_h2(self):  # type: ignore[no-untyped-def]
        """From a frontend that does not speak HTTP/2."""
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]', more=NO_HTTP2)
        client = yield self.tls_client(port, protocols=(b"h2", b"http/1.1"))
        client.send(get(b"/"))
        yield client.responses(1)
        self.assertEqual(client.transport.negotiatedProtocol, b"http/1.1")

    @defer.inlineCallbacks
    def test_alpn_answers_h2_to_a_client_offering_it_first(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        client = yield self.tls_client(port, protocols=(b"http/1.1", b"h2"))
        client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        yield self.poll(lambda: client.received, "the proxy's SETTINGS")
        self.assertEqual(client.transport.negotiatedProtocol, b"h2")
        self.assertEqual(client.received[3:4], b"\x04")  # a SETTINGS frame: the proxy speaks HTTP/2

    def test_a_frontend_without_http2_may_not_offer_h2(self) -> None:
        key, cert = self.issue("x")
        self.write_config(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]\nalpn = ["h2", "http/1.1"]',
                          more=NO_HTTP2)
        error = self.assertRaises(ConfigError, load_config, CommandLine(config_path=self.path))
        self.assertEqual(error.key, "frontends.web.tls.alpn")


class SNITests(TLSListenerCase):
    def start_three(self) -> int:
        """A default certificate, one for a.test, and one for *.b.test."""
        default_key, default_cert = self.issue("default", dns=("default.test",))
        a_key, a_cert = self.issue("a", dns=("a.test",), ips=())
        b_key, b_cert = self.issue("b", dns=("*.b.test",), ips=())
        return self.start(
            f'certificates = [{{ cert = "{default_cert}", key = "{default_key}" }},'
            f' {{ cert = "{a_cert}", key = "{a_key}" }}, {{ cert = "{b_cert}", key = "{b_key}" }}]')

    @defer.inlineCallbacks
    def test_sni_picks_the_certificate_and_unknown_names_get_the_default(self):  # type: ignore[no-untyped-def]
        port = self.start_three()
        self.assertEqual((yield self.served_name(port, "a.test")), "a")
        self.assertEqual((yield self.served_name(port, "x.b.test")), "b")
        self.assertEqual((yield self.served_name(port, "default.test")), "default")
        self.assertEqual((yield self.served_name(port, "127.0.0.1")), "default")  # no SNI for an address

    @defer.inlineCallbacks
    def test_openssl_s_client_sees_the_certificate_of_its_servername(self):  # type: ignore[no-untyped-def]
        port = self.start_three()
        child = yield self.run_child("openssl", [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.test", "-CAfile", self.ca_file,
            "-verify_hostname", "a.test", "-verify_return_error", "-brief"])
        self.assertEqual(child.exit_code, 0, child.describe())
        self.assertIn(b"CN = a", child.err)
        self.assertIn(b"Verification: OK", child.err)

    @defer.inlineCallbacks
    def test_a_directory_of_certificates(self):  # type: ignore[no-untyped-def]
        directory = self.mktemp()
        os.mkdir(directory)
        a_key, a_cert = self.ca.issue("a", ("a.test",))
        self.write_file(a_cert + a_key, os.path.join(directory, "a.pem"))  # certificate and key in one file
        c_key, c_cert = self.ca.issue("c", ("c.test",))
        self.write_file(c_cert, os.path.join(directory, "c.crt"))
        self.write_file(c_key, os.path.join(directory, "c.key"))
        self.write_file(b"not a certificate", os.path.join(directory, "README"))
        port = self.start(f'directory = "{directory}"')
        self.assertEqual((yield self.served_name(port, "c.test")), "c")
        self.assertEqual((yield self.served_name(port, "other.test")), "a")  # the default: the first file


class VersionTests(TLSListenerCase):
    @defer.inlineCallbacks
    def test_tls_1_1_is_refused_and_1_2_accepted(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", self.ca_file,
                "-cipher", "DEFAULT@SECLEVEL=0"]
        old = yield self.run_child("openssl -tls1_1", [*base, "-tls1_1"])
        self.assertNotEqual(old.exit_code, 0, old.describe())
        self.assertIn(b"alert protocol version", old.err)  # the proxy's alert: the client was willing
        current = yield self.run_child("openssl -tls1_2", [*base, "-tls1_2", "-brief"])
        self.assertEqual(current.exit_code, 0, current.describe())
        self.assertIn(b"Protocol version: TLSv1.2", current.err)

    @defer.inlineCallbacks
    def test_min_version_1_3_refuses_1_2(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]\nmin-version = "1.3"')
        child = yield self.run_child("openssl -tls1_2", [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", self.ca_file, "-tls1_2"])
        self.assertNotEqual(child.exit_code, 0, child.describe())
        self.assertIn(b"alert protocol version", child.err)


class ReloadTests(TLSListenerCase):
    def reload(self) -> list[str]:
        return Reloader(self.service.parts, self.command_line).reload()

    @defer.inlineCallbacks
    def test_reload_serves_a_replaced_certificate_to_new_connections(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("first")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        before = yield self.tls_client(port)
        before.send(get(b"/before"))
        yield before.responses(1)
        self.assertEqual(before.transport.getPeerCertificate().get_subject().commonName, "first")
        key_pem, cert_pem = self.ca.issue("second", ips=("127.0.0.1",))
        self.write_file(key_pem, key)
        self.write_file(cert_pem, cert)
        listening = self.running.ports[0]
        changes = self.reload()
        self.assertIn("frontend web: certificates re-read", changes)
        self.assertEqual((yield self.served_name(port)), "second")
        self.assertEqual(self.running.ports, [listening])  # the same listener
        before.send(get(b"/still-open"))  # a connection from before keeps going
        (_, response) = yield before.responses(2)
        self.assertEqual(response.body, b"path=/still-open")

    @defer.inlineCallbacks
    def test_sighup_rereads_the_certificates(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("first")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        key_pem, cert_pem = self.ca.issue("second", ips=("127.0.0.1",))
        self.write_file(key_pem, key)
        self.write_file(cert_pem, cert)
        said: list[str] = []
        observer = lambda event: said.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        os.kill(os.getpid(), signal.SIGHUP)
        yield self.poll(lambda: any("certificates re-read" in line for line in said), "the reload")
        self.assertEqual((yield self.served_name(port)), "second")

    @defer.inlineCallbacks
    def test_a_bad_key_on_reload_changes_nothing_and_says_so_in_one_line(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("first")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        key_pem, cert_pem = self.ca.issue("second", ips=("127.0.0.1",))
        self.write_file(cert_pem, cert)
        self.write_file(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n", key)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        ReloadOnHangup(Reloader(self.service.parts, self.command_line), reactor).reload()
        errors = [formatEvent(e) for e in events if e.get("log_level") is not None and e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1, errors)
        self.assertTrue(errors[0].startswith(
            "reload refused, nothing changed: frontends.web.tls.certificates[0].key: "), errors[0])
        self.assertNotIn("\n", errors[0])
        self.assertEqual((yield self.served_name(port)), "first")

    @defer.inlineCallbacks
    def test_reload_reads_new_files_in_the_directory(self):  # type: ignore[no-untyped-def]
        directory = self.mktemp()
        os.mkdir(directory)
        a_key, a_cert = self.ca.issue("a", ("a.test",))
        self.write_file(a_cert + a_key, os.path.join(directory, "a.pem"))
        port = self.start(f'directory = "{directory}"')
        self.assertEqual((yield self.served_name(port, "d.test")), "a")  # the default: the only one
        d_key, d_cert = self.ca.issue("d", ("d.test",))
        self.write_file(d_cert + d_key, os.path.join(directory, "d.pem"))
        self.reload()
        self.assertEqual((yield self.served_name(port, "d.test")), "d")


    @defer.inlineCallbacks
    def test_reload_rereads_the_files_of_an_ssl_string(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("first")
        port = self.start(None, listen=f'"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"')
        key_pem, cert_pem = self.ca.issue("second", ips=("127.0.0.1",))
        self.write_file(key_pem, key)
        self.write_file(cert_pem, cert)
        self.assertIn("frontend web: certificates re-read", self.reload())
        self.assertEqual((yield self.served_name(port)), "second")

    @defer.inlineCallbacks
    def test_adding_a_tls_table_waits_for_a_restart(self):  # type: ignore[no-untyped-def]
        port = self.start(None)
        key, cert = self.issue("x")
        self.write_config(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        self.assertIn("frontend web: turning TLS on or off takes effect at the next restart", self.reload())
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(get(b"/still-plain"))
        (response,) = yield client.responses(1)
        self.assertEqual(response.body, b"path=/still-plain")


class BadKeyTests(TLSListenerCase):
    def load(self, tls: str | None, listen: str = '"tcp:0:interface=127.0.0.1"') -> ConfigError:
        self.write_config(tls, listen)
        return self.assertRaises(ConfigError, lambda: check_config(load_config(CommandLine(config_path=self.path))))

    def test_missing_key_file_names_the_key(self):
        _, cert = self.issue("x")
        error = self.load(f'certificates = [{{ cert = "{cert}", key = "/nonexistent/x.key" }}]')
        self.assertEqual(str(error),
                         "frontends.web.tls.certificates[0].key: cannot read /nonexistent/x.key: No such file or directory")

    def test_a_key_of_another_certificate(self):
        key, _ = self.issue("one")
        _, cert = self.issue("two")
        error = self.load(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        self.assertEqual(error.key, "frontends.web.tls.certificates[0].key")
        self.assertIn("is not the key of the certificate", error.problem)

    def test_not_a_key(self):
        _, cert = self.issue("x")
        error = self.load(f'certificates = [{{ cert = "{cert}", key = "{cert}" }}]')  # a certificate, no key
        self.assertEqual(error.key, "frontends.web.tls.certificates[0].key")
        self.assertIn("holds no usable PEM private key", error.problem)

    def test_not_a_certificate(self):
        key, _ = self.issue("x")
        error = self.load(f'certificates = [{{ cert = "{key}", key = "{key}" }}]')
        self.assertEqual(str(error), f"frontends.web.tls.certificates[0].cert: {key} holds no PEM certificate")

    def test_ssl_string_with_a_missing_private_key(self):
        _, cert = self.issue("x")
        error = self.load(None, listen=f'"tcp:0:interface=127.0.0.1", "ssl:0:privateKey=/nonexistent/k:certKey={cert}"')
        self.assertEqual(str(error), "frontends.web.listen[1].privateKey: cannot read /nonexistent/k: No such file or directory")

    def test_settings(self):
        key, cert = self.issue("x")
        pair = f'certificates = [{{ cert = "{cert}", key = "{key}" }}]'
        for extra, where in [
            ('min-version = "1.1"', "frontends.web.tls.min-version"),
            ('alpn = ["spdy/3"]', "frontends.web.tls.alpn"),
            ('ciphers = "NO-SUCH-CIPHER"', "frontends.web.tls.ciphers"),
            ("bogus = 1", "frontends.web.tls.bogus"),
        ]:
            self.assertEqual(self.load(f"{pair}\n{extra}").key, where, extra)
        self.assertEqual(self.load("").key, "frontends.web.tls.certificates")  # nothing to serve
        self.assertEqual(self.load('certificates = ["a.pem"]').key, "frontends.web.tls.certificates[0]")
        self.assertEqual(self.load(f'directory = "{self.mktemp()}"').key, "frontends.web.tls.directory")

    @defer.inlineCallbacks
    def test_twistd_exits_non_zero_with_the_one_line(self):  # type: ignore[no-untyped-def]
        _, cert = self.issue("x")
        self.write_config(f'certificates = [{{ cert = "{cert}", key = "/nonexistent/x.key" }}]')
        process = run_twistd("--config", os.path.abspath(self.path))
        code = yield process.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"configuration error: frontends.web.tls.certificates[0].key: cannot read /nonexistent/x.key: "
                      b"No such file or directory\n", process.output)
        self.assertNotIn(b"Traceback", process.output)


class SSLStringTests(TLSListenerCase):
    """How ``ssl:`` strings become a plain endpoint and TLS settings."""

    def test_options_and_escapes(self):
        found = listener("frontends.web.listen[0]", r"ssl:8443:interface=\:\:1:privateKey=/k\:1:certKey=/c:backlog=9", None)
        self.assertEqual(found.endpoint, r"tcp:8443:interface=\:\:1:backlog=9")
        self.assertEqual(found.tls, ListenerTLSConfig(certificates=(CertificateFiles(cert="/c", key="/k:1"),)))

    def test_unsupported_option_names_the_endpoint(self):
        error = self.assertRaises(ConfigError, listener, "frontends.web.listen[0]", "ssl:443:sslmethod=TLSv1_METHOD", None)
        self.assertEqual(error.key, "frontends.web.listen[0]")

    def test_other_endpoints_take_the_frontend_settings(self):
        settings = ListenerTLSConfig(certificates=(CertificateFiles(cert="/c", key="/k"),))
        found = listener("frontends.web", "tcp:443", settings)
        self.assertEqual((found.endpoint, found.tls), ("tcp:443", settings))


class ContextTests(TLSListenerCase):
    def test_contexts_refuse_below_the_minimum(self):
        key, cert = self.issue("x", dns=("x.test",))
        contexts = build_contexts("t", ListenerTLSConfig(certificates=(CertificateFiles(cert=cert, key=key),)))
        client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client_context.set_max_proto_version(SSL.TLS1_1_VERSION)
        client_context.set_cipher_list(b"DEFAULT@SECLEVEL=0")
        server, client = SSL.Connection(contexts.default), SSL.Connection(client_context)
        server.set_accept_state()
        client.set_connect_state()
        failures = []
        for _ in range(4):
            for one, other in ((client, server), (server, client)):
                try:
                    one.do_handshake()
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    failures.append(str(e))
                try:
                    other.bio_write(one.bio_read(65536))
                except SSL.WantReadError:
                    pass
        self.assertTrue(any("unsupported protocol" in f for f in failures), failures)

    def test_for_name(self):
        a_key, a_cert = self.issue("a", dns=("a.test", "*.w.test"))
        z_key, z_cert = self.issue("z", dns=("z.test",))
        contexts = build_contexts("t", ListenerTLSConfig(certificates=(
            CertificateFiles(cert=z_cert, key=z_key), CertificateFiles(cert=a_cert, key=a_key))))
        self.assertIs(contexts.for_name("A.TEST."), contexts.for_name("x.w.test"))
        self.assertIsNot(contexts.for_name("a.test"), contexts.default)
        self.assertIs(contexts.for_name("y.x.w.test"), contexts.default)  # a wildcard covers one label
        self.assertIs(contexts.for_name("nowhere"), contexts.default)


class ChromiumTests(TLSListenerCase):
    @defer.inlineCallbacks
    def test_chromium_loads_a_page_over_https(self):  # type: ignore[no-untyped-def]
        key_pem, cert_pem = self.ca.issue("127.0.0.1", ips=("127.0.0.1",))
        key, cert = self.write_file(key_pem), self.write_file(cert_pem)
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        argv, env = chromium_argv(self, f"--ignore-certificate-errors-spki-list={spki_hash(cert_pem)}",
                                  "--dump-dom", f"https://127.0.0.1:{port}/from-chromium")
        child = yield defer.Deferred.fromCoroutine(wait_exit(self, spawn(self, "chromium", argv, env=env), CHILD_GUARD))
        self.assertIn(b"path=/from-chromium", child.out, child.describe())


class WSSInteropTests(InteropTests):
    """Node ws, Python websockets and Chromium over wss://, through a TLS listener of the proxy."""

    def start(self, echo_close: bool = True) -> Any:
        backend = super().start(echo_close)
        case: Any = self
        authority = CertificateAuthority()
        key_pem, cert_pem = authority.issue("127.0.0.1", ips=("127.0.0.1",))
        files = {}
        for name, data in (("ca", authority.pem), ("key", key_pem), ("cert", cert_pem)):
            files[name] = os.path.abspath(case.mktemp())
            with open(files[name], "wb") as f:
                f.write(data)
        settings = ListenerTLSConfig(certificates=(CertificateFiles(cert=files["cert"], key=files["key"]),))
        listening = ListeningService(reactor, "frontend web", connection_factory(self.frontend),
                                     ListenSettings(("tcp:0:interface=127.0.0.1",), settings, "frontends.web"))
        listening.startService()
        case.addCleanup(listening.stopService)
        case.proxy_port = listening.ports[0].getHost().port
        # Python's ssl module (websockets) reads SSL_CERT_FILE; Node adds NODE_EXTRA_CA_CERTS to its own store.
        self.client_env = dict(os.environ, SSL_CERT_FILE=files["ca"], NODE_EXTRA_CA_CERTS=files["ca"])
        self.browser_flags = (f"--ignore-certificate-errors-spki-list={spki_hash(cert_pem)}",)
        return backend

    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.proxy_port}/chat"  # type: ignore[attr-defined]


class SessionWSSTests(WSSInteropTests, ProxyTestCase):
    mode = "session"


class TunnelWSSTests(WSSInteropTests, ProxyTestCase):
    mode = "tunnel"


class HostileTests(TLSListenerCase):
    @defer.inlineCallbacks
    def test_plain_http_to_a_tls_listener_is_closed_and_logs_no_error(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("127.0.0.1")
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(get(b"/plain"))
        received = yield client.closed
        self.assertNotIn(b"HTTP/1.1", received)  # a TLS alert at most, never an HTTP answer
        yield self.poll(lambda: not self.running.frontend.connections, "the connection was forgotten")
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_a_server_name_that_is_not_ascii_gets_the_default(self):  # type: ignore[no-untyped-def]
        key, cert = self.issue("default", dns=("default.test",))
        port = self.start(f'certificates = [{{ cert = "{cert}", key = "{key}" }}]')
        self.assertEqual((yield self.served_name(port, "\u00e9t\u00e9.test")), "default")
