"""The slowest test cases of the suite: ``python bench/test_timings.py [--top N] [--jobs J] [MODULE...]``.

``trial -j2`` reports no per-test time (its timing reporter sees each result only when a worker relays it), so
this runs the test modules J at a time, each in a trial of its own with ``--reporter=timing``, and prints the
N slowest test cases, then the wall time of the whole run.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

RESULT = re.compile(r"^(tests\.\S+) \.\.\. \[(\w+)\]\s*\n\((\d+\.\d+) secs\)", re.M)


def run_module(module: str) -> tuple[str, list[tuple[float, str, str]]]:
    run = subprocess.run([sys.executable, "-m", "twisted.trial", "--temp-directory", f"_trial_temp_timing/{module}",
                          "--reporter=timing", module], capture_output=True, text=True)
    name = f"{module}.out" if run.returncode == 0 else f"{module}.{time.time():.0f}.failed"  # a traceback, to read
    with open(f"_trial_temp_timing/{name}", "w") as f:
        f.write(run.stdout + run.stderr)
    return run.stdout, [(float(secs), name, status) for name, status, secs in RESULT.findall(run.stdout)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args()
    modules = args.modules or sorted(f"tests.{os.path.basename(p)[:-3]}" for p in glob.glob("tests/test_*.py"))
    started = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_module, modules))
    took = time.monotonic() - started
    timings = sorted((item for _, found in results for item in found), reverse=True)
    bad = [item for item in timings if item[2] not in ("OK", "SKIPPED")]
    for secs, name, status in timings[:args.top]:
        print(f"{secs:7.2f}s  {name}  [{status}]")
    print(f"{len(timings)} test cases, {len(bad)} not OK, {took:.0f}s wall with {args.jobs} at a time")
    for _, name, status in bad:
        print(f"  {status}: {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
