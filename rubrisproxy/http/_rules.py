"""The pieces of HTTP rules that are plain message work: header values with substitutions, header edits,
conditions on the client and the request, and where a redirect points (docs/rules.md)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ._headers import Headers
from ._target import Target

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Variables(Protocol):
    """What a template's ``%[NAME]`` is read from: a request's rule run."""

    def variable(self, name: str) -> bytes: ...


class Template:
    """A header value as configured: text and ``%[NAME]`` substitutions (already checked by the config)."""

    __slots__ = ("constant", "name", "parts")

    def __init__(self, parts: Sequence[tuple[bool, str]]) -> None:
        # A name stays a str, a piece of text becomes bytes.
        self.parts: tuple[str | bytes, ...] = tuple(piece if is_name else piece.encode("ascii")
                                                    for is_name, piece in parts)
        self.constant: bytes | None = None
        if not any(is_name for is_name, _ in parts):
            self.constant = b"".join(piece.encode("ascii") for _, piece in parts)
        self.name = parts[0][1] if len(parts) == 1 and parts[0][0] else None  # the value is one %[NAME]

    def render(self, variables: Variables) -> bytes:
        constant = self.constant
        if constant is not None:
            return constant
        if self.name is not None:
            return variables.variable(self.name)
        return b"".join([variables.variable(piece) if isinstance(piece, str) else piece for piece in self.parts])


_SAFE = bytes(range(0x21, 0x7F))


@functools.lru_cache(maxsize=256)
def field_safe(value: str) -> bytes:
    """``value`` (a name from the configuration or the admin API) as header bytes: any byte that could end or
    break the line (CR, LF, NUL, other controls, non-ASCII) becomes ``_``."""
    return bytes(byte if byte in _SAFE or byte == 0x20 else 0x5F for byte in value.encode("utf-8"))


def set_header(headers: Headers, lower: bytes, name: bytes, value: bytes) -> Headers:
    """``headers`` with every ``lower`` one removed and ``name: value`` added."""
    kept = [pair for pair in headers if pair[0].lower() != lower]
    kept.append((name, value))
    return kept


def del_header(headers: Headers, lower: bytes) -> Headers:
    """``headers`` without any ``lower`` one."""
    return [pair for pair in headers if pair[0].lower() != lower]


def header_value(headers: Headers, lower: bytes) -> bytes | None:
    """The first ``lower`` header's value, if any."""
    for name, value in headers:
        if name.lower() == lower:
            return value
    return None


@functools.lru_cache(maxsize=4096)
def client_ip(address: str) -> Address | None:
    """The address a client is known by, an IPv4-mapped IPv6 one as its IPv4 address (None: not an IP address)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def networks(specs: Sequence[str]) -> tuple[Network, ...]:
    """Networks from the configuration's strings (IPv4-mapped IPv6 ones as IPv4)."""
    found: list[Network] = []
    for spec in specs:
        network = ipaddress.ip_network(spec, strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None \
                and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}", strict=False)
        found.append(network)
    return tuple(found)


def in_networks(address: Address | None, within: tuple[Network, ...]) -> bool:
    """Whether ``address`` is in any of ``within`` (an unknown address is in none)."""
    if address is None:
        return False
    version = address.version
    return any(network.version == version and address in network for network in within)


@functools.lru_cache(maxsize=4096)
def masked(address: Address | None, text: str, ipv6_mask: int) -> str:
    """The key a rate limit counts ``address`` under: an IPv6 one as its network of ``ipv6_mask`` bits."""
    if address is None or address.version == 4 or ipv6_mask >= 128:
        return text if address is None else str(address)
    return str(ipaddress.IPv6Network((address, ipv6_mask), strict=False).network_address)


@functools.lru_cache(maxsize=256)
def _default_port_stripped(host: bytes, port: bytes) -> bytes:
    return host[: -len(port)] if host.endswith(port) else host


def _uri_safe(location: bytes) -> bytes:
    """``location`` with any byte outside visible ASCII percent-encoded: it can neither end the header line nor
    carry a space."""
    if all(0x21 <= byte <= 0x7E for byte in location):
        return location
    return b"".join(bytes((byte,)) if 0x21 <= byte <= 0x7E else b"%%%02X" % byte for byte in location)


@dataclass(frozen=True, slots=True)
class RedirectTarget:
    """Where a redirect points: exactly one of HAProxy's ``location``, ``prefix`` and ``scheme``."""

    location: bytes | None
    prefix: bytes | None
    scheme: bytes | None
    drop_query: bool = False

    def to(self, target: Target, secure: bool) -> bytes | None:
        """The Location for a request to ``target``: the location; the prefix and the request's path (and query,
        unless dropped); the scheme and the request's host (the old scheme's default port dropped) and path. None:
        a scheme redirect of a request without a host."""
        return redirect_to(self, target, secure)


def redirect_to(redirect: RedirectTarget, target: Target, secure: bool) -> bytes | None:
    """``redirect``'s Location for a request to ``target`` (see :meth:`RedirectTarget.to`)."""
    location, prefix, scheme = redirect.location, redirect.prefix, redirect.scheme
    if location is not None:
        return location
    path = target.path if target.path[:1] == b"/" else b"/"
    rest = path if redirect.drop_query else path + target.query
    if prefix is not None:
        base = prefix.rstrip(b"/")
        if not base:  # a relative prefix of "/": the path alone, never "//host" (the path is normal: no "//")
            return _uri_safe(rest)
        return _uri_safe(base + rest)
    assert scheme is not None  # the config has exactly one of the three
    host = target.host
    if not host:
        return None
    host = _default_port_stripped(host, b":443" if secure else b":80")
    return _uri_safe(scheme + b"://" + host + rest)
