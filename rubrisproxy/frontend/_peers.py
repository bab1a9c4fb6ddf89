"""Who the client is on a proxied connection: trusted proxies, forwarded-for chains, the PROXY protocol."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..http import Headers


@dataclass(frozen=True)
class PeerSettings:
    """A frontend's peers: local clients, or proxies (of which ``trusted`` may speak for their clients)."""

    proxied: bool
    trusted: tuple[Any, ...]  # ip_network objects
    proxy_protocol: str
    header: bytes  # the one forwarding header trusted proxies write: b"x-forwarded-for" or b"forwarded"
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, peers: str, trusted_proxies: tuple[str, ...], proxy_protocol: str,
              header: str) -> PeerSettings:
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


def forwarded_chain(headers: Headers, header: bytes) -> list[str]:
    """The addresses a request passed through, oldest first, from ``header``: ``X-Forwarded-For`` or ``Forwarded``.

    Only the header the trusted proxies write counts: a client can write the other one itself.
    Each hop is an address in canonical form, or ``unknown`` (not an address, or a
    ``Forwarded`` value that does not parse: its quotes decide where its hops are).
    """
    hops: list[str] = []
    for name, value in headers:
        if name.lower() != header:
            continue
        text = value.decode("latin-1")
        if header == b"x-forwarded-for":
            if text.strip():  # some add ports; an empty hop in a list is no address: a client wrote it
                hops.extend(_node_address(hop.strip()) if hop.strip() else "unknown" for hop in text.split(","))
            continue
        elements = forwarded_elements(text)
        if elements is None:
            hops.append("unknown")
            continue
        hops.extend(_node_address(element["for"]) for element in elements if "for" in element)
    return hops


def forwarded_elements(value: str) -> list[dict[str, str]] | None:
    """The elements of one ``Forwarded`` value (RFC 7239 4), each as {lower-cased parameter: value}; None if malformed.

    A quoted string is one value, escapes undone, whatever commas or semicolons it
    holds; a parameter twice in one element is malformed.
    """
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    i, end = 0, len(value)
    while True:
        i = _skip_space(value, i)
        if i < end and value[i] not in ",;":
            key, found, i = _parameter(value, i)
            if found is None or key in pairs:
                return None
            pairs[key] = found
            i = _skip_space(value, i)
        if i >= end:
            elements.append(pairs)
            return elements
        if value[i] == ",":
            elements.append(pairs)
            pairs = {}
        elif value[i] != ";":
            return None
        i += 1


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: An unquoted value: a token, leniently with the ``[]:`` of addresses some proxies leave unquoted.
_BARE_VALUE = _TOKEN | frozenset("[]:")


def _parameter(value: str, i: int) -> tuple[str, str | None, int]:
    """The ``key=value`` pair at ``i``: the key lower-cased, the value (None: malformed) and the index after it."""
    start, end = i, len(value)
    while i < end and value[i] in _TOKEN:
        i += 1
    key = value[start:i].lower()
    if not key or i >= end or value[i] != "=":
        return key, None, i
    if value[i + 1:i + 2] == '"':
        found, i = _quoted(value, i + 2)
        return key, found, i
    start = i = i + 1
    while i < end and value[i] in _BARE_VALUE:
        i += 1
    return key, value[start:i] or None, i


def _skip_space(value: str, i: int) -> int:
    while i < len(value) and value[i] in " \t":
        i += 1
    return i


def _quoted(value: str, i: int) -> tuple[str | None, int]:
    """The quoted string opened just before ``i``, unescaped, and the index after it (None: unterminated)."""
    out: list[str] = []
    while i < len(value):
        char = value[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            i += 1
            if i >= len(value):
                break
            char = value[i]
        out.append(char)
        i += 1
    return None, i


def forwarded_quote(value: bytes) -> bytes:
    """``value`` as an RFC 7239 quoted string: quotes and backslashes escaped."""
    return b'"%s"' % value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def _node_address(node: str) -> str:
    """``192.0.2.1``, ``192.0.2.1:80``, ``[2001:db8::1]:80`` -> the address, canonical; anything else -> ``unknown``."""
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:
        node = node.partition(":")[0]
    try:
        return str(ipaddress.ip_address(node))
    except ValueError:
        return "unknown"


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
    return hop  # the chain's hops are canonical addresses or "unknown" already
