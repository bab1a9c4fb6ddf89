"""Run test ids again and again under CPU load, counting passes and failures: ``python bench/flaky_repeat.py
[--runs N] [--hogs K] TEST_ID...``.

Each run is two ``python -m twisted.trial ID...`` at once (as ``-j2`` runs two workers; trial runs an id given
twice only once) while K busy-loop processes (``while 1: pass``) compete for the CPUs; the hogs are killed at the end. Prints one line
per run and the totals; the failing runs' trial output is kept in ``_trial_temp_flaky/<n>.log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: the hogs still killed (finally)
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.hogs)]
    os.makedirs("_trial_temp_flaky", exist_ok=True)
    passed = failed = 0
    try:
        for n in range(args.runs):
            started = time.monotonic()
            pair = [subprocess.Popen([sys.executable, "-m", "twisted.trial", "--temp-directory",
                                      f"_trial_temp_flaky/t{n}{side}", *args.tests],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    for side in "ab"]
            for side, run in zip("ab", pair, strict=True):
                output = run.communicate()[0]
                tail = output.strip().splitlines()[-1] if output.strip() else ""
                if run.returncode == 0:
                    passed += 1
                else:
                    failed += 1
                    with open(f"_trial_temp_flaky/{n}{side}.log", "w") as f:
                        f.write(output)
                print(f"run {n}{side}: {'ok' if run.returncode == 0 else 'FAIL'} {time.monotonic() - started:.1f}s "
                      f"{tail}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"{passed} passed, {failed} failed of {2 * args.runs} trial runs, {args.hogs} hogs: {' '.join(args.tests)}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
