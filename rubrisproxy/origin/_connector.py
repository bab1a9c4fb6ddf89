"""The client factory for the origin side: every connection to a server starts here.

Pooled HTTP connections use it now; pinned connections and CONNECT tunnels use the
same :meth:`OriginConnector.connect` with their own protocol.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, optionsForClientTLS
from twisted.python.failure import Failure
from zope.interface import implementer

from .._compat import Connectable, IOpenSSLTrustRoot, connect_tcp, unwrap_endpoint
from ..backend import Server
from ..config import TLSConfig
from ..settings import LiveSettings

P = TypeVar("P", bound=Connectable)


class ConnectTimeout(Exception):
    """The origin did not accept the connection within ``timeout connect``."""


class OriginConnector:
    """Opens connections to servers: plain TCP or TLS verified with service-identity."""

    def __init__(
        self, reactor: IReactorTime, settings: LiveSettings, trust_root: IOpenSSLTrustRoot | Certificate | None = None
    ) -> None:
        self._reactor = reactor
        self.settings = settings
        self.trust_root = trust_root  # None: the platform's trust store

    @property
    def connect_timeout(self) -> float:
        return self.settings.current.timeouts.connect

    def endpoint(self, server: Server) -> IStreamClientEndpoint:
        """The client endpoint that reaches ``server``."""
        host, port = server.config.host, server.config.port
        timeout = self.connect_timeout + 1  # the Deferred timeout in connect() governs
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=timeout)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, port, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, port, timeout=timeout)
        if server.config.tls:
            endpoint = wrapClientTLS(self._tls_options(server), endpoint)
        return endpoint

    def _tls_options(self, server: Server) -> IOpenSSLClientConnectionCreator:
        """Verified with service-identity against the trust store (or the backend's CA file), unless told not to."""
        settings = server.tls or TLSConfig()
        name = settings.sni or server.config.host
        client = None
        if settings.client_cert is not None:
            pem = _read(settings.client_cert) + (_read(settings.client_key) if settings.client_key else b"")
            client = PrivateCertificate.loadPEM(pem)
        if not settings.verify:
            return _Unverified(name, client)
        trust = self.trust_root
        if settings.ca_file is not None:
            trust = Certificate.loadPEM(_read(settings.ca_file))
        return optionsForClientTLS(name, trustRoot=trust, clientCertificate=client)

    def connect(self, server: Server, protocol: P) -> defer.Deferred[P]:
        """Connect ``protocol`` to ``server``; fails with :class:`ConnectTimeout` in time."""
        timeout = self.connect_timeout
        host = server.config.host
        if not server.config.tls and (isIPAddress(host) or isIPv6Address(host)):  # no endpoint needed
            return connect_tcp(self._reactor, (host, server.config.port), protocol, timeout,
                               lambda: ConnectTimeout(f"no connection to {server} within {timeout:g}s"))
        # The endpoint fires with what the factory built, ``protocol`` itself; its stubs say only IProtocol.
        attempt = cast("defer.Deferred[P]", self.endpoint(server).connect(_OneProtocolFactory(protocol)))

        def on_timeout(result: object, timeout: float) -> object:
            if isinstance(result, Failure) and result.check(defer.CancelledError, ConnectingCancelledError):
                raise ConnectTimeout(f"no connection to {server} within {timeout:g}s")
            return result

        attempt.addTimeout(timeout, self._reactor, onTimeoutCancel=on_timeout)
        attempt.addCallback(unwrap_endpoint)
        return attempt


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS to a server whose certificate is not checked (``verify = false``): still SNI, still encrypted."""

    def __init__(self, name: str, client: PrivateCertificate | None) -> None:
        options = CertificateOptions(
            privateKey=client.privateKey.original if client else None,
            certificate=client.original if client else None,
        )
        self._context = options.getContext()
        self._name = name.encode("idna") if not isIPAddress(name) and not isIPv6Address(name) else None

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._name is not None:
            connection.set_tlsext_host_name(self._name)
        connection.set_connect_state()
        return connection


class _OneProtocolFactory(Factory):
    """Hands an endpoint the protocol instance the caller already built."""

    noisy = False

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> Any:
        self._protocol.factory = self
        return self._protocol
