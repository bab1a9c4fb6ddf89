"""Tunnel mode's relay in process: CPU per read from one side handed to the other (``Tunnel.client_data`` and
``Tunnel.origin_data``, alternating), with writes that go nowhere.

The tunnel's own work per read only (its idle deadline, its producer check, what it notes of the read), not the
sockets': a floor to compare checkouts with, not a tunnel's whole cost. Steady, for optimising; reports the best of 5
runs, ns per read. ``--compare DIR`` measures another checkout too.

    python bench/micro_tunnel.py [--size 64] [--reads 200000] [--compare DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent


class _Side:
    """A connection's side as the tunnel writes to it: its producer already attached, so no backlog check."""

    def __init__(self) -> None:
        self.transport = SimpleNamespace(write=len)
        self.upload = self.download = SimpleNamespace(producer=object())
        self.gate = object()

    def write(self, data: bytes) -> None:
        pass


def measure(size: int, reads: int) -> float:
    """Best of 5: CPU seconds per read through this checkout's Tunnel (run from its root)."""
    sys.path.insert(0, os.getcwd())
    from twisted.internet.task import Clock  # noqa: PLC0415 - from the checkout measured, once on its path

    from rubrisproxy.websocket import Tunnel  # noqa: PLC0415

    handoff = SimpleNamespace(client=_Side(), timeouts=SimpleNamespace(tunnel=3600.0), idle_clock=Clock())
    tunnel = Tunnel(handoff, _Side())  # type: ignore[arg-type]
    data = os.urandom(size)
    client_data, origin_data = tunnel.client_data, tunnel.origin_data
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(reads // 2):
            client_data(data)
            origin_data(data)
        best = min(best, (time.process_time() - started) / reads)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--compare", default="", help="another checkout, measured the same way")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # measure the cwd checkout, print ns
    args = parser.parse_args()
    if args.size < 1 or args.reads < 2:
        parser.error("--size at least 1, --reads at least 2")
    if args.one:
        print(f"{measure(args.size, args.reads) * 1e9:.1f}")
        return
    figures = {}
    for tree in [str(ROOT)] + ([args.compare] if args.compare else []):
        command = [sys.executable, str(Path(__file__).resolve()), "--one", "--size", str(args.size),
                   "--reads", str(args.reads)]
        figures[tree] = float(subprocess.run(command, cwd=tree, check=True, capture_output=True, text=True).stdout)
        print(f"{tree}: {figures[tree]:.0f} ns per {args.size}-byte read")
    if args.compare:
        print(f"ratio this / compared: {figures[str(ROOT)] / figures[args.compare]:.2f}x")


if __name__ == "__main__":
    main()
