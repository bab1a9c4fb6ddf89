"""Header lists and the rules for which headers cross the proxy.

A header list is ``list[tuple[bytes, bytes]]`` in wire order with the original case,
so a relayed message keeps its shape.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

#: Headers that describe one connection and never cross the proxy (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection")
)

#: Headers a local client might send to impersonate a trusted proxy's view of it.
FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"))


def connection_tokens(value: bytes) -> set[bytes]:
    """The lower-cased tokens of a ``Connection`` header value."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def end_to_end(headers: Headers, listed: set[bytes], also_drop: frozenset[bytes] = frozenset()) -> Headers:
    """``headers`` without hop-by-hop ones, those ``Connection`` listed, ``Proxy-*`` and ``also_drop``."""
    kept = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed or lower in also_drop or lower.startswith(b"proxy-"):
            continue
        kept.append((name, value))
    return kept


def serialize_headers(headers: Headers) -> bytes:
    """Headers as wire bytes, each line ending in CRLF (no final blank line)."""
    return b"".join([name + b": " + value + b"\r\n" for name, value in headers])
