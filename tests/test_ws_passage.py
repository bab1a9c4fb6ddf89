"""Session mode's passage: a read's simple frames passed to the other leg as they came (a client's with fresh
masking keys). The same bytes, hostile ones first, go through three paths of one pair of legs: Autobahn's own
parser, the per-message fast path (``read_simple``, ``onMessage``) and the passage; what each leg writes, how it
ends and what its session hears must be the same."""

from __future__ import annotations

import os
import struct
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from rubrisproxy.config import WebSocketConfig
from rubrisproxy.websocket import _frames
from rubrisproxy.websocket._frames import remasked, scan_simple
from rubrisproxy.websocket._legs import LegFactories

from . import test_ws_keepalive
from .test_ws_keepalive import open_backend_leg, open_client_leg

MASK = b"\x37\xfa\x21\x3d"
PATHS = ("autobahn", "relay", "passage")


def frame(first: int, payload: bytes = b"", mask: bytes | None = MASK, length: int | None = None,
          form: int | None = None) -> bytes:
    """A frame with first byte ``first``; ``length`` (default: the payload's) in ``form`` (7, 16 or 64 bits:
    default the shortest); masked with ``mask`` unless it is None."""
    size = len(payload) if length is None else length
    form = form or (7 if size < 126 else 16 if size < 1 << 16 else 64)
    bit = 0x80 if mask is not None else 0
    if form == 7:
        head = bytes((first, bit | size))
    elif form == 16:
        head = bytes((first, bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(first byte, masked, unmasked payload) of each whole frame in ``data``, then ``(-1, False, rest)`` for
    bytes that are not a whole frame."""
    frames: list[tuple[int, bool, bytes]] = []
    while data:
        if len(data) < 2:
            break
        first, second = data[0], data[1]
        size, start = second & 0x7F, 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, start = struct.unpack("!Q", data[2:10])[0], 10
        masked = bool(second & 0x80)
        mask = data[start:start + 4] if masked else b"\0\0\0\0"
        start += 4 if masked else 0
        if start + size > len(data):
            break
        frames.append((first, masked, bytes(b ^ mask[i % 4] for i, b in enumerate(data[start:start + size]))))
        data = data[start + size:]
    if data:
        frames.append((-1, False, data))
    return frames


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def cases(mask: bytes | None) -> dict[str, bytes]:
    """Reads from a peer that masks with ``mask`` (a client), or does not (None: a server); each case's bytes."""
    def f(first: int, payload: bytes = b"", **kwargs: Any) -> bytes:
        return frame(first, payload, kwargs.pop("mask", mask), **kwargs)

    other = None if mask is not None else MASK  # the masking the peer must not use
    good = f(0x82, b"abc") + f(0x81, "héllo".encode()) + f(0x82) + f(0x81)
    return {
        "simple frames": good,
        "sizes 125 126 65535": f(0x82, os.urandom(125)) + f(0x82, os.urandom(126)) + f(0x81, b"x" * 65535),
        "64 KiB (a 64-bit length)": f(0x82, os.urandom(65536)),
        "RSV1": good + f(0xC2, b"x"),
        "RSV2": f(0xA2, b"x") + good,
        "RSV3 on text": f(0x91, b"x"),
        **{f"reserved opcode {op:#x}": f(0x80 | op, b"x") + good for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)},
        "continuation with nothing to continue": f(0x80, b"x"),
        "fragmented text": f(0x01, b"ab") + f(0x00, b"c") + f(0x80, b"d") + good,
        "UTF-8 split across fragments": f(0x01, b"\xc3") + f(0x80, b"\xa9") + good,
        "invalid UTF-8 split across fragments": f(0x01, b"\xc3") + f(0x80, b"A"),
        "fragment, then a new message inside it": f(0x02, b"a") + f(0x82, b"b"),
        "masking it must not use": good + frame(0x82, b"abc", other),
        "16-bit length for 5 bytes": good + f(0x82, b"12345", form=16),
        "64-bit length for 5 bytes": f(0x82, b"12345", form=64),
        "64-bit length, top bit set": f(0x82, b"", length=1 << 63) + b"x" * 20,
        "64-bit length, huge": f(0x82, b"", length=(1 << 40)) + b"x" * 20,
        **{f"invalid UTF-8 {bad!r}": good + f(0x81, b"ok" + bad) + good for bad in (
            b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82",
        )},
        "ping": f(0x89, b"p") + good,
        "ping of 125 bytes": f(0x89, b"p" * 125) + good,
        "ping of 126 bytes": f(0x89, b"p" * 126) + good,
        "fragmented ping": f(0x09, b"p") + good,
        "pong": good + f(0x8A, b"unasked") + good,
        "close": good + f(0x88, close_payload(1000, b"bye")) + good,
        "close, no payload": f(0x88) + good,
        "close, 1-byte payload": good + f(0x88, b"\x03"),
        **{f"close {code}": f(0x88, close_payload(code)) for code in (999, 1004, 1005, 1006, 1016, 2999, 3000, 5000)},
        "close, invalid UTF-8 reason": f(0x88, close_payload(1000, b"\xff")),
        "close of 126 bytes": f(0x88, close_payload(1000, b"r" * 124)),
        "data after close": f(0x88, close_payload(1000)) + good,
    }


def limit_cases(mask: bytes | None) -> dict[str, bytes]:
    """Reads for legs whose limits (``LIMITS``) are small."""
    good = frame(0x82, b"abc", mask)
    return {
        "at the limits": frame(0x82, b"x" * 100, mask) + frame(0x81, b"y" * 60, mask) + good,
        "frame over the limit": good + frame(0x82, b"x" * 101, mask) + good,
        "text over the limit": frame(0x81, b"x" * 200, mask) + good,
        "message over the limit in fragments": frame(0x02, b"x" * 60, mask) + frame(0x80, b"x" * 60, mask) + good,
    }


#: Small limits: frames up to 100 bytes; sent messages over 60 leave fragmented.
LIMITS = WebSocketConfig(max_frame_size=100, max_message_size=100, auto_fragment_size=60)


class _Pair:
    """A client leg and a backend leg of one backend, the first one's messages taken ``path`` to the second."""

    def __init__(self, case: unittest.TestCase, config: WebSocketConfig, path: str, from_client: bool) -> None:
        clock = Clock()
        factories = LegFactories(config, clock)
        case.patch(test_ws_keepalive, "LegFactories", lambda config, clock: factories)
        self.client, self.client_transport, client_session = open_client_leg(config, clock)
        self.backend, origin, backend_session = open_backend_leg(config, clock)
        self.origin_transport = origin.transport
        self.origin_transport.clear()
        source, target = (self.client, self.backend) if from_client else (self.backend, self.client)
        self.source, self.target = source, target
        self.session = session = source.session
        session.from_client = session.from_backend = lambda payload, binary: target.sendMessage(payload, binary)
        if path == "autobahn":
            source._deflating = True  # the fast paths step aside: Autobahn parses everything
        if path == "passage":
            session.backend_passage = session.client_passage = lambda: target
            self.passed = 0

            def passed(count: int) -> None:
                self.passed += count

            session.passed_to_backend = session.passed_to_client = passed
        self.clients_events, self.backends_events = client_session.events, backend_session.events

    def outcome(self) -> dict[str, object]:
        """What both legs wrote (parsed: masking keys differ from path to path), their states and their
        sessions' events but the messages (taken by one path or another)."""
        def events(recorded: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return [tuple(type(arg).__name__ if hasattr(arg, "sendMessage") else arg for arg in event)
                    for event in recorded if event[0] not in ("from_client", "from_backend")]

        return {
            "to backend": read_frames(self.origin_transport.value()),
            "to client": read_frames(self.client_transport.value()),
            "states": [(leg.state, leg.failedByMe, leg.localCloseCode, leg.remoteCloseCode, leg.held)
                       for leg in (self.client, self.backend)],
            "events": (events(self.clients_events), events(self.backends_events)),
        }

    def end(self) -> None:
        for leg in (self.client, self.backend):
            leg.connectionLost(Failure(ConnectionLost()))


class PassageTests(unittest.TestCase):
    def outcomes(self, config: WebSocketConfig, reads: list[bytes], from_client: bool) -> dict[str, dict[str, object]]:
        results = {}
        for path in PATHS:
            pair = _Pair(self, config, path, from_client)
            for read in reads:
                pair.source.dataReceived(read)
            results[path] = pair.outcome()
            pair.end()
        return results

    def check(self, config: WebSocketConfig, table: dict[str, bytes], from_client: bool, cuts: bool = True) -> None:
        for name, data in table.items():
            splits = [[data]]
            if cuts:
                step = max(1, len(data) // 40)
                splits += [[data[:cut], data[cut:]] for cut in range(1, len(data), step)]
            for reads in splits:
                results = self.outcomes(config, reads, from_client)
                where = f"{name}, reads of {[len(read) for read in reads]}"
                self.assertEqual(results["relay"], results["autobahn"], where)
                self.assertEqual(results["passage"], results["autobahn"], where)

    def test_what_a_client_sends(self) -> None:
        self.check(WebSocketConfig(), cases(MASK), from_client=True)

    def test_what_a_backend_sends(self) -> None:
        self.check(WebSocketConfig(), cases(None), from_client=False)

    def test_limits(self) -> None:
        self.check(LIMITS, limit_cases(MASK), from_client=True)
        self.check(LIMITS, limit_cases(None), from_client=False)

    def test_byte_by_byte(self) -> None:
        data = frame(0x82, b"abc") + frame(0x81, "é".encode() * 70) + frame(0x88, close_payload(1000))
        self.assertEqual(len({str(outcome) for outcome in self.outcomes(
            WebSocketConfig(), [data[i:i + 1] for i in range(len(data))], from_client=True,
        ).values()}), 1)

    def test_the_passage_takes_the_simple_frames(self) -> None:
        """The passage is the path these reads take: every message counted once, none by ``from_client``."""
        pair = _Pair(self, WebSocketConfig(), "passage", from_client=True)
        self.addCleanup(pair.end)
        pair.client.dataReceived(cases(MASK)["simple frames"] + cases(MASK)["sizes 125 126 65535"])
        self.assertEqual(pair.passed, 7)
        self.assertEqual(pair.clients_events, [])
        self.assertEqual(pair.backend.meter.bytes_in, len(pair.origin_transport.value()))


class RemaskTests(unittest.TestCase):
    def test_without_the_c_masker(self) -> None:
        self.patch(_frames, "_xor", None)
        self.test_each_frame_leaves_with_a_fresh_key()

    def test_each_frame_leaves_with_a_fresh_key(self) -> None:
        payloads = [os.urandom(size) for size in (0, 1, 5, 125, 126, 255, 256, 1000, 300, 3, 65535)]
        data = b"".join(frame(0x82, payload) for payload in payloads)
        frames, waiting = scan_simple(data, True, 0)
        self.assertEqual((len(frames), waiting), (len(payloads), False))
        out = b"".join(remasked(data, frames))
        self.assertEqual(len(out), len(data))
        parsed = read_frames(out)
        self.assertEqual([(first, masked, payload) for first, masked, payload in parsed],
                         [(0x82, True, payload) for payload in payloads])
        keys = [out[start - 4:start] for start, _, _ in frames]
        self.assertNotIn(MASK, keys)
        self.assertEqual(len(set(keys)), len(keys))
