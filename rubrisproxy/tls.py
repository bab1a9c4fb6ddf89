"""TLS for listeners: certificates read into OpenSSL contexts, chosen by SNI, with ALPN and version floors.

A :class:`ServerTLS` makes the server side of each accepted connection (Twisted's
``TLSMemoryBIOFactory`` wraps a listener's factory with it). Its contexts are built
from a :class:`ListenerTLSConfig`; :meth:`ServerTLS.use` swaps in contexts read anew
(a reload), for the connections accepted from then on. ``ssl:`` endpoint strings are
turned into a ``tcp:`` endpoint and settings of their own, so they get the same
contexts (with ALPN) as a frontend's ``[tls]`` table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from .config import CertificateFiles, ConfigError, ListenerTLSConfig, split_endpoint

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_SESSION_ID_CONTEXT = b"rubrisproxy"
#: The options an ``ssl:`` endpoint string may carry (Twisted's names); others are refused.
_SSL_OPTIONS = {"port", "privateKey", "certKey", "extraCertChain", "interface", "backlog"}


@dataclass(frozen=True, slots=True)
class Certificate:
    """One certificate as read: its chain (leaf first), its private key, the host names it serves."""

    where: str  # the configuration key that named it
    chain: tuple[x509.Certificate, ...]
    private_key: Any = field(repr=False)
    names: tuple[str, ...]


#: What the files of a certificate are called where they are configured: a [tls] table, an ``ssl:`` string.
TABLE_NAMES = ("cert", "key", "chain")
SSL_STRING_NAMES = ("certKey", "privateKey", "extraCertChain")


def read_certificate(key: str, files: CertificateFiles, names: tuple[str, str, str] = TABLE_NAMES) -> Certificate:
    """Read and check one certificate's files; a :class:`ConfigError` names the key of the file at fault."""
    cert_key, key_key, chain_key = (f"{key}.{name}" for name in names)
    chain = _certificates(cert_key, files.cert)
    if files.chain is not None:
        chain += _certificates(chain_key, files.chain)
    data = _read(key_key, files.key)
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(key_key, f"{files.key} holds no usable PEM private key: {_first_line(e)}") from None
    leaf_key = chain[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != leaf_key:
        raise ConfigError(key_key, f"{files.key} is not the key of the certificate in {files.cert}")
    return Certificate(key, tuple(chain), private_key, _names(chain[0]))


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None


def _certificates(key: str, path: str) -> list[x509.Certificate]:
    data = _read(key, path)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(key, f"{path} holds no PEM certificate") from None


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a leaf certificate serves (its subject alternative names, else its common name), lowercase."""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(name.lower().rstrip(".") for name in names)


def certificate_files(key: str, settings: ListenerTLSConfig) -> list[tuple[str, CertificateFiles]]:
    """The certificates ``settings`` names, each with its configuration key: the list, then the directory's files."""
    found = [(f"{key}.certificates[{i}]", files) for i, files in enumerate(settings.certificates)]
    directory = settings.directory
    if directory is not None:
        try:
            entries = sorted(os.listdir(directory))
        except OSError as e:
            raise ConfigError(f"{key}.directory", f"cannot list {directory}: {e.strerror}") from None
        for entry in entries:
            stem, extension = os.path.splitext(entry)
            if extension not in (".pem", ".crt"):
                continue
            path = os.path.join(directory, entry)
            key_path = os.path.join(directory, stem + ".key")
            files = CertificateFiles(cert=path, key=key_path if os.path.exists(key_path) else path)
            found.append((f"{key}.directory[{entry}]", files))
    if not found:
        raise ConfigError(f"{key}.directory", f"{directory} holds no *.pem or *.crt certificate")
    return found


class Contexts:
    """The OpenSSL contexts of one reading of a listener's certificates: a default, and others by SNI name."""

    def __init__(self, key: str, settings: ListenerTLSConfig, certificates: Sequence[Certificate]) -> None:
        self.key = key
        self.certificates = tuple(certificates)
        self._alpn = tuple(name.encode("ascii") for name in settings.alpn)
        self._exact: dict[str, SSL.Context] = {}
        self._wildcard: dict[str, SSL.Context] = {}  # "*.example.com" by "example.com"
        contexts = [self._context(settings, certificate) for certificate in self.certificates]
        self.default = contexts[0]
        for certificate, context in zip(self.certificates, contexts, strict=True):
            for name in certificate.names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], context)
                else:
                    self._exact.setdefault(name, context)

    def _context(self, settings: ListenerTLSConfig, certificate: Certificate) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(_VERSIONS[settings.min_version])
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        try:
            context.set_cipher_list(settings.ciphers.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise ConfigError(f"{self.key}.ciphers",
                              f"OpenSSL knows none of the ciphers {settings.ciphers!r}") from None
        context.use_certificate(certificate.chain[0])
        for extra in certificate.chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(certificate.private_key)
        context.set_session_id(_SESSION_ID_CONTEXT)
        context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        context.set_tlsext_servername_callback(self._server_name)
        if self._alpn:
            context.set_alpn_select_callback(self._select_protocol)
        return context

    def for_name(self, name: str) -> SSL.Context:
        """The context serving host ``name``: an exact name, else a wildcard one level up, else the default."""
        name = name.lower().rstrip(".")
        found = self._exact.get(name)
        if found is None:
            found = self._wildcard.get(name.partition(".")[2], self.default)
        return found

    def _server_name(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if name:
            context = self.for_name(name.decode("ascii", "replace"))
            if context is not self.default:
                connection.set_context(context)

    def _select_protocol(self, connection: SSL.Connection, offered: list[bytes]) -> bytes | Any:
        """Our first protocol the client offers; none in common: no ALPN answer, and HTTP/1.1 as without ALPN."""
        for name in self._alpn:
            if name in offered:
                return name
        return SSL.NO_OVERLAPPING_PROTOCOLS


def build_contexts(key: str, settings: ListenerTLSConfig, names: tuple[str, str, str] = TABLE_NAMES) -> Contexts:
    """Read every certificate ``settings`` names into contexts; a :class:`ConfigError` names what is wrong."""
    if names is SSL_STRING_NAMES:  # an ssl: string's one certificate, named by the string's key
        certificates = [read_certificate(key, settings.certificates[0], names)]
    else:
        certificates = [read_certificate(where, files) for where, files in certificate_files(key, settings)]
    return Contexts(key, settings, certificates)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The server side of each TLS connection a listener accepts, from the contexts in use."""

    def __init__(self, contexts: Contexts) -> None:
        self.contexts = contexts

    def use(self, contexts: Contexts) -> None:
        """Serve connections accepted from now on with ``contexts`` (those already open keep theirs)."""
        self.contexts = contexts

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802 (Twisted's interface)
        return SSL.Connection(self.contexts.default, None)


@dataclass(frozen=True, slots=True)
class Listener:
    """How to listen on one endpoint string: the plain endpoint, and the TLS settings over it (None: no TLS)."""

    key: str  # the configuration key of its TLS settings, for messages
    endpoint: str
    tls: ListenerTLSConfig | None
    names: tuple[str, str, str] = TABLE_NAMES  # what its certificate files are called there

    def contexts(self) -> Contexts:
        """Its certificates, read now (a listener with TLS only); a :class:`ConfigError` names what is wrong."""
        assert self.tls is not None
        return build_contexts(self.key, self.tls, self.names)


def listener(key: str, description: str, tls: ListenerTLSConfig | None,
             alpn: tuple[str, ...] | None = None) -> Listener:
    """``description`` under ``tls``; an ``ssl:`` string becomes ``tcp:`` with the certificate it names, offering
    ``alpn`` (None: the default protocols)."""
    if not _is_ssl(description):
        return Listener(f"{key}.tls", description, tls)
    return _ssl_listener(key, description, alpn)


def listeners(key: str, endpoints: Sequence[str], tls: ListenerTLSConfig | None,
              alpn: tuple[str, ...] | None = None) -> list[Listener]:
    """Each of a frontend's (or the admin's) endpoints as a :class:`Listener`, ``ssl:`` ones keyed by position."""
    return [listener(f"{key}.listen[{i}]" if _is_ssl(d) else key, d, tls, alpn) for i, d in enumerate(endpoints)]


def check_listeners(key: str, endpoints: Sequence[str], tls: ListenerTLSConfig | None) -> None:
    """Read the key material of every TLS listener of ``endpoints`` as the proxy will; a bad one raises ConfigError."""
    if tls is not None:
        build_contexts(f"{key}.tls", tls)
    for each in listeners(key, endpoints, tls):
        if each.tls is not None and each.tls is not tls:
            each.contexts()


def _is_ssl(description: str) -> bool:
    return split_endpoint(description)[0] == "ssl"


def _ssl_listener(key: str, description: str, alpn: tuple[str, ...] | None) -> Listener:
    """Twisted's ``ssl:PORT:privateKey=K:certKey=C[:extraCertChain=F][:interface=I][:backlog=N]``."""
    _, positional, named = split_endpoint(description)
    options: dict[str, str] = {}
    for name, value in named:
        if name not in _SSL_OPTIONS:
            raise ConfigError(key, f"{name} is not supported on an ssl: listener; use a [tls] table")
        options[name] = value
    if len(positional) > 1 or (positional and "port" in options):
        raise ConfigError(key, f"expected ssl:PORT:privateKey=KEY:certKey=CERT, got {description!r}")
    port = positional[0] if positional else options.get("port", "")
    private_key = options.get("privateKey", "server.pem")
    files = CertificateFiles(cert=options.get("certKey", private_key), key=private_key,
                             chain=options.get("extraCertChain"))
    plain = [f"tcp:{_escape(port)}"]
    for name in ("interface", "backlog"):
        if name in options:
            plain.append(f"{name}={_escape(options[name])}")
    tls = ListenerTLSConfig(certificates=(files,)) if alpn is None else ListenerTLSConfig(certificates=(files,), alpn=alpn)
    return Listener(key, ":".join(plain), tls, SSL_STRING_NAMES)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")

