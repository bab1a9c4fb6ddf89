"""Reading Engine.IO (v4, v3) and Socket.IO framing, cheaply: a WebSocket session's text messages, and the
packets of long-polling bodies (the handshake's open packet, what a session sent before it upgraded).

Only what a resume needs is read: the packet type (the first byte), and for an open packet (``0``) its JSON,
for a Socket.IO packet (``4``) its type, namespace and ack id. Everything else, binary messages included
(attachments of ``45-``/``46-`` packets), is passed on unread. Nothing here raises on hostile input: what
cannot be read is not Engine.IO as far as the proxy is concerned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

OPEN, CLOSE, PING, PONG, MESSAGE = 0x30, 0x31, 0x32, 0x33, 0x34  # "0" .. "4"
# Socket.IO packet types, the byte after the Engine.IO "4"
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = b"0123456"
DEFAULT_NAMESPACE = b"/"
#: An open packet is small; a longer "0..." message is not read.
OPEN_LIMIT = 4096
#: What the proxy keeps of a session's Socket.IO namespaces: how many, and how big a CONNECT (its auth).
MAX_NAMESPACES, MAX_CONNECT = 64, 64 << 10
#: Ack ids longer than this many digits are not read (a JavaScript client's ids stay far below).
_ACK_DIGITS = 15
# A Socket.IO packet's head after the Engine.IO "4": its type; a binary one's attachment count and "-"; a namespace
# up to its "," (a namespace without one runs to the end, and no ack id follows it); the ack id's digits, one more
# than are read (an id that long is not one).
_NAMESPACE_AND_ACK = rb"(?:(/[^,]*)(?:,|\Z))?([0-9]{1,%d})?" % (_ACK_DIGITS + 1)
_HEAD = re.compile(rb"4[0-4]" + _NAMESPACE_AND_ACK, re.DOTALL)
_BINARY_HEAD = re.compile(rb"4[56][0-9]{1,11}-" + _NAMESPACE_AND_ACK, re.DOTALL)
_EIO = re.compile(rb"[?&]EIO=(\d+)")
_SID = re.compile(rb"[?&]sid=([^&#]+)")
_DECODER = json.JSONDecoder()
#: v3's text payload: ``<length>:<packet>`` repeated, the length in characters.
_V3_LENGTH = re.compile(r"(\d{1,9}):")


@dataclass(frozen=True, slots=True)
class OpenPacket:
    """What an Engine.IO open packet says: the session id and the heartbeat (seconds)."""

    sid: str
    ping_interval: float
    ping_timeout: float


class SocketIOPacket(NamedTuple):
    """The head of a Socket.IO packet: its type (a byte of ``0``-``6``), namespace and ack id (None: none). A tuple,
    made in C for each message a Socket.IO session passes."""

    kind: int
    namespace: bytes
    ack: int | None


_new_tuple = tuple.__new__  # a SocketIOPacket made in C, every field given in order (its own __new__ is a Python call)


def version(target: bytes) -> int | None:
    """The Engine.IO protocol version a request target's query names (``EIO=4``), or None."""
    found = _EIO.search(target)
    return int(found.group(1)) if found else None


def has_sid(target: bytes) -> bool:
    """Whether a request target names an Engine.IO session (an upgrade from polling)."""
    return sid_of(target) is not None


def sid_of(target: bytes) -> bytes | None:
    """The Engine.IO session id a request target names (``sid=``), or None (a handshake): the first one, decoded,
    as an Engine.IO server reads its query (so ``sid=%61`` is ``a``, and ``%73id=a`` names it too)."""
    if b"%" in target or b"+" in target:
        return _decoded_sid(target)
    found = _SID.search(target)
    return found.group(1) if found else None


def _decoded_sid(target: bytes) -> bytes | None:
    query = target.partition(b"?")[2].partition(b"#")[0]
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if unquote_to_bytes(name.replace(b"+", b" ")) == b"sid":
            return unquote_to_bytes(value.replace(b"+", b" ")) or None
    return None


