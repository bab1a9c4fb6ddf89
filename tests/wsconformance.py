"""WebSocket conformance cases, modelled on the Autobahn|Testsuite case families, run over real sockets.

Each :class:`Case` opens its own connection with a raw client (:class:`WSClient`) that performs the
opening handshake itself and can send any frame, valid or not (always masked, as a client must).
The families follow wstest's numbering:

- 1.*  framing: text and binary payloads of 0..65536 bytes (7-bit, 16-bit and 64-bit lengths),
  and lengths in a longer encoding than needed;
- 2.*  pings: pongs echo the ping payload, 125-byte limit, unsolicited pongs, fragmented pings;
- 3.*  reserved bits: RSV1/2/3 without a negotiated extension fail the connection;
- 4.*  opcodes: reserved data (3-7) and control (0xB-0xF) opcodes fail the connection;
- 5.*  fragmentation: reassembly, control frames between fragments, stray continuations;
- 6.*  UTF-8: valid text (also split inside a code point) is echoed, invalid text fails with 1007;
- 7.*  closing handshake: close payloads, valid and invalid codes, reasons, frames after a close;
- 9.*  large messages up to 8 MiB, as one frame and as 64 KiB frames (9.9.* in ``LIMIT_CASES``:
  a message over the backend's limit fails with 1009);
- 10.* a message split into 1-byte frames.

What a case observed is a :class:`Verdict`: the messages received (data messages reassembled, so a
proxy may re-fragment them; pongs with their payload), the code of the close frame received, and how
the connection ended ("open" once the final barrier message came back, "closed" when the peer ended
the TCP connection, "stalled" when neither happened in the case's time budget, "refused" when the
opening handshake failed). Verdicts are frozen dataclasses, so two runs compare with ``==``.

Each case also lists the verdicts RFC 6455 allows (``Case.expected``; the first is the strict one:
for instance failing the connection may be done with a close frame or by dropping TCP).

Targets: :func:`conformance_backend` makes the echo backend from ``tests/wsecho.py`` configured for
these cases (16 MiB limits; failures send their close code; no close-handshake timer). Run the
cases directly with ``run_all(port)``. To add a proxy target, put the proxy in front of such a
backend, run ``run_all(proxy_port, path=...)`` and assert its verdicts equal the direct ones, and that
``mismatches(CASES, verdicts)`` is empty. ``LIMIT_CASES`` need a backend made with
``conformance_backend(LIMITED_MESSAGE_SIZE)``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from .wsecho import EchoBackendFactory

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

OPEN, CLOSED, STALLED, REFUSED = "open", "closed", "stalled", "refused"

NO_STATUS = 1005  # the close code recorded for a close frame without payload
BARRIER = b"wsconformance barrier"
HANDSHAKE_TIMEOUT = 2.0
SHUTDOWN_TIMEOUT = 1.0
KiB, MiB = 1024, 1024 * 1024
DEFAULT_MESSAGE_SIZE = 16 * MiB
LIMITED_MESSAGE_SIZE = 1 * MiB

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KINDS = {OP_TEXT: "text", OP_BINARY: "binary"}


def conformance_backend(max_message_size: int = DEFAULT_MESSAGE_SIZE) -> EchoBackendFactory:
    """An echo backend configured as the expected verdicts assume.

    ``failByDrop=False``: a failure sends its close code before the drop (Autobahn's default drops TCP
    at once, losing echoes still queued). ``closeHandshakeTimeout=0``: the backend waits for the close
    reply instead of dropping after 1 s, so a reply that never arrives shows as "stalled"; Autobahn also
    leaves that timer pending after some failed connections, which trial reports as a dirty reactor.
    """
    factory = EchoBackendFactory()
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_message_size, maxFramePayloadSize=max_message_size,
        failByDrop=False, closeHandshakeTimeout=0,
    )
    return factory


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (its own inverse)."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


@dataclass(frozen=True)
class Frame:
    """A frame as the client sends it; ``length_bits`` (16 or 64) forces a longer length encoding."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    length_bits: int | None = None

    def encode(self, mask: bytes) -> bytes:
        size = len(self.payload)
        head = bytes([(0x80 if self.fin else 0) | (self.rsv & 7) << 4 | (self.opcode & 0xF)])
        bits = self.length_bits or (7 if size < 126 else 16 if size < 0x10000 else 64)
        if bits == 7:
            head += bytes([0x80 | size])
        elif bits == 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", size)
        return head + mask + mask_payload(self.payload, mask)


