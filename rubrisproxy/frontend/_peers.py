"""Who the client is on a proxied connection: trusted proxies, forwarded-for chains, the PROXY protocol."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..http import Headers


@dataclass(frozen=True)
class PeerSettings:
    """A frontend's peers: local clients, or proxies (of which ``trusted`` may speak for their clients)."""

    proxied: bool = False
    trusted: tuple[Any, ...] = ()  # ip_network objects
    proxy_protocol: str = "off"
    header: bytes = b"x-forwarded-for"  # the one forwarding header trusted proxies write (or b"forwarded")
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, peers: str, trusted_proxies: tuple[str, ...], proxy_protocol: str,
              header: str = "x-forwarded-for") -> PeerSettings:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        return cls(peers == "proxied", networks, proxy_protocol, header.lower().encode())

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is one of the trusted proxies (answers remembered: a few addresses ask often)."""
        known = self._known.get(address)
        if known is None:
            if len(self._known) >= 4096:
                self._known.clear()
            known = self._known[address] = self._in_trusted(address)
        return known

    def _in_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return any(ip in network or (mapped is not None and mapped in network) for network in self.trusted)


LOCAL = PeerSettings()


def forwarded_chain(headers: Headers, header: bytes = b"x-forwarded-for") -> list[str]:
    """The addresses a request passed through, oldest first, from ``header``: ``X-Forwarded-For`` or ``Forwarded``.

    Only the header the trusted proxies write counts: a client can write the other one itself.
    """
    hops: list[str] = []
    for name, value in headers:
        if name.lower() != header:
            continue
        if header == b"x-forwarded-for":
            hops.extend(_node_address(hop.strip()) for hop in value.decode("latin-1").split(","))  # some add ports
            continue
        for element in value.decode("latin-1").split(","):
            for pair in element.split(";"):
                key, _, found = pair.strip().partition("=")
                if key.lower() == "for":
                    hops.append(_node_address(found.strip().strip('"')))
    return hops


def _node_address(node: str) -> str:
    """``192.0.2.1``, ``192.0.2.1:80``, ``[2001:db8::1]:80`` -> the address."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    return node.partition(":")[0] if node.count(":") == 1 else node


def forwarded_node(address: str) -> bytes:
    """``for=`` naming ``address`` in a Forwarded element (RFC 7239): quoted for IPv6, ``unknown`` if not an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return b"for=unknown"
    return b'for="[%s]"' % str(ip).encode() if ip.version == 6 else b"for=" + str(ip).encode()


def client_of(peer: str, headers: Headers, settings: PeerSettings) -> str:
    """The client behind ``peer``: the rightmost hop that is not a trusted proxy.

    Hops are read right to left (each trusted proxy appended the one before it), so a
    client cannot choose its address by writing a header: whatever it wrote stays left
    of the first untrusted hop. A hop that is not an address reads as ``unknown``.
    """
    if not settings.trusts(peer):
        return peer
    hop = peer
    for hop in reversed(forwarded_chain(headers, settings.header)):
        if not settings.trusts(hop):
            break
    if hop is peer:
        return peer
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return "unknown"
