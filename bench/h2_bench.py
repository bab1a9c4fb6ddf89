"""HTTP/2 clients through rubrisproxy and HAProxy, in the same run: ``h2load`` by prior knowledge (cleartext).

Small responses with 50 streams in flight on 10 connections (``-c 10 -m 5``), 1 MiB responses on 10
connections one stream each, and, as the baseline of both relays, small responses over HTTP/1.1 (``--h1``,
one request at a time on each of 10 connections); each relay speaks HTTP/1.1 to the same origin (nginx if installed, else a
Twisted origin). Relays pinned to core 1, h2load and the origin to core 0; interleaved rounds, medians;
req/s and relay CPU (user + system) per request, and their ratios rubrisproxy / HAProxy.

    python bench/h2_bench.py [--rounds 3] [--requests 20000] [--large-requests 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import harness
from harness import Output, cpu_seconds, free_port, middle, python_path_env
from http_bench import HAPROXY_CONF, LOAD_CORE, PROXY_CORE, ROOT, start_origin, wait_port

#: path, streams in flight per connection, h2load's protocol flag; "h1 small" is the same load in HTTP/1.1 (one
#: request at a time per connection), the HTTP/2 figures' baseline.
TESTS = {"small": ("/small", 5, ""), "1MiB": ("/large", 1, ""), "h1 small": ("/small", 1, "--h1")}


def start_relay(processes: harness.Processes, kind: str, origin: int,
                tmp: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """A relay; its port for HTTP/2 by prior knowledge, and for HTTP/1.1 (the same for rubrisproxy)."""
    port = h1_port = free_port()
    pin = ["taskset", "-c", PROXY_CORE]
    if kind == "rubrisproxy":
        command = [*harness.twistd_command(), "-n", "--pidfile=",
                   "--logfile", os.path.join(tmp, "rubrisproxy.log"), "rubrisproxy",
                   "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                   "--backend", f"127.0.0.1:{origin}", "--access-log", "off"]
        process = processes.start(pin + command, env=python_path_env(ROOT))
    else:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        conf = os.path.join(tmp, "haproxy.cfg")
        h1_port = free_port()  # an h2-only bind takes no HTTP/1.1
        with open(conf, "w") as f:
            f.write(HAPROXY_CONF.format(binds=f"    bind 127.0.0.1:{port} proto h2\n    bind 127.0.0.1:{h1_port}",
                                        origin=origin))
        process = processes.start(pin + [haproxy, "-f", conf, "-db"], stderr=subprocess.DEVNULL)
    wait_port(port, process)
    return process, port, h1_port


def run_h2load(port: int, path: str, requests: int, streams: int, flag: str = "") -> tuple[float, int]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "h2load", "-n", str(requests), "-c", "10", "-m", str(streams),
         *([flag] if flag else []), f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) succeeded", out).group(1))  # type: ignore[union-attr]
    if done != requests:
        print(f"    h2load: {done} of {requests} succeeded")
    return rps, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000, help="small responses per round")
    parser.add_argument("--large-requests", type=int, default=1000, help="1 MiB responses per round")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "h2_bench.txt"))
    args = parser.parse_args()
    for tool in ("h2load", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install nghttp2-client util-linux)")
    output = Output()
    processes = harness.Processes()
    tmp = tempfile.mkdtemp(prefix="h2bench-")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    origin_process = None
    try:
        origin_process, origin, origin_name = start_origin(tmp)
        output(f"origin: {origin_name}; h2load -c 10 by prior knowledge; relays on core {PROXY_CORE}")
        relays = {kind: start_relay(processes, kind, origin, tmp) for kind in ("rubrisproxy", "haproxy")}
        for _process, port, _h1 in relays.values():  # warm up: connections pooled, code paths hot
            run_h2load(port, "/small", 2000, 5)
        for round_ in range(args.rounds):
            for test, (path, streams, flag) in TESTS.items():
                requests = args.large_requests if test == "1MiB" else args.requests
                for kind, (process, port, h1_port) in relays.items():
                    before = cpu_seconds(process.pid)
                    rps, done = run_h2load(h1_port if flag else port, path, requests, streams, flag)
                    cpu_us = (cpu_seconds(process.pid) - before) / max(done, 1) * 1e6
                    results.setdefault((kind, test), []).append((rps, cpu_us))
                    output(f"round {round_ + 1} {test:8} {kind:11} {rps:9.0f} req/s {cpu_us:8.1f} µs CPU/req")
        output()
        output(f"medians of {args.rounds} rounds:")
        for test in TESTS:
            ours = [middle([r[i] for r in results[("rubrisproxy", test)]]) for i in (0, 1)]
            theirs = [middle([r[i] for r in results[("haproxy", test)]]) for i in (0, 1)]
            output(f"{test:8}: rubrisproxy {ours[0]:.0f} req/s {ours[1]:.1f} µs/req; haproxy {theirs[0]:.0f} req/s "
                   f"{theirs[1]:.1f} µs/req; ratio req/s {ours[0] / theirs[0]:.2f}, CPU/req {ours[1] / theirs[1]:.2f}")
    finally:
        processes.stop_all()
        if origin_process is not None:  # not in a process group of its own (http_bench starts it)
            origin_process.terminate()
            origin_process.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    with open(args.out, "w") as f:
        f.write("\n".join(output.lines) + "\n")


if __name__ == "__main__":
    main()
