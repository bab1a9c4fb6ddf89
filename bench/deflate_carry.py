"""What each way of handling permessage-deflate with context takeover in an upgrade costs (docs/websocket.md,
"Upgrades and session mode").

One session's client-facing compressor and decompressor, as Autobahn keeps them (raw deflate, 15-bit windows,
memLevel 8), over a stream of small JSON messages both ways:

- keep: the session stays in the old process; its state costs what it costs today, nothing more;
- no-takeover: a fresh compressor per message (what negotiating no context takeover makes Autobahn do);
- prime (what rubrisproxy does): context takeover as today, plus the last window of the plaintext the client
  compressed, kept by the client leg; at adoption an inflater primed with it (``zdict``) decodes what the client
  compresses next. The proxy's own compressor starts afresh in the new process (the client's inflater, holding
  the old window, decodes a stream that does not refer to it); priming it too would cost a second window.

Prints, per option: memory per idle session (tracemalloc, zlib's allocations included), CPU per message (both
directions), compressed bytes per message, and the one-off priming time; ratios against ``keep``.
Run: /work/venv/bin/python bench/deflate_carry.py
"""

from __future__ import annotations

import json
import time
import tracemalloc
import zlib
from collections import deque

WBITS, MEM_LEVEL, WINDOW = 15, 8, 1 << 15
SYNC_TAIL = b"\x00\x00\xff\xff"


def messages(count: int) -> list[bytes]:
    return [json.dumps({"type": "tick", "seq": n, "symbol": "ABC", "price": 100 + (n * 37) % 50 / 10,
                        "book": [[n % 7, 3], [n % 11, 5]], "note": "steady state message"}).encode()
            for n in range(count)]


def compressor() -> zlib._Compress:
    return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -WBITS, MEM_LEVEL)


def deflate(c: zlib._Compress, payload: bytes) -> bytes:
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate(d: zlib._Decompress, data: bytes) -> bytes:
    return d.decompress(data + SYNC_TAIL)


class Window:
    """The last WINDOW bytes of a direction's plaintext, kept as the prime option keeps them (a deque of
    payloads, trimmed as it grows: O(1) per message; joined only when carried)."""

    def __init__(self) -> None:
        self.parts: deque[bytes] = deque()
        self.size = 0

    def add(self, payload: bytes) -> None:
        self.parts.append(payload)
        self.size += len(payload)
        while self.size - len(self.parts[0]) >= WINDOW:
            self.size -= len(self.parts.popleft())

    def value(self) -> bytes:
        return b"".join(self.parts)[-WINDOW:]


def idle_memory(option: str, stream: list[bytes]) -> int:
    """Bytes one idle session holds for its compression, after ``stream`` went both ways."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    c, d = compressor(), zlib.decompressobj(-WBITS)
    peer = compressor()
    window = Window() if option == "prime" else None
    for payload in stream:
        if option == "no-takeover":
            c = compressor()
        deflate(c, payload)
        inflate(d, deflate(peer, payload))
        if window is not None:  # in a session each message is an object of its own: a copy, as it would be
            window.add(bytes(bytearray(payload)))
    del peer
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del c, d, window
    return held


def cpu_per_message(option: str, stream: list[bytes]) -> tuple[float, float]:
    """Seconds per message (compress one, decompress one) and compressed bytes per message, server side."""
    c, d, peer = compressor(), zlib.decompressobj(-WBITS), compressor()
    window = Window() if option == "prime" else None
    wire = [deflate(peer, payload) for payload in stream]
    size = 0
    started = time.perf_counter()
    for payload, incoming in zip(stream, wire, strict=True):
        if option == "no-takeover":
            c = compressor()
        size += len(deflate(c, payload))
        plain = inflate(d, incoming)
        if window is not None:
            window.add(plain)
    return (time.perf_counter() - started) / len(stream), size / len(stream)


def priming(stream: list[bytes]) -> tuple[float, float]:
    """Seconds to make the primed inflater at adoption (checking both directions decode across the hand-over),
    and the wire bytes per message of the first 100 the new process compresses afresh, against going on."""
    ours, theirs_in = compressor(), zlib.decompressobj(-WBITS)  # the old process's compressor; the client's inflater
    theirs, ours_in = compressor(), zlib.decompressobj(-WBITS)  # the client's compressor; the old process's inflater
    received = Window()
    half = len(stream) // 2
    for payload in stream[:half]:
        theirs_in.decompress(deflate(ours, payload) + SYNC_TAIL)
        received.add(ours_in.decompress(deflate(theirs, payload) + SYNC_TAIL))
    started = time.perf_counter()
    primed_in = zlib.decompressobj(-WBITS, zdict=received.value())
    took = time.perf_counter() - started
    fresh = compressor()
    after, going_on = 0, 0
    for payload in stream[half:half + 100]:
        assert primed_in.decompress(deflate(theirs, payload) + SYNC_TAIL) == payload  # the new process reads on
        data = deflate(fresh, payload)
        assert theirs_in.decompress(data + SYNC_TAIL) == payload  # and the client reads the fresh compressor
        after += len(data)
        going_on += len(deflate(ours, payload))
    return took, after / going_on


def main() -> None:
    stream = messages(5000)
    plain = sum(map(len, stream)) / len(stream)
    options = ("keep", "no-takeover", "prime")
    cpu = {option: min(cpu_per_message(option, stream) for _ in range(5)) for option in options * 1}
    results = {option: (idle_memory(option, stream[:2000]), *cpu[option]) for option in options}
    base_memory, base_cpu, base_size = results["keep"]
    print(f"{len(stream)} JSON messages of {plain:.0f} bytes each way; 15-bit windows, memLevel 8")
    print(f"{'option':<12} {'idle KiB':>9} {'x':>5} {'us/msg':>8} {'x':>5} {'wire B/msg':>10} {'x':>5}")
    for option, (memory, cpu, size) in results.items():
        print(f"{option:<12} {memory / 1024:9.1f} {memory / base_memory:5.2f} {cpu * 1e6:8.2f} {cpu / base_cpu:5.2f} "
              f"{size:10.1f} {size / base_size:5.2f}")
    took, fresh = priming(stream)
    print(f"prime at adoption: {took * 1e6:.0f} us per session; the first 100 messages the new process compresses "
          f"afresh take {fresh:.2f}x the bytes they would have")


if __name__ == "__main__":
    main()
