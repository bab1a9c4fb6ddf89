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
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import harness
from harness import Output, Processes, cpu_times, free_port, middle, python_path_env, twistd_command
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


def cpu(all_pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of all of ``all_pids`` together."""
    times = [cpu_times(pid) for pid in all_pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def switches(all_pids: list[int]) -> int:
    """Context switches (voluntary and not) of all of ``all_pids`` together."""
    total = 0
    for pid in all_pids:
        with open(f"/proc/{pid}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
    return total


#: The cost runs: a label, the proxy's workers, and wrk's connections as a share of ``--connections`` (the
#: one-process run at half of them sees as many connections as each of the two workers does).
ARMS = (("1 process", 1, 1.0), ("1 process, half", 1, 0.5), ("2 workers", 2, 1.0))


def instructions(workers: int, origin_port: int, duration: int, connections: int, tmp: str) -> tuple[float, int]:
    """Instructions per request of all the proxy's processes (its workers under ``valgrind --trace-children``),
    counted only while wrk runs: a measure of cost that does not change with what else the machine does."""
    port, admin = free_port(), free_port()
    out = os.path.join(tmp, f"callgrind.w{workers}")
    command = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
               f"--callgrind-out-file={out}.%p", *twistd_command(), "-n", "--pidfile=", "--logfile",
               os.path.join(tmp, f"grind{workers}.log"), "rubrisproxy", "--listen",
               f"tcp:{port}:interface=127.0.0.1:backlog=1024", "--backend", f"127.0.0.1:{origin_port}",
               "--access-log", "off", "--admin", f"tcp:{admin}:interface=127.0.0.1", "--workers", str(workers)]
    process = subprocess.Popen(command, env=python_path_env(ROOT), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        harness.wait_port(admin, process, timeout=300)
        deadline = time.monotonic() + 300
        while workers > 1 and not all(w["state"] == "serving" for w in admin_json(admin, "workers")["workers"]):
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start under valgrind")
            time.sleep(1)
        harness.wait_port(port, process, timeout=300)
        run_wrk(port, "/small", 10, 3)  # warm up
        every = pids(process, workers, admin)  # the supervisor's counted too: it is idle meanwhile
        for pid in every:
            subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
        _, _, requests = run_wrk(port, "/small", connections, duration)
        for pid in every:
            subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(300)
    total = 0
    for path in glob.glob(out + ".*"):
        with open(path) as f:
            for line in f:
                match = re.match(r"totals:\s+(\d+)", line)
                if match:
                    total += int(match.group(1))
                    break
    return total / max(requests, 1), requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--spreads", type=int, default=5, help="200-connection runs measuring the spread")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections of the cost runs")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per request under callgrind (slow; not moved by other load)")
    parser.add_argument("--origin", choices=("fast", "twisted"), default="fast",
                        help="fast: bench/fast_origin.py, so the proxy is the bottleneck (default); twisted: twisted.web")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    harness.raise_open_files(4096)
    out = Output()
    processes = Processes()
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in ARMS}
    spreads: list[list[int]] = []
    counted: dict[int, float] = {}  # instructions per request, by the number of workers
    with tempfile.TemporaryDirectory() as tmp, harness.terminate_on_sigterm():
        try:
            origin_port = free_port()
            if args.origin == "fast":
                processes.start([sys.executable, os.path.join(HERE, "fast_origin.py"), str(origin_port)])
            else:
                processes.start([sys.executable, os.path.join(HERE, "baselines.py"), "origin", str(origin_port),
                                 str(free_port())])
            harness.wait_port(origin_port)
            proxies = {n: start_proxy(processes, n, origin_port, tmp) for n in (1, 2)}
            origin_name = "bench/fast_origin.py (asyncio, canned answers)" if args.origin == "fast" else "twisted.web"
            out(f"origin: {origin_name}, one process; {os.cpu_count()} cores, nothing pinned; wrk -t1, "
                f"{args.duration}s per run, {args.rounds} interleaved rounds; access log off")
            for _, port, _ in proxies.values():
                run_wrk(port, "/small", 10, 1)  # warm up
            for round_number in range(args.rounds):
                for label, n, share in ARMS:
                    connections = max(1, round(args.connections * share))
                    result = measure(proxies[n], n, connections, args.duration)
                    samples[label].append(result[:2])
                    out(f"  round {round_number + 1} {label:16} c={connections:<4} {result[0]:9.0f} req/s  "
                        f"{result[1]:7.1f} CPU us/req ({result[2]:.1f} system; {result[3]:.2f} context switches/req)")
            spreads = measure_spread(proxies[2], args.spreads, out)
            for n in (1, 2) if args.instructions else ():
                per_request, requests = instructions(n, origin_port, 15, args.connections, tmp)
                counted[n] = per_request
                out(f"  callgrind workers={n}: {per_request / 1000:.1f} k instructions/request ({requests} requests, "
                    "every process of the proxy)")
        finally:
            processes.stop_all()
    report(out, samples, spreads, args.connections, counted)


def measure(proxy: tuple[subprocess.Popen[bytes], int, int], workers: int, connections: int,
            duration: int) -> tuple[float, float, float, float]:
    """req/s, CPU microseconds per request (all the proxy's processes), of which system, context switches per
    request, of one wrk run."""
    process, port, admin = proxy
    every = pids(process, workers, admin)
    (user, system), switched = cpu(every), switches(every)
    rps, _, total = run_wrk(port, "/small", connections, duration)
    (user_after, system_after), switched_after = cpu(every), switches(every)
    total = max(total, 1)
    return (rps, (user_after - user + system_after - system) * 1e6 / total, (system_after - system) * 1e6 / total,
            (switched_after - switched) / total)


def measure_spread(proxy: tuple[subprocess.Popen[bytes], int, int], runs: int, out: Output) -> list[list[int]]:
    """How many of 200 connections each worker accepted, in each of ``runs`` wrk runs."""
    _, port, admin = proxy
    spreads = []
    for run in range(runs):
        accepted = [w["accepted"] for w in admin_json(admin, "workers")["workers"]]
        run_wrk(port, "/small", 200, 2)
        now = [w["accepted"] for w in admin_json(admin, "workers")["workers"]]
        spreads.append([a - b for a, b in zip(now, accepted, strict=True)])
        share = [100 * d / max(1, sum(spreads[-1])) for d in spreads[-1]]
        out(f"  spread run {run + 1}: 200 connections -> workers accepted {spreads[-1]} "
            f"({', '.join(f'{s:.0f}%' for s in share)})")
    return spreads


def report(out: Output, samples: dict[str, list[tuple[float, float]]], spreads: list[list[int]],
           connections: int, counted: dict[int, float]) -> None:
    rps = {label: middle([s[0] for s in runs]) for label, runs in samples.items()}
    cost = {label: middle([s[1] for s in runs]) for label, runs in samples.items()}
    out()
    out("medians")
    for label in samples:
        out(f"  {label:16} {rps[label]:9.0f} req/s  {cost[label]:7.1f} CPU us/req")
    two = cost["2 workers"]
    out(f"ratio: CPU per request, 2 workers / 1 process: {two / cost['1 process']:.3f} at the same {connections} "
        f"connections; {two / cost['1 process, half']:.3f} against one process with as many connections as each "
        f"worker has ({connections // 2}) (target <= 1.1)")
    if counted:
        out(f"ratio: instructions per request under callgrind, 2 workers / 1 process: {counted[2] / counted[1]:.3f} "
            "(what the processes do, whatever else runs on the machine)")
    shares = [100 * max(s) / max(1, sum(s)) for s in spreads]
    out(f"spread: the busier worker's share of 200 connections per run: {', '.join(f'{s:.0f}%' for s in shares)} "
        f"(target 40-60%: at most 60%)")
    per_core = 1e6 / two
    out(f"per core: {per_core:.0f} req/s (1e6 / CPU us per request with workers); projected, all cores serving and "
        f"the origin and load elsewhere: 8 cores {8 * per_core:.0f} req/s, 32 cores {32 * per_core:.0f} req/s")


if __name__ == "__main__":
    main()
