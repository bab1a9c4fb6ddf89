"""The client-facing protocol of a proxied connection: a load balancer or proxy speaking for many clients."""

from __future__ import annotations

import ipaddress

from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from ..http import RequestHead
from ..lifecycle import ConnectionEnd
from ._connection import LOCAL_CLIENT_DROPS, ClientConnection, forwarding_template
from ._peers import client_of

#: A trusted proxy's forwarded-for chain is extended, not replaced; Expect is answered here.
TRUSTED_PROXY_DROPS = frozenset((b"x-forwarded-for", b"forwarded", b"expect"))
#: Longest PROXY header read (v1 is at most 107 bytes; v2 with TLVs is bounded here).
MAX_PROXY_HEADER = 4096


class ProxiedConnection(ClientConnection):
    """A connection from a proxy: the client of each request is the rightmost untrusted hop.

    The TCP peer is the proxy. With the PROXY protocol (v1 or v2), the header that starts
    the connection names the source (accepted only from a trusted proxy). Forwarding
    headers count only when the source is trusted; a trusted proxy's chain is extended
    with its address on the way to the origin.
    """

    __slots__ = ("peer", "source", "trusted", "_proxy_header", "_forwarded_element")
    proxied = True

    def connectionMade(self) -> None:
        super().connectionMade()
        settings = self.frontend.peers
        self.peer = self.source = self.client_address  # the TCP peer; the source, until a PROXY header names one
        self._proxy_header: bytes | None = None
        if settings.proxy_protocol != "off":
            if not settings.trusts(self.peer):
                self.log.warn("{peer} is not a trusted proxy: its PROXY header is refused", peer=self.peer)
                self.end(ConnectionEnd.PROTOCOL_READ_ERROR)
                return
            self._proxy_header = b""
        self._trust()

    def _trust(self) -> None:
        """Whether the source may speak for clients decides which forwarding headers are kept."""
        self.trusted = self.frontend.peers.trusts(self.source)
        self.parser.set_drop(TRUSTED_PROXY_DROPS if self.trusted else LOCAL_CLIENT_DROPS)
        node = self.source.encode()
        self._forwarded_element = (b'for="[%s]"' % node if b":" in node else b"for=" + node) + (
            b";proto=https" if self.secure else b";proto=http")

    def dataReceived(self, data: bytes) -> None:
        if self._proxy_header is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        super().dataReceived(data)

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Consume the PROXY header; returns what follows it (b"" until it is complete)."""
        buffered = self._proxy_header + data  # type: ignore[operator]
        allowed = self.frontend.peers.proxy_protocol
        parser: V1Parser | V2Parser
        if buffered.startswith(V2Parser.PREFIX[: len(buffered)]) and allowed in ("v2", "any"):
            parser = V2Parser()
        elif buffered.startswith(b"PROXY "[: len(buffered)]) and allowed in ("v1", "any"):
            parser = V1Parser()
        else:
            return self._bad_proxy_header(f"no PROXY {allowed} header")
        if isinstance(parser, V2Parser) and len(buffered) < 16:
            self._proxy_header = buffered
            return b""
        try:
            info, rest = parser.feed(buffered)
        except Exception as e:  # noqa: BLE001 - Twisted's parsers raise more than InvalidProxyHeader on bad input
            return self._bad_proxy_header(f"invalid PROXY header: {type(e).__name__}")
        if info is None:
            if len(buffered) > MAX_PROXY_HEADER:
                return self._bad_proxy_header("PROXY header too long")
            self._proxy_header = buffered
            return b""
        self._proxy_header = None
        host = getattr(info.source, "host", None)  # none for LOCAL, UNKNOWN or a unix socket: the proxy's own
        if host is not None:
            try:
                host = str(ipaddress.ip_address(host))
            except ValueError:
                return self._bad_proxy_header(f"PROXY source {host[:64]!r} is not an address")
            self.source = self.client_address = host
            self._forwarding = forwarding_template(host, self.secure)
            self._trust()
        return rest or b""

    def _bad_proxy_header(self, why: str) -> bytes:
        self.log.warn("closed a connection from {peer}: {why}", peer=self.peer, why=why)
        self._proxy_header = None
        self.end(ConnectionEnd.PROTOCOL_READ_ERROR)
        return b""

    def owner(self) -> str | None:
        current = self.current
        return current.client_address if current is not None else None

    def client_of(self, head: RequestHead) -> str:
        if not self.trusted:
            return self.source
        return client_of(self.source, head.headers, self.frontend.peers)

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes:
        if not self.trusted or head is None:
            return super().forwarding_headers(host)
        return self._extended(host, head)

    def _extended(self, host: bytes, head: RequestHead) -> bytes:
        """Forwarding lines for a request a trusted proxy sent: its chains extended with the source, its
        other forwarding headers kept (they reach the origin as they came), ours added where it set none."""
        xff: list[bytes] = []
        forwarded: list[bytes] = []
        has_proto = has_host = False
        for name, value in head.headers:
            lower = name.lower()
            if lower == b"x-forwarded-for":
                xff.append(value.strip())
            elif lower == b"forwarded":
                forwarded.append(value.strip())
            elif lower == b"x-forwarded-proto":
                has_proto = True
            elif lower == b"x-forwarded-host":
                has_host = True
        source = self.source.encode()
        xff.append(source)
        forwarded.append(self._forwarded_element + b';host="%s"' % host)
        out = b"X-Forwarded-For: %s\r\nForwarded: %s\r\n" % (b", ".join(xff), b", ".join(forwarded))
        if not has_proto:
            out += b"X-Forwarded-Proto: %s\r\n" % (b"https" if self.secure else b"http")
        if not has_host:
            out += b"X-Forwarded-Host: %s\r\n" % host
        return out
