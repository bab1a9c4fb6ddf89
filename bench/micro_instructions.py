"""Instructions per request of ``micro_exchange.py`` under callgrind: the in-process request path, steady.

Runs ``micro_exchange.py`` twice under ``valgrind --tool=callgrind`` with a small and a large request count
and divides the difference in instructions by the difference in requests, so start-up and imports cancel
out. ``--compare DIR`` measures another checkout (e.g. the code before a change) the same way, in the same
run, and prints the ratio.

    python bench/micro_instructions.py [--requests 1000,4000] [--access-log] [--compare DIR] [--rules] [--close] [--chunked [CHUNKS]]

``--rules`` measures this checkout twice in the same run, without rules and with ``micro_exchange.py``'s
handful of HTTP rules, and prints the ratio (the cost of the rules).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def instructions(root: str, requests: int, flags: list[str]) -> int:
    """Instructions the whole ``micro_exchange.py`` run of ``root`` executed for ``requests`` requests."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                   os.path.join(ROOT, "bench", "micro_exchange.py"), "--requests", str(requests)]  # this driver, root's code
        subprocess.run(command + flags, cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": root})
        with open(out) as f:
            totals = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
        assert totals, "callgrind wrote no totals"
        return int(totals.group(1))


def per_request(root: str, small: int, large: int, flags: list[str]) -> float:
    """``micro_exchange.py``'s instructions per request with ``flags`` (``--access-log``, ``--rules``, ``--close``)."""
    return (instructions(root, large, flags) - instructions(root, small, flags)) / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", default="1000,4000", help="the small and the large request count")
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--compare", default="", help="another checkout to measure the same way")
    parser.add_argument("--rules", action="store_true", help="also measure with a handful of HTTP rules on")
    parser.add_argument("--close", action="store_true", help="Connection: close, a client connection per request")
    parser.add_argument("--chunked", type=int, nargs="?", const=1, default=0, metavar="CHUNKS",
                        help="the origin's body chunked, in CHUNKS chunks (micro_exchange.py --chunked)")
    args = parser.parse_args()
    small, large = (int(n) for n in args.requests.split(","))
    flags = [f"--{name.replace('_', '-')}" for name in ("access_log", "close") if getattr(args, name)]
    flags += [f"--chunked={args.chunked}"] if args.chunked else []
    here = per_request(ROOT, small, large, flags)
    print(f"{ROOT}: {here:,.0f} instructions per request")
    if args.rules:
        ruled = per_request(ROOT, small, large, [*flags, "--rules"])
        print(f"{ROOT} with a handful of HTTP rules: {ruled:,.0f} instructions per request")
        print(f"ratio (rules / none): {ruled / here:.3f}")
    if args.compare:
        there = per_request(os.path.abspath(args.compare), small, large, flags)
        print(f"{os.path.abspath(args.compare)}: {there:,.0f} instructions per request")
        print(f"ratio (this / compared): {here / there:.3f}")


if __name__ == "__main__":
    main()
