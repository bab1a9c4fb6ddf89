"""Header lists and the rules for which headers cross the proxy.

A header list is ``list[tuple[bytes, bytes]]`` in wire order with the original case,
so a relayed message keeps its shape.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

#: One empty frozenset to share: ``frozenset()`` makes a new 216-byte object each time.
NONE: frozenset = frozenset()  # type: ignore[type-arg]

#: Headers that describe one connection and never cross the proxy (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection")
)

#: Headers a local client might send to impersonate a trusted proxy's view of it.
FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"))


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


def serialize_headers(headers: Headers) -> bytes:
    """Headers as wire bytes, each line ending in CRLF (no final blank line)."""
    return b"".join([b"%s: %s\r\n" % pair for pair in headers])
