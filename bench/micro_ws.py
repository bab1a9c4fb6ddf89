"""Session mode's fast path in process: CPU per message from a client leg's read into a backend leg's write.

Both legs are opened as a session opens them (tests/test_ws_keepalive.py's helpers) over in-memory transports,
and each read carries ``--per-read`` masked binary messages of ``--size`` bytes, which the client leg passes to the
backend leg with fresh masking keys, as a session with no hook has it do (in a checkout without that passage: the
client leg unmasks them and the backend leg masks them again); the session's own calls are left out. Steady, for
optimising; reports the best of 5 runs, µs per message. ``--compare DIR`` measures another checkout too.

    python bench/micro_ws.py [--size 32] [--per-read 16] [--reads 3000] [--compare DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(size: int, per_read: int, reads: int) -> float:
    """Best of 5: CPU seconds per message through the two legs of this checkout (run from its root)."""
    sys.path.insert(0, os.getcwd())
    from twisted.internet.task import Clock  # noqa: PLC0415 - from the checkout measured, once on its path

    import tests.test_ws_keepalive as helpers  # noqa: PLC0415
    from rubrisproxy.config import WebSocketConfig  # noqa: PLC0415
    from rubrisproxy.websocket._legs import LegFactories  # noqa: PLC0415

    factories = LegFactories(WebSocketConfig(), Clock())
    helpers.LegFactories = lambda config, clock: factories  # both legs of one backend, as in a session
    client, _, client_session = helpers.open_client_leg(WebSocketConfig(), Clock())
    backend, origin, _ = helpers.open_backend_leg(WebSocketConfig(), Clock())
    client_session.from_client = lambda payload, binary: backend.sendMessage(payload, binary)
    client_session.backend_passage = lambda: backend  # a session with no hook passes the frames (a checkout with
    client_session.passed_to_backend = lambda count: None  # no such path calls from_client for each message)
    payload, mask = os.urandom(size), b"\x11\x22\x33\x44"
    masked = bytes(a ^ b for a, b in zip(payload, (mask * (size // 4 + 1))[:size], strict=True))
    head = bytes((0x82, 0x80 | size)) if size < 126 else bytes((0x82, 0x80 | 126, size >> 8, size & 0xFF))
    read = (head + mask + masked) * per_read
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(reads):
            client.dataReceived(read)
            origin.transport.clear()
        best = min(best, (time.process_time() - started) / (reads * per_read))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-read", type=int, default=16)
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--compare", default="", help="another checkout, measured the same way")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # measure the cwd checkout, print µs
    args = parser.parse_args()
    if not 1 <= args.size <= 0xFFFF or args.per_read < 1 or args.reads < 1:
        parser.error("--size 1..65535, --per-read and --reads at least 1")
    if args.one:
        print(f"{measure(args.size, args.per_read, args.reads) * 1e6:.3f}")
        return
    figures = {}
    for tree in [str(ROOT)] + ([args.compare] if args.compare else []):
        command = [sys.executable, str(Path(__file__).resolve()), "--one", "--size", str(args.size),
                   "--per-read", str(args.per_read), "--reads", str(args.reads)]
        figures[tree] = float(subprocess.run(command, cwd=tree, check=True, capture_output=True, text=True).stdout)
        print(f"{tree}: {figures[tree]:.2f} µs per {args.size}-byte message ({args.per_read} per read)")
    if args.compare:
        print(f"ratio this / compared: {figures[str(ROOT)] / figures[args.compare]:.2f}x")


if __name__ == "__main__":
    main()