def without_sid(handshake: bytes) -> bytes:
    """A raw upgrade request with the ``sid`` query parameter taken off its request line (a new Engine.IO
    session, not the one the lost server knew)."""
    line, sep, rest = handshake.partition(b"\r\n")
    method, _, tail = line.partition(b" ")
    target, _, proto = tail.rpartition(b" ")
    path, mark, query = target.partition(b"?")
    if not mark:
        return handshake
    kept = b"&".join(part for part in query.split(b"&") if not part.startswith(b"sid="))
    target = path + (b"?" + kept if kept else b"")
    return b"%s %s %s%s%s" % (method, target, proto, sep, rest)


def open_packet(payload: bytes) -> OpenPacket | None:
    """An open packet (``0{"sid":...,"pingInterval":...,"pingTimeout":...}``), read; None if it is not one."""
    if len(payload) > OPEN_LIMIT or payload[:2] != b"0{":
        return None
    try:
        data = json.loads(payload[1:])
    except ValueError:
        return None
    return _open(data)


def polling_open_packet(body: bytes) -> OpenPacket | None:
    """The open packet at the start of a polling handshake response body, if it is one.

    v4 sends ``0{"sid":...}``; v3 frames packets as ``<length>:0{...}`` (text) or with a binary length prefix;
    in each case the open packet is a ``0`` followed by JSON, within the first bytes.
    """
    start = body.find(b"0{")
    if start < 0 or start > 16:
        return None
    try:
        data, _ = _DECODER.raw_decode(body[start + 1 :].decode("utf-8", "replace"))
    except ValueError:
        return None
    return _open(data)


def polling_packets(body: bytes, version: int) -> list[bytes] | None:
    """The packets of a long-polling payload: v4's are separated by ``\\x1e``, v3's framed ``<length>:<packet>``;
    None if it cannot be read (v3's binary framing, a length that does not fit)."""
    if version >= 4:
        return body.split(b"\x1e")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    packets, at = [], 0
    while at < len(text):
        found = _V3_LENGTH.match(text, at)
        if found is None:
            return None
        at, end = found.end(), found.end() + int(found.group(1))
        if end > len(text):
            return None
        packets.append(text[at:end].encode())
        at = end
    return packets


def _open(data: object) -> OpenPacket | None:
    if not isinstance(data, dict):
        return None
    sid, interval, timeout = data.get("sid"), _seconds(data.get("pingInterval")), _seconds(data.get("pingTimeout"))
    if not isinstance(sid, str) or interval is None or timeout is None:
        return None
    return OpenPacket(sid, interval, timeout)


def _seconds(milliseconds: object) -> float | None:
    """A heartbeat setting in milliseconds, in seconds; None if it is not a sane one (from 10 ms, under a day:
    the proxy pings a moving session's client at the interval, so a tiny one would flood it)."""
    if isinstance(milliseconds, (int, float)) and not isinstance(milliseconds, bool) and 10 <= milliseconds < 86_400_000:
        return milliseconds / 1000  # python-engineio sends 500.0 for a ping interval set as 0.5 s
    return None


def socketio_packet(payload: bytes) -> SocketIOPacket | None:
    """The head of the Socket.IO packet an Engine.IO message (``4...``) carries; None if it is not one.

    ``4<type>[<attachments>-][/<namespace>,][<ack id>]<data>``: v5 and v4 of Socket.IO alike (v4's namespace
    may carry a query, ``/chat?x=1``, which is not part of its name).
    """
    if len(payload) < 2 or payload[0] != MESSAGE:
        return None
    kind = payload[1]
    found = (_BINARY_HEAD if kind == BINARY_EVENT or kind == BINARY_ACK else _HEAD).match(payload)
    if found is None:
        return None
    namespace, ack = found.group(1, 2)
    if namespace is None:
        namespace = DEFAULT_NAMESPACE
    elif b"?" in namespace:
        namespace = namespace.partition(b"?")[0]
    return _new_tuple(SocketIOPacket, (kind, namespace, int(ack) if ack is not None and len(ack) <= _ACK_DIGITS else None))


def session_version(setting: str, target: bytes) -> int | None:
    """The Engine.IO version a session is read as, by its backend's ``engineio`` setting and its upgrade's
    target; None when it is not read (``off``, or ``auto`` and no ``EIO=`` of version 3 or 4)."""
    if setting == "off":
        return None
    found = version(target)
    if found in (3, 4):
        return found
    return 4 if setting == "on" and found is None else None