@dataclass(frozen=True)
class Received:
    """One message as received: kind, size, and the payload (short) or a digest of it."""

    kind: str
    size: int
    digest: str

    @classmethod
    def of(cls, kind: str, payload: bytes) -> Received:
        digest = repr(payload) if len(payload) <= 24 else "sha256:" + hashlib.sha256(payload).hexdigest()[:16]
        return cls(kind, len(payload), digest)

    def __str__(self) -> str:
        return f"{self.kind}({self.digest})" if self.size <= 24 else f"{self.kind}[{self.size}]({self.digest})"


@dataclass(frozen=True)
class Verdict:
    """What a case observed, independent of frame boundaries and timing.

    ``close`` is the code of the first close frame received (``NO_STATUS`` for an empty one, None for
    none); its reason is not recorded, as an intermediary failing the connection words it differently.
    """

    messages: tuple[Received, ...] = ()
    close: int | None = None
    ending: str = OPEN

    def __str__(self) -> str:
        messages = ", ".join(str(m) for m in self.messages)
        return f"[{messages}] close={self.close} {self.ending}"


@dataclass(frozen=True)
class Case:
    """A conformance case: frames to send (made on demand) and the verdicts that conform."""

    id: str
    description: str
    steps: Callable[[], Iterable[Frame]]
    expected: tuple[Verdict, ...]
    timeout: float = 2.0

    def conforms(self, verdict: Verdict) -> bool:
        return verdict in self.expected


@dataclass
class _Waiter:
    condition: Callable[[], bool]
    deferred: Deferred[bool]
    call: IDelayedCall | None = field(default=None)


