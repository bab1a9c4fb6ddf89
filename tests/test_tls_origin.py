"""https:// servers: TLS with the certificate verified, and a clear 502 when it cannot be."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer, reactor, ssl
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import server

from rubrisproxy.config import ServerConfig, TLSConfig

from .helpers import EchoResource, ProxyTestCase, get
from .tlscerts import CertificateAuthority


def make_certificates() -> tuple[bytes, bytes, bytes]:
    """A CA certificate, and a key and certificate it signed for 127.0.0.1 (all PEM)."""
    ca = CertificateAuthority()
    key_pem, cert_pem = ca.issue("127.0.0.1", ips=("127.0.0.1",))
    return ca.pem, key_pem, cert_pem


def listen_tls_echo(case: unittest.TestCase) -> tuple[bytes, int]:
    """A fresh CA's certificate (PEM), and the port of an HTTPS echo origin on loopback serving one it signed."""
    ca_pem, key_pem, cert_pem = make_certificates()
    tls = reactor.listenSSL(0, server.Site(EchoResource(), logPath="/dev/null"),
                            ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options(), interface="127.0.0.1")
    case.addCleanup(tls.stopListening)
    return ca_pem, tls.getHost().port


def tls_listen_endpoint(case: unittest.TestCase) -> tuple[bytes, str]:
    """A fresh CA's certificate, and an ``ssl:`` endpoint on loopback serving a certificate it signed."""
    ca_pem, key_pem, cert_pem = make_certificates()
    paths = {}
    for name, data in (("key", key_pem), ("cert", cert_pem)):
        paths[name] = case.mktemp()
        with open(paths[name], "wb") as f:
            f.write(data)
    return ca_pem, f"ssl:0:interface=127.0.0.1:privateKey={paths['key']}:certKey={paths['cert']}"


class TLSOriginTests(ProxyTestCase):
    def setUp(self) -> None:
        ca_pem, key_pem, cert_pem = make_certificates()
        self.ca = ssl.Certificate.loadPEM(ca_pem)
        context = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
        site = server.Site(EchoResource(), logPath="/dev/null")
        port = reactor.listenSSL(0, site, context, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.tls_port = port.getHost().port

    def start_tls_proxy(self, trust_root):  # type: ignore[no-untyped-def]
        frontend = self.start_proxy(retries=0)
        frontend.backend.servers.clear()
        frontend.backend.add_server(ServerConfig("tls", "127.0.0.1", self.tls_port, tls=True))
        frontend.pool.connector.trust_root = trust_root
        return frontend

    @defer.inlineCallbacks
    def test_verified_tls_origin(self):
        self.start_tls_proxy(self.ca)
        responses = yield self.request(get(b"/over-tls") + get(b"/again"), count=2)
        self.assertEqual([r.body for r in responses], [b"path=/over-tls", b"path=/again"])

    @defer.inlineCallbacks
    def test_unverifiable_certificate_is_502_with_reason(self):
        events: list[dict] = []  # type: ignore[type-arg]
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start_tls_proxy(None)  # the platform store does not know the test CA
        (response,) = yield self.request(get())
        warnings = [formatEvent(e) for e in events if e.get("status") == 502]
        self.assertEqual(len(warnings), 1)
        self.assertIn("certificate verify failed", warnings[0])
        self.assertEqual(response.status, 502)
        (record,) = self.access_log.entries
        self.assertEqual(record.termination, "server-abort")
        errors = self.flushLoggedErrors()
        self.assertEqual(errors, [])


class TLSSettingsTests(ProxyTestCase):
    """A backend's own TLS settings: its CA file, no verification, the SNI name, a client certificate."""

    def setUp(self) -> None:
        self.ca_pem, key_pem, cert_pem = make_certificates()
        self.ca_file = self.write(self.ca_pem)
        self.client_file = self.write(key_pem + cert_pem)
        self.ca = ssl.Certificate.loadPEM(self.ca_pem)
        site = server.Site(EchoResource(), logPath="/dev/null")
        plain = reactor.listenSSL(0, site, ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options(),
                                  interface="127.0.0.1")
        self.addCleanup(plain.stopListening)
        self.plain_port = plain.getHost().port
        strict = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options(self.ca)  # asks for a client certificate
        mutual = reactor.listenSSL(0, site, strict, interface="127.0.0.1")
        self.addCleanup(mutual.stopListening)
        self.mutual_port = mutual.getHost().port

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    @defer.inlineCallbacks
    def status_through(self, port: int, **settings: object):  # type: ignore[no-untyped-def]
        self.frontend = frontend = self.start_proxy(retries=0)
        backend = frontend.backend
        backend.servers.clear()
        backend.config = replace(backend.config, tls=TLSConfig(**settings))  # type: ignore[arg-type]
        backend.add_server(ServerConfig("tls", "127.0.0.1", port, tls=True))
        (response,) = yield self.request(get(b"/tls"))
        return response.status

    @defer.inlineCallbacks
    def test_the_backends_ca_file_is_trusted(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.status_through(self.plain_port, ca_file=self.ca_file)), 200)

    @defer.inlineCallbacks
    def test_verification_can_be_turned_off(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.status_through(self.plain_port, verify=False)), 200)

    @defer.inlineCallbacks
    def test_the_sni_name_is_the_one_checked(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.status_through(self.plain_port, ca_file=self.ca_file, sni="other.example")), 502)

    @defer.inlineCallbacks
    def test_a_client_certificate_is_presented(self):  # type: ignore[no-untyped-def]
        status = yield self.status_through(self.mutual_port, ca_file=self.ca_file, client_cert=self.client_file)
        self.assertEqual(status, 200)

    @defer.inlineCallbacks
    def test_without_the_client_certificate_the_server_refuses(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.status_through(self.mutual_port, ca_file=self.ca_file)), 502)


    @defer.inlineCallbacks
    def test_a_connection_made_unverified_never_serves_a_verified_server(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.status_through(self.plain_port, verify=False)), 200)
        frontend = self.frontend
        self.assertEqual(frontend.pool.idle_count, 1)
        (tls_server,) = frontend.backend.servers
        tls_server.set_tls(TLSConfig())  # verified against the system store, which does not know our CA
        (response,) = yield self.request(get(b"/tls"))
        self.assertEqual(response.status, 502)

class TLSListenerTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_an_ssl_listener_serves_with_the_configured_certificate(self):  # type: ignore[no-untyped-def]
        from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol

        from rubrisproxy.config import CommandLine, load_config
        from rubrisproxy.service import build_service

        from .helpers import RawClient

        ca_pem, listen = tls_listen_endpoint(self)
        origin = self.start_web_origin()
        config = load_config(CommandLine(listen=[listen], backends=[f"127.0.0.1:{origin}"], access_log="off"))
        service = build_service(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.getServiceNamed("frontend:default").ports[0].getHost().port
        client = RawClient()
        options = ssl.optionsForClientTLS("127.0.0.1", trustRoot=ssl.Certificate.loadPEM(ca_pem))
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", port, options), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        client.send(get(b"/secure-front") + get(b"/headers"))
        first, headers = yield client.responses(2)
        self.assertEqual((first.status, first.body), (200, b"path=/secure-front"))
        self.assertIn(b"X-Forwarded-Proto: https", headers.body)  # the origin hears the client came over TLS
