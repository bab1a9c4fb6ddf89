"""A session-mode WebSocket's record as it crosses to another process in an upgrade: version 1, JSON-encodable.

Bytes travel as latin-1 strings (the handshakes, header values: every byte maps to one character) or, for
payloads and raw stream bytes, base64. :func:`read_record` refuses (:class:`~rubrisproxy.transfer.Refused`)
anything it does not read whole, so a record of another shape leaves the session where it was.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..transfer import Refused
from ._hooks import Message

#: The record versions this code writes and reads.
VERSION = 1
VERSIONS = frozenset((VERSION,))


@dataclass(frozen=True)
class SessionRecord:
    """What a session is made of again in the new process (see ``docs/websocket.md``, "Upgrades and session mode").

    ``request``: the client's upgrade request as it sent it (method, target, version, headers as latin-1 pairs);
    ``handshake``: the backend handshake every new backend leg is opened with (``key`` where the proxy's key
    goes); ``answer``: the subprotocol and headers the client was answered with; ``extensions``: what the
    client leg negotiated, as the header says it; ``held``: the client's messages waiting for a backend leg, in
    order; ``unread``: bytes read from the client and not parsed yet (the start of its next frame),
    ``unsent``: bytes written to the client that the kernel had not taken; ``inflate_window``: the plaintext the
    client's permessage-deflate compressor may still refer to (the new inflater is primed with it; what the proxy
    compresses starts afresh, which the client's inflater takes as it is); ``log``: what the request's
    access-log line needs (its fields as the old process had them, when it began, the bytes so far).
    """

    session_id: str
    backend: str
    state: str  # what it was doing when asked to move: "open", "moving" or "resuming"
    reason: str  # why it moves, as the log says it
    moved_from: str | None  # the server its last backend leg was on, tried last
    request: Mapping[str, Any]
    handshake: str
    key: str
    protocols: list[str]
    origin: str | None
    offered_extensions: list[str]
    protocol: str | None
    answer_headers: Mapping[str, list[str]]
    extensions: str
    resumes: int
    messages_in: int
    messages_out: int
    idle: float | None  # seconds left before its idle timeout
    held: list[tuple[str, bool]]
    unread: str
    unsent: str
    inflate_window: str  # what the client's compressor may still refer to (its context takeover), base64
    #: The backend's connection, when it crosses too: its server, the 101 its leg opened on and the key it answered,
    #: its negotiated extensions, its unread and unsent bytes and inflate window (as the client's above); None when
    #: the new process opens a backend leg through the resume path.
    backend_socket: Mapping[str, Any] | None
    log: Mapping[str, Any]
    engineio: Mapping[str, Any] | None

    def encoded(self) -> dict[str, object]:
        """The record as JSON takes it."""
        return {"version": VERSION, **asdict(self)}

    @property
    def held_messages(self) -> list[Message]:
        return [Message(b64decode(payload), binary) for payload, binary in self.held]


def encode_messages(messages: list[Message]) -> list[tuple[str, bool]]:
    return [(b64encode(message.payload).decode("ascii"), message.binary) for message in messages]


def latin(data: bytes) -> str:
    return data.decode("latin-1")


def b64(data: bytes) -> str:
    return b64encode(data).decode("ascii")


_FIELDS = tuple(field.name for field in fields(SessionRecord))


def read_record(version: int, record: Mapping[str, object]) -> SessionRecord:
    """The record of version ``version``, or :class:`Refused` when this code does not read it."""
    if version not in VERSIONS:
        raise Refused(f"session record version {version}: this rubrisproxy reads {sorted(VERSIONS)}")
    missing = [name for name in _FIELDS if name not in record]
    if missing:
        raise Refused(f"session record without {', '.join(missing)}")
    values: dict[str, Any] = {name: record[name] for name in _FIELDS}
    values["held"] = [(str(payload), bool(binary)) for payload, binary in values["held"]]
    return SessionRecord(**values)