class WSClient(Protocol):
    """A raw WebSocket client: sends any frame, records reassembled messages and the close."""

    def __init__(self, host: bytes, path: bytes, clock: IReactorTime) -> None:
        self.host = host
        self.path = path
        self.clock = clock
        self.key = base64.b64encode(os.urandom(16))
        self.upgraded: bool | None = None
        self.messages: list[Received] = []
        self.close_code: int | None = None
        self.close_sent = False
        self.barriers = 0
        self.lost = False
        self._buffer = bytearray()
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._waiters: list[_Waiter] = []

    @property
    def tcp(self) -> ITCPTransport:
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        self.tcp.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (self.path, self.host, self.key)
        )

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self.upgraded is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self.upgraded = self._handshake_ok(head)
            if not self.upgraded:
                self.tcp.abortConnection()
        if self.upgraded:
            self._parse()
        self._notify()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True
        self._notify()

    def send(self, frame: Frame) -> None:
        """Send one frame, masked with a fresh key."""
        if self.lost:
            return
        self.tcp.write(frame.encode(os.urandom(4)))
        if frame.opcode == OP_CLOSE:
            self.close_sent = True

    def wait(self, condition: Callable[[], bool], timeout: float) -> Deferred[bool]:
        """Fire with ``condition()`` once it holds, the connection is lost, or ``timeout`` passes."""
        waiter = _Waiter(condition, Deferred())
        if self.lost or condition():
            waiter.deferred.callback(condition())
        else:
            waiter.call = self.clock.callLater(timeout, self._expire, waiter)
            self._waiters.append(waiter)
        return waiter.deferred

    async def finish(self, timeout: float) -> Verdict:
        """Send the barrier (unless a close was sent) and wait for it or for the end of the connection."""
        if not self.close_sent:
            self.send(Frame(OP_TEXT, BARRIER))
        await self.wait(lambda: self.lost or (self.barriers > 0 and self.close_code is None), timeout)
        if self.lost:
            ending = CLOSED
        elif self.barriers and self.close_code is None:
            ending = OPEN
        else:
            ending = STALLED
        return Verdict(tuple(self.messages), self.close_code, ending)

    async def shutdown(self) -> None:
        """Close with 1000 if still open, then abort after a short bound; returns once the connection is lost."""
        if self.lost:
            return
        if not self.close_sent and self.upgraded:
            self.send(Frame(OP_CLOSE, struct.pack("!H", 1000)))
        if not await self.wait(lambda: self.lost, SHUTDOWN_TIMEOUT):
            self.tcp.abortConnection()
            await self.wait(lambda: self.lost, SHUTDOWN_TIMEOUT)

    def _handshake_ok(self, head: bytes) -> bool:
        status, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + _GUID).digest())
        return (
            status.split(b" ")[1:2] == [b"101"]
            and headers.get(b"upgrade", b"").lower() == b"websocket"
            and headers.get(b"sec-websocket-accept") == accept
            and b"sec-websocket-extensions" not in headers
        )

    def _parse(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2 and not self.lost:
            size, start = buffer[1] & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = struct.unpack_from("!H", buffer, 2)[0], 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = struct.unpack_from("!Q", buffer, 2)[0], 10
            masked = bool(buffer[1] & 0x80)
            if masked:
                start += 4
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            if masked:
                payload = mask_payload(payload, bytes(buffer[start - 4 : start]))
            first = buffer[0]
            del buffer[: start + size]
            problem = self._frame(bool(first & 0x80), first >> 4 & 7, first & 0xF, masked, payload)
            if problem:
                self.messages.append(Received("bad-frame", 0, problem))
                self.tcp.abortConnection()
                return

    def _frame(self, fin: bool, rsv: int, opcode: int, masked: bool, payload: bytes) -> str | None:
        """Handle one server frame; returns what is wrong with it, if anything."""
        if masked or rsv:
            return "masked" if masked else f"rsv={rsv}"
        if self.close_code is not None:
            return f"opcode {opcode} after close"
        if opcode >= 8:
            if not fin or len(payload) > 125:
                return "bad control frame"
            return self._control(opcode, payload)
        return self._data(fin, opcode, payload)

    def _data(self, fin: bool, opcode: int, payload: bytes) -> str | None:
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                return "continuation outside a message"
            self._fragments.append(payload)
        elif opcode in _KINDS:
            if self._fragments is not None:
                return "data frame inside a message"
            self._fragments, self._fragment_opcode = [payload], opcode
        else:
            return f"opcode {opcode}"
        if fin:
            message, self._fragments = b"".join(self._fragments), None
            self._message(self._fragment_opcode, message)
        return None

    def _control(self, opcode: int, payload: bytes) -> str | None:
        if opcode == OP_CLOSE:
            if len(payload) == 1:
                return "close payload of 1 byte"
            self.close_code = struct.unpack("!H", payload[:2])[0] if payload else NO_STATUS
            if not self.close_sent:
                self.send(Frame(OP_CLOSE, payload[:2]))
        elif opcode == OP_PING:
            self.messages.append(Received.of("ping", payload))
            if not self.close_sent:
                self.send(Frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            self.messages.append(Received.of("pong", payload))
        else:
            return f"opcode {opcode}"
        return None

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT and payload == BARRIER:
            self.barriers += 1
            return
        kind = _KINDS[opcode]
        if opcode == OP_TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                kind = "invalid-text"
        self.messages.append(Received.of(kind, payload))

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            if self.lost or waiter.condition():
                self._waiters.remove(waiter)
                if waiter.call is not None and waiter.call.active():
                    waiter.call.cancel()
                waiter.deferred.callback(waiter.condition())

    def _expire(self, waiter: _Waiter) -> None:
        self._waiters.remove(waiter)
        waiter.deferred.callback(waiter.condition())


async def _run(case: Case, port: int, path: bytes, host: str) -> Verdict:
    client = WSClient(b"%s:%d" % (host.encode(), port), path, reactor)  # type: ignore[arg-type]
    try:
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=HANDSHAKE_TIMEOUT), client)
    except Exception:
        return Verdict(ending=REFUSED)
    try:
        await client.wait(lambda: client.upgraded is not None, HANDSHAKE_TIMEOUT)
        if not client.upgraded:
            return Verdict(ending=REFUSED)
        for frame in case.steps():
            client.send(frame)
        return await client.finish(case.timeout)
    finally:
        await client.shutdown()


