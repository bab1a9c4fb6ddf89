"""The client-facing protocol of a proxied connection: a load balancer or proxy speaking for many clients."""

from __future__ import annotations

from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
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
    the connection names the client (accepted only from a trusted proxy). Forwarding
    headers (``X-Forwarded-For``, ``Forwarded``) count only when the peer is trusted; a
    trusted proxy's chain is extended with its address on the way to the origin.
    """

    __slots__ = ("peer", "trusted", "_proxy_header")

    def connectionMade(self) -> None:
        super().connectionMade()
        settings = self.frontend.peers
        self.peer = self.client_address  # the TCP peer, until a PROXY header names another
        self.trusted = settings.trusts(self.peer)
        self._proxy_header: bytes | None = None
        if settings.proxy_protocol != "off":
            if not self.trusted:
                self.log.warn("{peer} is not a trusted proxy: its PROXY header is refused", peer=self.peer)
                self.end(ConnectionEnd.PROTOCOL_READ_ERROR)
                return
            self._proxy_header = b""
        self._trust(self.trusted)

    def _trust(self, trusted: bool) -> None:
        self.trusted = trusted
        self.parser.set_drop(TRUSTED_PROXY_DROPS if trusted else LOCAL_CLIENT_DROPS)

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
        except InvalidProxyHeader as e:
            return self._bad_proxy_header(f"invalid PROXY header: {type(e).__name__}")
        if info is None:
            if len(buffered) > MAX_PROXY_HEADER:
                return self._bad_proxy_header("PROXY header too long")
            self._proxy_header = buffered
            return b""
        self._proxy_header = None
        source = info.source
        if source is not None:  # None: LOCAL / UNKNOWN, the proxy's own connection (a health check)
            self.peer = self.client_address = source.host  # type: ignore[attr-defined]
            self._forwarding = forwarding_template(self.peer, self.secure)
            self._trust(self.frontend.peers.trusts(self.peer))
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
            return self.peer
        return client_of(self.peer, head.headers, self.frontend.peers)

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes:
        if not self.trusted or head is None:
            return super().forwarding_headers(host)
        return trusted_forwarding(head, self.peer, self.secure, host)


def trusted_forwarding(head: RequestHead, peer: str, secure: bool, host: bytes) -> bytes:
    """Forwarding lines for a request a trusted proxy sent: its chain extended with ``peer``, its other
    forwarding headers kept (they reached the origin as they came), ours added where it set none."""
    ours = forwarding_template(peer, secure) % (host, host)
    lines: dict[bytes, bytes] = {}
    for line in ours.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b": ")
        lines[name.lower()] = value
    chains = {b"x-forwarded-for": [], b"forwarded": []}  # type: dict[bytes, list[bytes]]
    present = set()
    for name, value in head.headers:
        lower = name.lower()
        if lower in chains:
            chains[lower].append(value.strip())
        else:
            present.add(lower)
    out = b"X-Forwarded-For: %s\r\n" % b", ".join([*chains[b"x-forwarded-for"], lines[b"x-forwarded-for"]])
    out += b"Forwarded: %s\r\n" % b", ".join([*chains[b"forwarded"], lines[b"forwarded"]])
    for name, header in ((b"x-forwarded-proto", b"X-Forwarded-Proto"), (b"x-forwarded-host", b"X-Forwarded-Host")):
        if name not in present:
            out += b"%s: %s\r\n" % (header, lines[name])
    return out
