"""The client's opening handshake, checked as RFC 6455 section 4.2.1 asks, before any backend is contacted."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..http import Headers, HTTPError, RequestHead, ResponseHead, quoted

VERSION = b"13"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Request headers that describe the client's own WebSocket (key, offers), not the application's request.
HANDSHAKE_HEADERS = frozenset(
    (b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol")
)
_PROTOCOL_ONLY = frozenset((b"sec-websocket-protocol",))


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid WebSocket upgrade request, as the proxy needs it."""

    key: bytes
    protocols: tuple[str, ...]  # offered subprotocols that the policy allows, in the client's order
    origin: str | None
    extensions: tuple[bytes, ...]  # the client's Sec-WebSocket-Extensions values, as sent


def check_upgrade(head: RequestHead, origins: Sequence[str] = (), subprotocols: Sequence[str] = ()) -> Upgrade:
    """Validate a WebSocket upgrade; raises :class:`HTTPError` 400, 403 or 426 to refuse it.

    ``origins`` and ``subprotocols`` are allowlists; empty allows any. Offered
    subprotocols outside the allowlist are withheld from the backend, and a client
    that offered some but none allowed is refused.
    """
    _check_form(head)
    keys: list[bytes] = []
    versions: list[bytes] = []
    offered: list[str] = []
    extensions: list[bytes] = []
    origin: str | None = None
    for name, value in head.headers:
        lower = name.lower()
        if lower[:14] != b"sec-websocket-" and lower != b"origin":
            continue
        if lower == b"sec-websocket-key":
            keys.append(value.strip())
        elif lower == b"sec-websocket-version":
            versions.append(value.strip())
        elif lower == b"sec-websocket-protocol":
            offered.extend(token.strip().decode("latin-1") for token in value.split(b",") if token.strip())
        elif lower == b"sec-websocket-extensions":
            extensions.append(value)
        elif lower == b"origin":
            origin = value.strip().decode("latin-1")
    _check_offer(versions, keys, origin, origins)
    return Upgrade(keys[0], _allowed_protocols(offered, subprotocols), origin, tuple(extensions))


def _check_form(head: RequestHead) -> None:
    """The request itself: a bodiless HTTP/1.1 GET asking for an upgrade."""
    if head.method != b"GET":
        raise HTTPError(400, f"a WebSocket upgrade must be GET, not {head.method.decode('latin-1')}")
    if head.version == b"1.0":  # HTTP/1.1, or an HTTP/2 extended CONNECT (RFC 8441) read as one
        raise HTTPError(400, "a WebSocket upgrade must be HTTP/1.1")
    if b"upgrade" not in head.connection:
        raise HTTPError(400, "a WebSocket upgrade needs Connection: upgrade")
    if head.has_body:
        raise HTTPError(400, "a WebSocket upgrade cannot carry a body")


def _check_offer(versions: list[bytes], keys: list[bytes], origin: str | None, origins: Sequence[str]) -> None:
    """The handshake's version (13), its one key, and its origin if ``origins`` limits them."""
    if versions != [VERSION]:
        raise HTTPError(
            426, f"unsupported Sec-WebSocket-Version {quoted(b', '.join(versions))}", b"Sec-WebSocket-Version: 13\r\n"
        )
    if len(keys) != 1 or not _is_key(keys[0]):
        raise HTTPError(400, "a WebSocket upgrade needs one Sec-WebSocket-Key of 16 base64-encoded bytes")
    if origins and origin not in origins:
        raise HTTPError(403, f"Origin {quoted(origin)} is not allowed" if origin is not None else "an upgrade without Origin is not allowed here")


def _allowed_protocols(offered: list[str], subprotocols: Sequence[str]) -> tuple[str, ...]:
    """The offered subprotocols the allowlist allows (all when it is empty); refused if none of some is."""
    protocols = tuple(p for p in offered if p in subprotocols) if subprotocols else tuple(offered)
    if offered and not protocols:
        raise HTTPError(400, f"none of the offered subprotocols {offered} is allowed")
    return protocols


def _is_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


class _RandomKeys:
    """Random bytes for keys, read from the system 4 KiB at a time (a system call per key would be one of the
    costliest parts of a dial); read anew in a forked child, which must not hand out its parent's."""

    __slots__ = ("_bytes", "_at")

    def __init__(self) -> None:
        self._bytes = b""
        self._at = 0
        os.register_at_fork(after_in_child=self.drop)

    def take(self, size: int) -> bytes:
        at = self._at
        if at + size > len(self._bytes):
            self._bytes, at = os.urandom(4096), 0
        self._at = at + size
        return self._bytes[at:at + size]

    def drop(self) -> None:
        self._bytes, self._at = b"", 0


_KEYS = _RandomKeys()


def new_key() -> bytes:
    """A fresh Sec-WebSocket-Key for the proxy's own handshake with a backend: 16 random bytes, base64-encoded."""
    return base64.b64encode(_KEYS.take(16))


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept value that answers ``key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def backend_handshake(forward: Headers, upgrade: Upgrade, key: bytes | None, offers: bytes = b"") -> tuple[Headers, bytes]:
    """The request headers for the backend's handshake, as (end-to-end headers, handshake lines).

    With ``key`` None (tunnel mode) the client's own key and extension offers go
    through, since the backend's answer is relayed to the client. Otherwise
    (session mode) the proxy's ``key`` and extension ``offers`` replace them.
    Offered subprotocols are the allowed ones in both.
    """
    drop = HANDSHAKE_HEADERS if key is not None else _PROTOCOL_ONLY
    headers = [pair for pair in forward if pair[0].lower() not in drop]
    lines = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    if key is not None:
        lines += b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % key
        if offers:
            lines += b"Sec-WebSocket-Extensions: %s\r\n" % offers
    if upgrade.protocols:
        lines += b"Sec-WebSocket-Protocol: %s\r\n" % ", ".join(upgrade.protocols).encode("latin-1")
    return headers, lines


def check_switch(head: ResponseHead, key: bytes, offered: Sequence[str]) -> str | None:
    """What is wrong with a backend's 101 to a handshake sent with ``key``, or None."""
    upgrade = accept = protocol = None
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"upgrade":
            upgrade = value.strip().lower()
        elif lower == b"sec-websocket-accept":
            accept = value.strip()
        elif lower == b"sec-websocket-protocol":
            protocol = value.strip().decode("latin-1")
    if upgrade != b"websocket":
        return f"Upgrade is {quoted(upgrade)}, not websocket" if upgrade is not None else "no Upgrade header"
    if b"upgrade" not in head.connection:
        return "Connection does not name upgrade"
    if accept != accept_key(key):
        return "Sec-WebSocket-Accept does not answer the key"
    if protocol is not None and protocol not in offered:
        return f"it chose subprotocol {protocol!r}, which was not offered"
    return None