def run_case(case: Case, port: int, path: bytes = b"/", host: str = "127.0.0.1") -> Deferred[Verdict]:
    """Run one case on a fresh connection to ``host:port``; the connection is closed when this fires."""
    return Deferred.fromCoroutine(_run(case, port, path, host))


def mismatches(cases: Sequence[Case], verdicts: dict[str, Verdict]) -> list[str]:
    """One line per case whose verdict is not among its expected ones."""
    return [
        f"{case.id} {case.description}: got {verdicts.get(case.id)}; expected "
        + " or ".join(str(v) for v in case.expected)
        for case in cases
        if verdicts.get(case.id) not in case.expected
    ]


def text(payload: bytes | str) -> Received:
    return Received.of("text", payload.encode() if isinstance(payload, str) else payload)


def binary(payload: bytes) -> Received:
    return Received.of("binary", payload)


def pong(payload: bytes) -> Received:
    return Received.of("pong", payload)


def stays_open(*messages: Received) -> tuple[Verdict, ...]:
    """The messages come back and the connection stays open."""
    return (Verdict(messages, None, OPEN),)


def fails(code: int, *messages: Received) -> tuple[Verdict, ...]:
    """After ``messages``, the connection is failed: a close with ``code``, or a TCP drop (which may lose them)."""
    verdicts = (Verdict(messages, code, CLOSED), Verdict(messages, None, CLOSED))
    return verdicts + (Verdict((), None, CLOSED),) if messages else verdicts


def closes(codes: Iterable[int], *messages: Received) -> tuple[Verdict, ...]:
    """After ``messages``, a closing handshake answered with one of ``codes``."""
    return tuple(Verdict(messages, code, CLOSED) for code in dict.fromkeys(codes))


def frames(*items: Frame) -> Callable[[], Iterable[Frame]]:
    return lambda: items


