"""Hosts and request targets: what is valid, and the one normalised form routes match and origins receive.

A Host (or an absolute target's authority) is an IPv6 literal in brackets, or a name of
RFC 3986 unreserved characters in non-empty dot-separated labels (an IPv4 address is
one), with an optional trailing dot and an optional port. Sub-delimiters and
percent-encoding, which no DNS name uses, are refused rather than interpreted, so the
proxy and an origin cannot read two different hosts in one value.

A path is normalised once: percent-encoded unreserved characters are decoded (other
escapes are kept, in upper case: ``%2F`` stays a character of its segment, never a
separator), empty segments are merged, and ``.`` and ``..`` segments are resolved; a
segment whose name before ``;`` is empty, ``.`` or ``..`` counts as one (the parameters
go with it), as servers that strip path parameters would read it. A backslash, a
fragment, a broken escape, or an encoded slash or backslash next to a dot or empty
segment (``..%2F``: a path that an origin decoding it would resolve differently) is
refused. The query is kept as it came.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import HTTPError, quoted

if TYPE_CHECKING:
    from ._request import RequestHead

_HOST = re.compile(
    rb"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>(?:[A-Za-z0-9_~-]+\.)*[A-Za-z0-9_~-]+\.?))"
    rb"(?::(?P<port>[0-9]{1,5}))?"
)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_ENCODED_SEPARATOR = re.compile(rb"%2F|%5C")
#: What a path needs for normalisation to change it, or to refuse it.
_ABNORMAL = re.compile(rb"%|/[./;]|\\")


@functools.lru_cache(maxsize=1024)  # a connection sends the same few Host values; checking one costs about 1 µs
def valid_host(value: bytes) -> bool:
    """Whether ``value`` is a valid non-empty Host value: host, optional ``:port``."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    port = match["port"]
    if port is not None and int(port) > 65535:
        return False
    ipv6 = match["ipv6"]
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6.decode("ascii"))
        except ValueError:
            return False
    return True


def route_host(host: bytes) -> bytes:
    """A valid host as routes match it: lower case, without port or trailing dot."""
    host = host.lower()
    if host[:1] == b"[":
        return host[: host.index(b"]") + 1]
    if b":" in host:
        host = host.partition(b":")[0]
    return host[:-1] if host[-1:] == b"." else host


def split_absolute(target: bytes) -> tuple[bytes, bytes] | None:
    """``(authority, rest)`` of an ``http://`` or ``https://`` target (``rest`` starting with ``/``), else None."""
    lower = target[:8].lower()
    if lower[:7] == b"http://":
        rest = target[7:]
    elif lower == b"https://":
        rest = target[8:]
    else:
        return None
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        found = rest.find(stop)
        if 0 <= found < end:
            end = found
    authority, rest = rest[:end], rest[end:]
    return authority, rest if rest[:1] == b"/" else b"/" + rest


def normalise_path(path: bytes) -> bytes:
    """``path`` (absolute, without query) in normal form; :class:`HTTPError` 400 if it is not a valid path."""
    if _ABNORMAL.search(path) is None:
        return path  # already normal: the usual case, kept cheap
    if b"\\" in path:
        raise HTTPError(400, "a backslash in the request path")
    if b"%" in path:
        path = _decode_unreserved(path)
    segments = path.split(b"/")[1:]
    kept: list[bytes] = []
    last = len(segments) - 1
    trailing = False
    for index, segment in enumerate(segments):
        name = segment.partition(b";")[0]
        if name == b"..":
            if kept:
                kept.pop()
        elif name != b"." and name != b"":
            if b"%2F" in segment or b"%5C" in segment:
                _check_encoded_separators(segment)
            kept.append(segment)
            continue
        trailing = index == last  # a path ending in a removed segment still names a directory
    normal = b"/" + b"/".join(kept)
    return normal + b"/" if trailing and kept else normal


def _check_encoded_separators(segment: bytes) -> None:
    """Refuse a segment that an origin decoding ``%2F`` or ``%5C`` into a separator would read as a dot or empty one."""
    for part in _ENCODED_SEPARATOR.split(segment):
        if part.partition(b";")[0] in (b"", b".", b".."):
            raise HTTPError(400, "an encoded slash next to a dot or empty segment in the request path")


def without_params(path: bytes) -> bytes:
    """A normal ``path`` without the ``;`` parameters of its segments."""
    if b";" not in path:
        return path
    return b"/".join(segment.partition(b";")[0] for segment in path.split(b"/"))


def _decode_unreserved(path: bytes) -> bytes:
    parts = path.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            raise HTTPError(400, "a broken percent-escape in the request path")
        octet = int(part[:2], 16)
        if octet == 0:
            raise HTTPError(400, "an encoded NUL in the request path")
        if octet in _UNRESERVED:
            out.append(bytes((octet,)) + part[2:])
        else:
            out.append(b"%" + part[:2].upper() + part[2:])
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Target:
    """A reverse-proxied request's destination as its origin receives it and routes match it.

    ``host`` is the Host value to send (an absolute target's authority replaces the Host
    header); ``path`` the normalised path; ``query`` the query with its ``?``, or empty.
    """

    host: bytes | None
    path: bytes
    query: bytes
    absolute: bool
    origin_form: bytes = field(init=False)  # path and query, as the origin gets them: made once per target

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_form", self.path + self.query)

    @property
    def route_host(self) -> bytes:
        """The host routes compare: lower case, without port or trailing dot."""
        host = self.host
        return route_host(host) if host else b""

    @property
    def route_path(self) -> bytes:
        """The path routes compare: without segment parameters, so ``/internal;x/`` is ``/internal/`` to them,
        as it is to a server that strips parameters."""
        return without_params(self.path)


#: Targets resolved lately, by request target and Host: most requests repeat a few, whose checks and normal form
#: need working out once. Bounded: emptied when full.
_RESOLVED: dict[tuple[bytes, bytes | None], Target] = {}
_RESOLVED_MAX = 512
_CACHED_LENGTH = 256  # longer targets are rarely repeated, and would make the cache large


def resolve(head: RequestHead) -> Target:
    """``head``'s :class:`Target`, worked out once; :class:`HTTPError` 400 if it has none."""
    target = head.resolved
    if target is not None:
        return target
    raw = head.target
    host = head.host
    key = (raw, host)
    target = _RESOLVED.get(key)
    if target is None:
        target = _resolve(raw, host, head.method)
        if raw != b"*" and len(raw) <= _CACHED_LENGTH:  # "*" means something for OPTIONS only
            if len(_RESOLVED) >= _RESOLVED_MAX:
                _RESOLVED.clear()
            _RESOLVED[key] = target
    head.resolved = target
    return target


def _resolve(raw: bytes, host: bytes | None, method: bytes) -> Target:
    if raw == b"*" and method == b"OPTIONS":
        return Target(host, b"*", b"", False)
    absolute = split_absolute(raw) if raw[:1] != b"/" else None
    if absolute is not None:
        host, raw = absolute
        if not valid_host(host):
            raise HTTPError(400, f"invalid authority {quoted(host)} in the request target")
    elif raw[:1] != b"/":
        raise HTTPError(400, f"request target {quoted(raw)} is not in origin form")
    if b"#" in raw:
        raise HTTPError(400, "a fragment in the request target")
    path, mark, query = raw.partition(b"?")
    return Target(host, normalise_path(path), mark + query, absolute is not None)
