"""Header lists and the rules for which headers cross the proxy.

A header list is ``list[tuple[bytes, bytes]]`` in wire order with the original case,
so a relayed message keeps its shape.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

#: One empty frozenset to share: ``frozenset()`` makes a new 216-byte object each time.
NONE: frozenset = frozenset()

#: Headers that describe one connection and never cross the proxy (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection")
)

#: The forwarding headers the proxy writes itself about each request's client.
FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"))
#: Headers servers commonly take a client's address, scheme or port from, which the proxy does not write:
#: a client that sends them would speak for itself where only a proxy should.
CLIENT_CLAIMS = frozenset((b"x-forwarded-port", b"x-real-ip", b"x-client-ip"))


def spellings(names: Iterable[bytes]) -> frozenset[bytes]:
    """``names`` (lower case) in every spelling with any ``-`` written ``_``: WSGI and CGI servers read
    ``X_Forwarded_For`` as ``HTTP_X_FORWARDED_FOR``, the same as ``X-Forwarded-For``."""
    out: set[bytes] = set()
    for name in names:
        variants = [b""]
        for index, part in enumerate(name.lower().replace(b"_", b"-").split(b"-")):
            joins = (b"",) if index == 0 else (b"-", b"_")
            variants = [variant + join + part for variant in variants for join in joins]
        out.update(variants)
    return frozenset(out)


#: Connection tokens that name no header to remove.
CONNECTION_OPTIONS = frozenset((b"close", b"keep-alive", b"upgrade"))

#: Headers a ``Connection`` header may never remove: they frame the message or name its host.
#: A request naming one is refused; a response's framing is the proxy's own to write.
FRAMING_OPTIONS = frozenset((b"content-length", b"transfer-encoding", b"host"))


_COMMON_CONNECTION = {b"keep-alive": frozenset((b"keep-alive",)), b"close": frozenset((b"close",))}


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The lower-cased tokens of a ``Connection`` header value."""
    common = _COMMON_CONNECTION.get(value.lower())
    if common is not None:
        return common
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def drop_listed(headers: Headers, connection: frozenset[bytes]) -> Headers:
    """``headers`` without those the ``Connection`` header named (a rare second pass); framing headers stay."""
    listed = connection - CONNECTION_OPTIONS - FRAMING_OPTIONS
    if not listed:
        return headers
    return [(name, value) for name, value in headers if name.lower() not in listed]


_LINE = b": ".join
_LINES = b"\r\n".join


def serialize_headers(headers: Headers) -> bytes:
    """Headers as wire bytes, each line ending in CRLF (no final blank line)."""
    return _LINES([*map(_LINE, headers), b""])  # joins in C: no comprehension frame, no format per line