def fragmented(opcode: int, payload: bytes, size: int) -> Callable[[], Iterable[Frame]]:
    """``payload`` as one message in frames of ``size`` bytes."""

    def steps() -> Iterable[Frame]:
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for index, chunk in enumerate(chunks):
            yield Frame(OP_CONTINUATION if index else opcode, chunk, fin=index == len(chunks) - 1)

    return steps


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@cache
def large_text(size: int) -> bytes:
    """Valid UTF-8 of exactly ``size`` bytes (sizes used here end on a code point), with multi-byte characters."""
    unit = b"0123456789abcdef" + "κόσμε𝄞".encode()
    payload = (unit * (size // len(unit) + 1))[:size]
    payload.decode("utf-8")
    return payload


@cache
def large_binary(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


_HELLO = b"Hello, world!"
_KOSME = "κόσμε".encode()


def _framing_cases() -> list[Case]:
    cases = []
    for family, opcode, fill, make in (("1.1", OP_TEXT, b"*", text), ("1.2", OP_BINARY, b"\xfe", binary)):
        for index, size in enumerate((0, 125, 126, 127, 128, 65535, 65536), 1):
            payload = fill * size
            cases.append(Case(
                f"{family}.{index}", f"{_KINDS[opcode]} message of {size} bytes",
                frames(Frame(opcode, payload)), stays_open(make(payload)),
            ))
    cases += [
        Case("1.3.1", "text of 125 bytes with a 16-bit length (not minimal)",
             frames(Frame(OP_TEXT, b"*" * 125, length_bits=16)), fails(1002) + stays_open(text(b"*" * 125))),
        Case("1.3.2", "binary of 65535 bytes with a 64-bit length (not minimal)",
             frames(Frame(OP_BINARY, b"\xfe" * 65535, length_bits=64)),
             fails(1002) + stays_open(binary(b"\xfe" * 65535))),
    ]
    return cases


def _ping_cases() -> list[Case]:
    octets = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
    pings = [b"ping %d" % i for i in range(10)]
    return [
        Case("2.1", "ping without payload", frames(Frame(OP_PING)), stays_open(pong(b""))),
        Case("2.2", "ping with a text payload", frames(Frame(OP_PING, _HELLO)), stays_open(pong(_HELLO))),
        Case("2.3", "ping with a binary payload", frames(Frame(OP_PING, octets)), stays_open(pong(octets))),
        Case("2.4", "ping with a 125-byte payload", frames(Frame(OP_PING, b"\xfe" * 125)),
             stays_open(pong(b"\xfe" * 125))),
        Case("2.5", "ping with a 126-byte payload", frames(Frame(OP_PING, b"\xfe" * 126)), fails(1002)),
        Case("2.6", "unsolicited pong without payload is ignored", frames(Frame(OP_PONG)), stays_open()),
        Case("2.7", "unsolicited pong with payload, then a ping",
             frames(Frame(OP_PONG, b"unsolicited"), Frame(OP_PING, b"solicited")), stays_open(pong(b"solicited"))),
        Case("2.8", "10 pings in a row", frames(*(Frame(OP_PING, p) for p in pings)),
             stays_open(*(pong(p) for p in pings))),
        Case("2.9", "ping between two text messages is answered, the texts echoed in order",
             frames(Frame(OP_TEXT, b"first"), Frame(OP_PING, b"between"), Frame(OP_TEXT, b"second")),
             # an echo server answers after its first echo; an intermediary that terminates pings, before it
             stays_open(text(b"first"), pong(b"between"), text(b"second"))
             + stays_open(pong(b"between"), text(b"first"), text(b"second"))),
        Case("2.10", "ping fragmented into 2 frames",
             frames(Frame(OP_PING, b"frag-1", fin=False), Frame(OP_CONTINUATION, b"frag-2")), fails(1002)),
    ]


def _rsv_cases() -> list[Case]:
    ping = Frame(OP_PING, b"after")
    return [
        Case("3.1", "text with RSV1", frames(Frame(OP_TEXT, _HELLO, rsv=4)), fails(1002)),
        Case("3.2", "text, text with RSV2, ping",
             frames(Frame(OP_TEXT, _HELLO), Frame(OP_TEXT, _HELLO, rsv=2), ping), fails(1002, text(_HELLO))),
        Case("3.3", "text, text with RSV3, ping",
             frames(Frame(OP_TEXT, _HELLO), Frame(OP_TEXT, _HELLO, rsv=1), ping), fails(1002, text(_HELLO))),
        Case("3.4", "binary with RSV1 and RSV3", frames(Frame(OP_BINARY, b"\x00\xff", rsv=5)), fails(1002)),
        Case("3.5", "binary with all RSV bits", frames(Frame(OP_BINARY, b"\x00\xff", rsv=7)), fails(1002)),
        Case("3.6", "ping with RSV1+RSV2", frames(Frame(OP_PING, _HELLO, rsv=6)), fails(1002)),
        Case("3.7", "close with all RSV bits", frames(Frame(OP_CLOSE, close_payload(1000), rsv=7)), fails(1002)),
    ]


def _opcode_cases() -> list[Case]:
    cases = []
    for family, opcodes in (("4.1", (3, 4, 5, 6, 7)), ("4.2", (11, 12, 13, 14, 15))):
        for index, opcode in enumerate(opcodes, 1):
            kind = "data" if opcode < 8 else "control"
            if index <= 2:
                payload = b"" if index == 1 else b"reserved"
                cases.append(Case(f"{family}.{index}", f"reserved {kind} opcode {opcode}",
                                  frames(Frame(opcode, payload)), fails(1002)))
            else:
                cases.append(Case(
                    f"{family}.{index}", f"text, reserved {kind} opcode {opcode} with payload, ping",
                    frames(Frame(OP_TEXT, _HELLO), Frame(opcode, b"reserved"), Frame(OP_PING, b"after")),
                    fails(1002, text(_HELLO)),
                ))
    return cases


def _fragmentation_cases() -> list[Case]:
    return [
        Case("5.1", "pong fragmented into 2 frames",
             frames(Frame(OP_PONG, b"frag-1", fin=False), Frame(OP_CONTINUATION, b"frag-2")), fails(1002)),
        Case("5.2", "text in 2 fragments",
             frames(Frame(OP_TEXT, b"fragment1", fin=False), Frame(OP_CONTINUATION, b"fragment2")),
             stays_open(text(b"fragment1fragment2"))),
        Case("5.3", "binary in 2 fragments",
             frames(Frame(OP_BINARY, b"\x00\x01", fin=False), Frame(OP_CONTINUATION, b"\xfe\xff")),
             stays_open(binary(b"\x00\x01\xfe\xff"))),
        Case("5.4", "text in 2 fragments with a ping between them",
             frames(Frame(OP_TEXT, b"fragment1", fin=False), Frame(OP_PING, b"between"),
                    Frame(OP_CONTINUATION, b"fragment2")),
             stays_open(pong(b"between"), text(b"fragment1fragment2"))),
        Case("5.5", "text in 3 fragments with 2 pings and a pong between them",
             frames(Frame(OP_TEXT, b"one-", fin=False), Frame(OP_PING, b"p1"), Frame(OP_CONTINUATION, b"two-", fin=False),
                    Frame(OP_PONG, b"unsolicited"), Frame(OP_PING, b"p2"), Frame(OP_CONTINUATION, b"three")),
             stays_open(pong(b"p1"), pong(b"p2"), text(b"one-two-three"))),
        Case("5.6", "text with empty first, middle and last fragments",
             frames(Frame(OP_TEXT, b"", fin=False), Frame(OP_CONTINUATION, b"abc", fin=False),
                    Frame(OP_CONTINUATION, b"", fin=False), Frame(OP_CONTINUATION, b"def", fin=False),
                    Frame(OP_CONTINUATION, b"")),
             stays_open(text(b"abcdef"))),
        Case("5.7", "final continuation without a message", frames(Frame(OP_CONTINUATION, b"orphan")), fails(1002)),
        Case("5.8", "non-final and final continuation without a message",
             frames(Frame(OP_CONTINUATION, b"orphan", fin=False), Frame(OP_CONTINUATION, b"orphan")), fails(1002)),
        Case("5.9", "text frame while a fragmented text message is open",
             frames(Frame(OP_TEXT, b"fragment1", fin=False), Frame(OP_TEXT, b"fragment2")), fails(1002)),
        Case("5.10", "binary frame while a fragmented text message is open",
             frames(Frame(OP_TEXT, b"fragment1", fin=False), Frame(OP_BINARY, b"fragment2"),
                    Frame(OP_CONTINUATION, b"fragment3")),
             fails(1002)),
    ]


def _utf8_cases() -> list[Case]:
    mixed = "Hello-µ@ßöäüàá-UTF-8!! €𝄞".encode()
    boundaries = "\x00\x7f\x80\u07ff\u0800\ufffd\uffff\U00010000\U0010ffff".encode()
    clef = "𝄞".encode()
    return [
        Case("6.1", "valid 2-byte UTF-8", frames(Frame(OP_TEXT, _KOSME)), stays_open(text(_KOSME))),
        Case("6.2", "valid 1- to 4-byte UTF-8", frames(Frame(OP_TEXT, mixed)), stays_open(text(mixed))),
        Case("6.3", "code points at the UTF-8 length boundaries, noncharacters, U+10FFFF",
             frames(Frame(OP_TEXT, boundaries)), stays_open(text(boundaries))),
        Case("6.4", "lone continuation byte", frames(Frame(OP_TEXT, b"ab\x80cd")), fails(1007)),
        Case("6.5", "overlong encoding of '/'", frames(Frame(OP_TEXT, b"\xc0\xaf")), fails(1007)),
        Case("6.6", "UTF-16 surrogate U+D800", frames(Frame(OP_TEXT, _KOSME + b"\xed\xa0\x80")), fails(1007)),
        Case("6.7", "code point above U+10FFFF", frames(Frame(OP_TEXT, b"\xf4\x90\x80\x80")), fails(1007)),
        Case("6.8", "text ends inside a code point", frames(Frame(OP_TEXT, _KOSME + b"\xce")), fails(1007)),
        Case("6.9", "invalid UTF-8 split across 2 fragments",
             frames(Frame(OP_TEXT, _KOSME + b"\xed", fin=False), Frame(OP_CONTINUATION, b"\xa0\x80edited")),
             fails(1007)),
        Case("6.10", "invalid UTF-8 in a first fragment fails before the message ends",
             frames(Frame(OP_TEXT, _KOSME + b"\xed\xa0\x80", fin=False)), fails(1007)),
        Case("6.11", "valid text split inside a code point",
             frames(Frame(OP_TEXT, _KOSME[:3], fin=False), Frame(OP_CONTINUATION, _KOSME[3:])),
             stays_open(text(_KOSME))),
        Case("6.12", "a 4-byte code point in 4 fragments", fragmented(OP_TEXT, clef, 1), stays_open(text(clef))),
        Case("6.13", "fragmented text ends inside a code point",
             frames(Frame(OP_TEXT, _KOSME, fin=False), Frame(OP_CONTINUATION, clef[:2])), fails(1007)),
        Case("6.14", "invalid UTF-8 in a binary message is echoed",
             frames(Frame(OP_BINARY, b"\xed\xa0\x80\xff")), stays_open(binary(b"\xed\xa0\x80\xff"))),
    ]


def _close_cases() -> list[Case]:
    normal = close_payload(1000)
    cases = [
        Case("7.1.1", "text, then close", frames(Frame(OP_TEXT, _HELLO), Frame(OP_CLOSE, normal)),
             closes([1000], text(_HELLO))),
        Case("7.1.2", "close without payload", frames(Frame(OP_CLOSE)), closes([1000, NO_STATUS])),
        Case("7.1.3", "close, then ping (ignored)", frames(Frame(OP_CLOSE, normal), Frame(OP_PING, b"late")),
             closes([1000])),
        Case("7.1.4", "close, then text (ignored)", frames(Frame(OP_CLOSE, normal), Frame(OP_TEXT, b"late")),
             closes([1000])),
        Case("7.1.5", "first fragment, close, last fragment",
             frames(Frame(OP_TEXT, b"fragment1", fin=False), Frame(OP_CLOSE, normal),
                    Frame(OP_CONTINUATION, b"fragment2")),
             closes([1000])),
        Case("7.1.6", "two closes", frames(Frame(OP_CLOSE, normal), Frame(OP_CLOSE, normal)), closes([1000])),
        Case("7.3.1", "close with a 1-byte payload", frames(Frame(OP_CLOSE, b"\x03")), fails(1002)),
        Case("7.3.2", "close 1000 with a reason", frames(Frame(OP_CLOSE, close_payload(1000, _HELLO))),
             closes([1000])),
        Case("7.3.3", "close 1000 with a 123-byte reason", frames(Frame(OP_CLOSE, close_payload(1000, b"*" * 123))),
             closes([1000])),
        Case("7.3.4", "close 1000 with a 124-byte reason (payload of 126)",
             frames(Frame(OP_CLOSE, close_payload(1000, b"*" * 124))), fails(1002)),
        Case("7.5.1", "close reason with invalid UTF-8",
             frames(Frame(OP_CLOSE, close_payload(1000, _KOSME + b"\xed\xa0\x80"))), fails(1007)),
    ]
    for index, code in enumerate((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999), 1):
        cases.append(Case(f"7.7.{index}", f"close with valid code {code}",
                          frames(Frame(OP_CLOSE, close_payload(code))), closes([1000, code])))
    for index, code in enumerate((0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000), 1):
        cases.append(Case(f"7.9.{index}", f"close with invalid code {code}",
                          frames(Frame(OP_CLOSE, close_payload(code))), fails(1002)))
    return cases


def _one_frame(opcode: int, payload_of: Callable[[int], bytes], size: int) -> Callable[[], Iterable[Frame]]:
    return lambda: [Frame(opcode, payload_of(size))]


def _in_frames(opcode: int, payload_of: Callable[[int], bytes], size: int) -> Callable[[], Iterable[Frame]]:
    return lambda: fragmented(opcode, payload_of(size), 64 * KiB)()


def _large_cases() -> list[Case]:
    cases = []
    sizes = (64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB)
    kinds = ((OP_TEXT, large_text, text), (OP_BINARY, large_binary, binary))
    for (opcode, payload_of, make), family in zip(kinds, ("9.1", "9.2"), strict=True):
        for index, size in enumerate(sizes, 1):
            cases.append(Case(
                f"{family}.{index}", f"{_KINDS[opcode]} message of {size // KiB} KiB in one frame",
                _one_frame(opcode, payload_of, size), stays_open(make(payload_of(size))), timeout=10.0,
            ))
    for (opcode, payload_of, make), family in zip(kinds, ("9.3", "9.4"), strict=True):
        for index, size in enumerate(sizes[1:], 1):
            cases.append(Case(
                f"{family}.{index}", f"{_KINDS[opcode]} message of {size // KiB} KiB in 64 KiB frames",
                _in_frames(opcode, payload_of, size), stays_open(make(payload_of(size))), timeout=10.0,
            ))
    return cases


def _autofragment_cases() -> list[Case]:
    ascii_text = bytes(range(32, 127)) * 2 + b"!"
    octets = large_binary(256)
    utf8 = "κόσμε € 𝄞".encode()
    return [
        Case("10.1", "text of 191 bytes in 1-byte frames", fragmented(OP_TEXT, ascii_text, 1),
             stays_open(text(ascii_text))),
        Case("10.2", "binary of 256 bytes in 1-byte frames", fragmented(OP_BINARY, octets, 1),
             stays_open(binary(octets))),
        Case("10.3", "multi-byte UTF-8 text in 1-byte frames", fragmented(OP_TEXT, utf8, 1),
             stays_open(text(utf8))),
    ]


def _limit_cases() -> list[Case]:
    limit = LIMITED_MESSAGE_SIZE
    return [
        Case("9.9.1", "text of exactly the backend's 1 MiB limit", _one_frame(OP_TEXT, large_text, limit),
             stays_open(text(large_text(limit)))),
        Case("9.9.2", "text one byte over the 1 MiB limit in one frame",
             (lambda: [Frame(OP_TEXT, b"*" * (limit + 1))]), fails(1009)),
        Case("9.9.3", "binary of 2 MiB in 64 KiB frames, over the 1 MiB limit",
             _in_frames(OP_BINARY, large_binary, 2 * limit), fails(1009)),
    ]


CASES: list[Case] = (
    _framing_cases() + _ping_cases() + _rsv_cases() + _opcode_cases() + _fragmentation_cases()
    + _utf8_cases() + _close_cases() + _large_cases() + _autofragment_cases()
)
"""The cases for a target in front of ``conformance_backend()``."""

LIMIT_CASES: list[Case] = _limit_cases()
"""The cases for a target in front of ``conformance_backend(LIMITED_MESSAGE_SIZE)``."""


async def _run_all(port: int, cases: Sequence[Case], path: bytes, host: str) -> dict[str, Verdict]:
    return {case.id: await _run(case, port, path, host) for case in cases}


def run_all(
    port: int, cases: Sequence[Case] = CASES, path: bytes = b"/", host: str = "127.0.0.1"
) -> Deferred[dict[str, Verdict]]:
    """Run ``cases`` one after the other, each on its own connection; verdicts by case id."""
    return Deferred.fromCoroutine(_run_all(port, cases, path, host))
