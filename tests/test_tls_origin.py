"""https:// servers: TLS with the certificate verified, and a clear 502 when it cannot be."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, ssl
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web import server

from rubrisproxy.config import ServerConfig

from .helpers import EchoResource, ProxyTestCase, get


def make_certificates() -> tuple[bytes, bytes, bytes]:
    """A CA certificate, and a key and certificate it signed for 127.0.0.1 (all PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rubrisproxy test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), key_pem, leaf.public_bytes(pem)


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
