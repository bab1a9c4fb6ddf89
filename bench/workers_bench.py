"""Worker processes: the CPU cost of a request with ``--workers 2`` against one process, and how the kernel
spreads connections between the workers (SO_REUSEPORT), in one run.

Starts a Twisted origin, then rubrisproxy with ``--workers 1`` (one process: the baseline) and with
``--workers 2`` (a supervisor and two workers), and drives each with wrk (keep-alive, small responses) at 50
connections in interleaved rounds. A proxy's CPU is the user + system time of all its processes (the
supervisor's included) over the requests wrk completed. Then, for the spread, wrk runs with 200 connections
against ``--workers 2`` several times and ``GET /workers`` says how many each worker accepted.

    python bench/workers_bench.py [--duration 10] [--rounds 3] [--spreads 5]

Prints each run, the medians, the ratio of CPU per request (2 workers / 1 process), the spread of each
200-connection run, the per-core throughput and the projection to 8 and 32 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import harness
from harness import Output, Processes, cpu_seconds, free_port, middle, python_path_env, twistd_command
from http_bench import run_wrk

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def start_proxy(processes: Processes, workers: int, origin_port: int,
                tmp: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """rubrisproxy with ``workers`` workers (1: one process); its process, port and admin port."""
    port, admin = free_port(), free_port()
    command = [*twistd_command(), "-n", "--pidfile=", "--logfile", os.path.join(tmp, f"proxy{workers}.log"),
               "rubrisproxy", "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
               "--backend", f"127.0.0.1:{origin_port}", "--access-log", "off",
               "--admin", f"tcp:{admin}:interface=127.0.0.1", "--workers", str(workers)]
    process = processes.start(command, env=python_path_env(ROOT))
    harness.wait_port(admin, process)
    deadline = time.monotonic() + 30
    while workers > 1 and not all(w["state"] == "serving" for w in admin_json(admin, "workers")["workers"]):
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not start")
        time.sleep(0.2)
    harness.wait_port(port, process)
    return process, port, admin


def admin_json(admin: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/{path}", timeout=10) as response:
        return json.loads(response.read())


def pids(process: subprocess.Popen[bytes], workers: int, admin: int) -> list[int]:
    """Every process of the proxy: the supervisor and its workers, or the one process."""
    if workers == 1:
        return [process.pid]
    return [process.pid, *(w["pid"] for w in admin_json(admin, "workers")["workers"])]


def cpu(all_pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in all_pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--spreads", type=int, default=5, help="200-connection runs measuring the spread")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections of the cost runs")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    harness.raise_open_files(4096)
    out = Output()
    processes = Processes()
    samples: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    spreads: list[list[int]] = []
    with tempfile.TemporaryDirectory() as tmp, harness.terminate_on_sigterm():
        try:
            origin_port = free_port()
            processes.start([sys.executable, os.path.join(HERE, "baselines.py"), "origin", str(origin_port),
                             str(free_port())])
            harness.wait_port(origin_port)
            proxies = {n: start_proxy(processes, n, origin_port, tmp) for n in (1, 2)}
            out(f"origin: twisted.web (one process); {os.cpu_count()} cores, nothing pinned; wrk -t1 "
                f"-c{args.connections}, {args.duration}s per run, {args.rounds} interleaved rounds; access log off")
            for _, port, _ in proxies.values():
                run_wrk(port, "/small", 10, 1)  # warm up
            for round_number in range(args.rounds):
                for n, (process, port, admin) in proxies.items():
                    every = pids(process, n, admin)
                    before = cpu(every)
                    rps, p99, total = run_wrk(port, "/small", args.connections, args.duration)
                    per_request = (cpu(every) - before) * 1e6 / max(total, 1)
                    samples[n].append((rps, per_request))
                    out(f"  round {round_number + 1} workers={n}  {rps:9.0f} req/s  p99 {p99:7.2f} ms  "
                        f"{per_request:7.1f} CPU us/req (all {len(every)} processes)")
            _, port, admin = proxies[2]
            for run in range(args.spreads):
                accepted = [w["accepted"] for w in admin_json(admin, "workers")["workers"]]
                run_wrk(port, "/small", 200, 2)
                now = [w["accepted"] for w in admin_json(admin, "workers")["workers"]]
                spreads.append([a - b for a, b in zip(now, accepted, strict=True)])
                share = [100 * d / max(1, sum(spreads[-1])) for d in spreads[-1]]
                out(f"  spread run {run + 1}: 200 connections -> workers accepted {spreads[-1]} "
                    f"({', '.join(f'{s:.0f}%' for s in share)})")
        finally:
            processes.stop_all()
    report(out, samples, spreads)


def report(out: Output, samples: dict[int, list[tuple[float, float]]], spreads: list[list[int]]) -> None:
    rps = {n: middle([s[0] for s in samples[n]]) for n in samples}
    cost = {n: middle([s[1] for s in samples[n]]) for n in samples}
    out()
    out("medians")
    for n in samples:
        out(f"  workers={n}  {rps[n]:9.0f} req/s  {cost[n]:7.1f} CPU us/req")
    out(f"ratio: CPU per request, 2 workers / 1 process = {cost[2] / cost[1]:.3f} (target <= 1.1); "
        f"req/s 2 workers / 1 process = {rps[2] / rps[1]:.2f} on this machine")
    shares = [100 * max(s) / max(1, sum(s)) for s in spreads]
    out(f"spread: the busier worker's share of 200 connections per run: {', '.join(f'{s:.0f}%' for s in shares)} "
        f"(target 40-60%: at most 60%)")
    per_core = 1e6 / cost[2]
    out(f"per core: {per_core:.0f} req/s (1e6 / CPU us per request with workers); projected, all cores serving and "
        f"the origin and load elsewhere: 8 cores {8 * per_core:.0f} req/s, 32 cores {32 * per_core:.0f} req/s")


if __name__ == "__main__":
    main()
