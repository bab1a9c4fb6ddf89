"""Instructions per request under callgrind: a steady measure of CPU cost on a noisy machine.

Runs each relay under ``valgrind --tool=callgrind`` (counting only while the load runs), drives it with
``wrk -c50`` on keep-alive connections, and divides the instructions the relay executed by the requests
wrk completed. Unlike req/s or CPU time, the count does not change with what else the machine is doing.

    python bench/instructions_bench.py [--duration 15] [--relays rubrisproxy,portforward,reverse] [--compare DIR]
                                       [--origin fast] [--close]

``--compare DIR`` also runs each rubrisproxy relay from another checkout (``NAME@compared``) and prints the ratios;
``--origin fast`` serves from ``fast_origin.py``; ``--close`` sends ``Connection: close`` (a connection per request).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import callgrind_total, twistd_command  # noqa: E402
from http_bench import COMPARED, ROOT, free_port, run_wrk, start_origin, wait_port  # noqa: E402


def relay_command(kind: str, port: int, origin_port: int, tmp: str) -> list[str]:
    if kind == "rubrisproxy-nolog":
        return relay_command("rubrisproxy", port, origin_port, tmp)[:-1] + ["off"]
    if kind == "rubrisproxy":
        # twistd's script, not ``python -c``: that puts the working directory first on sys.path, ahead of --compare's
        return [*twistd_command(), "-n", "--pidfile=",
                "--logfile", os.path.join(tmp, "rubrisproxy.log"), "rubrisproxy",
                "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                "--backend", f"127.0.0.1:{origin_port}", "--access-log", os.path.join(tmp, "access.log")]
    return [sys.executable, os.path.join(HERE, "baselines.py"), kind, str(port), str(origin_port)]


def measure(name: str, origin_port: int, tmp: str, options: argparse.Namespace) -> tuple[float, int]:
    """Instructions per request of relay ``name`` (``kind@compared``: that rubrisproxy relay from ``--compare``)."""
    kind, _, at = name.partition("@")
    root = os.path.abspath(options.compare) if at else ROOT
    headers = ("Connection: close",) if options.close else ()
    port = free_port()
    out = os.path.join(tmp, f"callgrind.{kind}{at}")
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p"]
        + relay_command(kind, port, origin_port, tmp),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=300)
        run_wrk(port, "/small", 10, 3, headers)  # warm up
        subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True)
        _, _, requests = run_wrk(port, "/small", options.connections, options.duration, headers)
        subprocess.run(["callgrind_control", "-i", "off", str(process.pid)], check=True, capture_output=True)
    finally:
        process.terminate()
        process.wait(120)
    total = callgrind_total(out)
    return total / max(requests, 1), requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--relays", default="rubrisproxy,rubrisproxy-nolog,portforward,reverse")
    parser.add_argument("--compare", default="", help="another checkout whose rubrisproxy relays run too")
    parser.add_argument("--origin", choices=("default", "fast"), default="default")
    parser.add_argument("--close", action="store_true", help="Connection: close on every request")
    args = parser.parse_args()
    relays = args.relays.split(",")
    if args.compare:
        relays += [f"{relay}@{COMPARED}" for relay in relays if relay.startswith("rubrisproxy")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        origin, origin_port, origin_name = start_origin(tmp, args.origin)
        print(f"origin: {origin_name}; wrk -c{args.connections} for {args.duration}s against each relay under callgrind"
              + ("; Connection: close" if args.close else ""))
        try:
            for kind in relays:
                per_request, requests = measure(kind, origin_port, tmp, args)
                results[kind] = per_request
                print(f"  {kind:26} {per_request / 1000:8.1f} k instructions/request  ({requests} requests)", flush=True)
        finally:
            origin.terminate()
            origin.wait(10)
    for ours in ("rubrisproxy", "rubrisproxy-nolog"):
        if ours in results:
            for kind, value in results.items():
                if kind != ours and (kind.startswith(ours + "@") or not kind.startswith("rubrisproxy")):
                    print(f"  {ours} / {kind}: {results[ours] / value:.2f}x the instructions per request")


if __name__ == "__main__":
    main()
