"""The client-facing protocol of a proxied connection: a load balancer or proxy speaking for many clients."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from mypy_extensions import mypyc_attr

from .._compat import V1Parser, V2Parser
from ..http import CLIENT_CLAIMS, FORWARDING, RequestHead, quoted, spellings
from ..lifecycle import ConnectionEnd
from ._connection import LOCAL_CLIENT_DROPS, SESSION_HEADER, ClientConnection, forwarding_template
from ._peers import client_of, forwarded_chain, forwarded_elements, forwarded_node, forwarded_quote

#: A trusted proxy's forwarded-for chain is extended, not replaced, and the session header is the proxy's
#: own; its other forwarding headers are kept, but only as a proxy writes them (an ``_`` spelling came
#: from a client); Expect is answered here.
TRUSTED_PROXY_DROPS = (
    spellings((b"x-forwarded-for", b"forwarded", SESSION_HEADER))
    | (spellings(FORWARDING | CLIENT_CLAIMS) - FORWARDING - CLIENT_CLAIMS)
    | frozenset((b"expect",))
)
#: A v1 header whose proxy does not know the source (it may carry nothing more).
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
#: Longest PROXY header read (v1 is at most 107 bytes; v2 with TLVs is bounded here).
MAX_PROXY_HEADER = 4096


@mypyc_attr(allow_interpreted_subclasses=True)  # a frontend's protocol may be a user's subclass (docs/extending.md)
class ProxiedConnection(ClientConnection):
    """A connection from a proxy: the client of each request is the rightmost untrusted hop.

    The TCP peer is the proxy. With the PROXY protocol (v1 or v2), the header that starts
    the connection names the source (accepted only from a trusted proxy). Forwarding
    headers count only when the source is trusted; a trusted proxy's chain is extended
    with its address on the way to the origin.
    """

    __slots__ = ("peer", "source", "peers", "trusted", "_proxy_header", "_forwarded_element")
    proxied = True

    def connectionMade(self) -> None:
        # Settings as they were when it opened: a reload changes them for new connections only.
        self.peers = peers = self.frontend.peers
        self.source: str | None = None  # what a PROXY header named
        self._proxy_header: bytes | None = b"" if peers.proxy_protocol != "off" else None
        super().connectionMade()  # the handlers hear of it here, or once a PROXY header has named its source
        self.peer = self.client_address  # the TCP peer; the client address, until a PROXY header names one
        if self._proxy_header is not None and not peers.trusts(self.peer):
            self._bad_proxy_header(f"{self.peer} is not a trusted proxy: its PROXY header is refused")
            return
        self._trust()

    def announce(self) -> None:
        if self._proxy_header is None:  # not while a PROXY header is still to name the source
            super().announce()

    def _trust(self) -> None:
        """Whether the address speaking may speak for clients decides which forwarding headers are kept."""
        self.trusted = self.peers.trusts(self.client_address)
        self.parser.set_drop(TRUSTED_PROXY_DROPS if self.trusted else LOCAL_CLIENT_DROPS)
        self._forwarded_element = forwarded_node(self.client_address) + (
            b";proto=https" if self.secure else b";proto=http")

    def dataReceived(self, data: bytes) -> None:
        if self._proxy_header is not None:
            read = len(data)
            data = self._read_proxy_header(self._proxy_header + data)
            self.bytes_in += read - len(data)  # the header's bytes: read from the client too
            if not data or self.end_reason is not None:
                return
        super().dataReceived(data)

    def _read_proxy_header(self, buffered: bytes) -> bytes:
        """Consume the PROXY header (what came of it so far is ``buffered``); returns what follows it (b"" until
        it is complete)."""
        allowed = self.peers.proxy_protocol
        parser: V1Parser | V2Parser
        if buffered.startswith(V2Parser.PREFIX[: len(buffered)]) and allowed in ("v2", "any"):
            parser = V2Parser()
        elif buffered.startswith(b"PROXY "[: len(buffered)]) and allowed in ("v1", "any"):
            if buffered.startswith(V1_UNKNOWN):  # the proxy does not know the source: it stays the client
                return self._proxy_header_read(buffered[len(V1_UNKNOWN):], None)
            parser = V1Parser()
        else:
            return self._bad_proxy_header(f"expected a PROXY header ({allowed})")
        info = rest = None
        if not (isinstance(parser, V2Parser) and len(buffered) < 16):  # a v2 header's fixed part is 16 bytes
            try:
                info, rest = parser.feed(buffered)
            except Exception as e:  # noqa: BLE001 - Twisted's parsers raise more than InvalidProxyHeader on bad input
                return self._bad_proxy_header(f"invalid PROXY header: {type(e).__name__}")
        if info is None:
            if len(buffered) > MAX_PROXY_HEADER:
                return self._bad_proxy_header("PROXY header too long")
            self._proxy_header = buffered
            return b""
        return self._proxy_source(info.source, rest or b"")

    def _proxy_source(self, source: object, rest: bytes) -> bytes:
        """A complete PROXY header named ``source``; ``rest`` followed it."""
        host = getattr(source, "host", None)  # none for LOCAL, UNKNOWN or a unix socket: the proxy's own
        if host is not None:
            try:
                host = str(ipaddress.ip_address(host))
            except ValueError:
                return self._bad_proxy_header(f"PROXY source {quoted(host)} is not an address")
        return self._proxy_header_read(rest, host)

    def _proxy_header_read(self, rest: bytes, source: str | None) -> bytes:
        """The PROXY header named ``source`` (None: the proxy itself); the handlers hear of the connection now."""
        self._proxy_header = None
        if source is not None:
            self.source = self.client_address = source
            self._forwarding = forwarding_template(source, self.secure)
            self._trust()
        self.announce()
        return rest

    def _bad_proxy_header(self, why: str) -> bytes:
        self.log.warn("closed a connection from {peer}: {why}", peer=self.peer, why=why)
        self.note_end(ConnectionEnd.PROTOCOL_READ_ERROR)  # first, so no handler's refusal can say otherwise
        self._proxy_header = None
        self.announce()  # every connection the termination handlers hear of, the connection handlers heard of
        self.end(ConnectionEnd.PROTOCOL_READ_ERROR)
        return b""

    # A live upgrade: the client identity it learned travels with it

    def may_move(self) -> bool:
        return not self._proxy_header  # not while a PROXY header is half read

    def move_record(self, opened: bool, unsent: bytes) -> dict[str, Any]:
        return super().move_record(opened, unsent) | {
            "peer": self.peer, "source": self.source, "proxy_header_read": self._proxy_header is None}

    def restore_peer(self, record: Mapping[str, Any]) -> None:
        if not record.get("proxy_header_read") or self._proxy_header is None:
            return  # its PROXY header is still to come (or it was announced as it opened here)
        source = record.get("source")
        self._proxy_header_read(b"", str(source) if source is not None else None)

    def source_address(self) -> str | None:
        """A proxy's connection carries many clients: only one a PROXY header named is its own."""
        return self.source

    def owner(self) -> str | None:
        current = self.current
        return current.client_address if current is not None else None

    def client_of(self, head: RequestHead) -> str:
        if not self.trusted:
            return self.client_address
        return client_of(self.client_address, head.headers, self.peers)

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes:
        if not self.trusted or head is None:
            return super().forwarding_headers(host)
        return self._extended(host, head)

    def _extended(self, host: bytes, head: RequestHead) -> bytes:
        """Forwarding lines for a request a trusted proxy sent.

        The header the trusted proxies write (``forwarded-header``) is extended with the
        address speaking; the other one, which anyone before them could have written, is
        rewritten from the same hops, so an origin reading either sees the same chain.
        """
        believed = self.peers.header
        kept = [
            value.strip() if believed != b"forwarded" or forwarded_elements(value.decode("latin-1")) is not None
            else b"for=unknown"  # a value that does not parse: its broken quote would swallow our element
            for name, value in head.headers
            if name.lower() == believed
        ]
        # What the origin gets (a Connection header may have removed what the proxy sent).
        has_proto = has_host = False
        for name, _ in head.forward:
            lower = name.lower()
            if lower == b"x-forwarded-proto":
                has_proto = True
            elif lower == b"x-forwarded-host":
                has_host = True
        source = self.client_address
        ours = self._forwarded_element + b";host=" + forwarded_quote(host)
        if believed == b"forwarded":
            hops = forwarded_chain(head.headers, believed) + [source]
            xff, forwarded = ", ".join(hops).encode("latin-1"), b", ".join([*kept, ours])
        else:
            hops = forwarded_chain(head.headers, believed)
            xff = b", ".join([*kept, source.encode()])
            forwarded = b", ".join([*(forwarded_node(hop) for hop in hops), ours])
        out = b"X-Forwarded-For: %s\r\nForwarded: %s\r\n" % (xff, forwarded)
        if not has_proto:
            out += b"X-Forwarded-Proto: %s\r\n" % (b"https" if self.secure else b"http")
        if not has_host:
            out += b"X-Forwarded-Host: %s\r\n" % host
        return out

