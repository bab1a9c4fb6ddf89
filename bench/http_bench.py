"""HTTP benchmark: rubrisproxy against Twisted's ReverseProxyResource and portforward, in one run.

Starts an origin (nginx when installed, else a Twisted origin; the output says which),
then each relay pinned to one core, and drives each with wrk (keep-alive) from the
other core: small responses at 1, 50 and 200 connections and 1 MiB responses at 10.
Prints req/s, p99 latency, the relay's CPU microseconds per request, and ratios.

    python bench/http_bench.py [--duration 10] [--access-log off|file] [--compare DIR] [--origin fast]

``--relays`` may also name ``haproxy`` (HAProxy 2.6 in http mode, keep-alive and connection reuse to the origin).
``--origin fast`` answers small requests from ``fast_origin.py`` (canned answers, far cheaper than the relays), so
the relay is the bottleneck; the 1 MiB test needs the default origin. The ``close c=50`` test sends
``Connection: close`` on every request: a new client connection per request.

``--compare DIR`` runs each rubrisproxy relay a second time from another checkout (``NAME@compared``, e.g.
the code before a change) in the same interleaved rounds, and prints this checkout's ratios to it.

Each run also says how much slower than its best the relays' core ran a fixed piece of Python meanwhile
(``harness.CoreSpeed``): on a shared virtual machine that core can slow down by up to 2x for seconds at a time,
and a run's CPU per request rises with it; such a run is the machine's, not the relay's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial

import harness
from harness import cpu_times, free_port, middle, python_path_env

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECOND_ORIGIN_PORT = 0
COMPARED = "compared"  # the suffix of a relay run from the --compare checkout
PROXY_CORE = "1"
LOAD_CORE = "0"

HAPROXY_CONF = """
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend web
{binds}
    default_backend app
backend app
    http-reuse always
    server s1 127.0.0.1:{origin}
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        listen 127.0.0.1:{port2} backlog=1024;
        location = /small {{ default_type text/plain; return 200 "hello, world\\n"; }}
        location = /large {{ default_type application/octet-stream; alias {tmp}/large.bin; }}
    }}
}}
"""


@dataclass
class Result:
    relay: str
    test: str
    rps: float
    p99_ms: float
    cpu_us: float  # user + system CPU per request
    user_us: float = 0.0


wait_port = partial(harness.wait_port, timeout=15.0, how=harness.PortWait(error=SystemExit))  # instructions_bench.py imports it too


def start_origin(tmp: str, kind: str = "") -> tuple[subprocess.Popen[bytes], int, str]:
    """The origin (nginx if installed), listening on a port it returns and on SECOND_ORIGIN_PORT too.

    ``kind="fast"``: fast_origin.py (small answers only, one port).
    """
    global SECOND_ORIGIN_PORT
    port = free_port()
    SECOND_ORIGIN_PORT = free_port()
    if kind == "fast":
        process = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, os.path.join(HERE, "fast_origin.py"),
                                    str(port)])
        wait_port(port)
        return process, port, "fast_origin.py"
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        os.chmod(tmp, 0o755)  # nginx workers run unprivileged
        with open(os.path.join(tmp, "large.bin"), "wb") as f:
            f.write(b"x" * (1 << 20))
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port, port2=SECOND_ORIGIN_PORT))
        process = subprocess.Popen(["taskset", "-c", LOAD_CORE, nginx, "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
        name = "nginx"
    else:
        process = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, os.path.join(HERE, "baselines.py"),
                                    "origin", str(port), str(SECOND_ORIGIN_PORT)])
        name = "twisted.web origin"
    wait_port(port)
    return process, port, name


def start_relay(kind: str, origin_port: int, access_log: str, tmp: str,
                compare: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """A relay listening on a port it returns; ``kind@compared`` is that rubrisproxy relay run from ``compare``."""
    kind, _, at = kind.partition("@")
    root = compare if at else ROOT
    port = free_port()
    pin = ["taskset", "-c", PROXY_CORE]
    if kind.startswith("rubrisproxy"):
        log = "off" if access_log == "off" or kind == "rubrisproxy-nolog" else os.path.join(tmp, f"access-{kind}{at}.log")
        # twistd's script, not ``python -c``: that puts the working directory first on sys.path, ahead of ``root``
        command = [*harness.twistd_command(), "-n", "--pidfile=",
                   "--logfile", os.path.join(tmp, "rubrisproxy.log"), "rubrisproxy",
                   "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                   "--backend", f"127.0.0.1:{origin_port}", "--access-log", log]
        if kind == "rubrisproxy-2origins":
            command += ["--backend", f"127.0.0.1:{SECOND_ORIGIN_PORT}"]  # round robin over both
    elif kind == "haproxy":
        conf = os.path.join(tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(HAPROXY_CONF.format(binds=f"    bind 127.0.0.1:{port} backlog 1024", origin=origin_port))
        command = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", conf, "-db"]
    else:
        command = [sys.executable, os.path.join(HERE, "baselines.py"), kind, str(port), str(origin_port)]
    env = python_path_env(root)
    # ReverseProxyResource prints a traceback for every request wrk abandons at the end of a run.
    quiet = kind in ("reverse", "haproxy")
    process = subprocess.Popen(pin + command, env=env, stderr=subprocess.DEVNULL if quiet else None)
    wait_port(port)
    return process, port


def run_wrk(port: int, path: str, connections: int, duration: int,
            headers: tuple[str, ...] = ()) -> tuple[float, float, int]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         *(arg for header in headers for arg in ("-H", header)), f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        print(f"    wrk reported: {errors.group(0)}")
    return rps, p99_ms, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--access-log", choices=("off", "file"), default="file")
    parser.add_argument("--relays", default="rubrisproxy,rubrisproxy-nolog,rubrisproxy-2origins,reverse,portforward",
                        help="rubrisproxy logs each request to a file (as ReverseProxyResource does); "
                             "rubrisproxy-nolog logs nothing (as portforward); rubrisproxy-2origins balances "
                             "over two origin addresses")
    parser.add_argument("--only", default="", help="run only the tests whose name contains this, e.g. c=50")
    parser.add_argument("--compare", default="", help="another checkout whose rubrisproxy relays run beside these")
    parser.add_argument("--origin", choices=("default", "fast"), default="default",
                        help="fast: fast_origin.py (small responses only)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    close = ("Connection: close",)
    tests = [("small c=1", "/small", 1, ()), ("small c=50", "/small", 50, ()), ("small c=200", "/small", 200, ()),
             ("1MiB c=10", "/large", 10, ()), ("close c=50", "/small", 50, close)]
    if args.origin == "fast":
        tests = [test for test in tests if test[1] == "/small"]
    tests = [test for test in tests if args.only in test[0]]
    relays = args.relays.split(",")
    if args.compare:
        relays += [f"{relay}@{COMPARED}" for relay in relays if relay.startswith("rubrisproxy")]
    samples: dict[tuple[str, str], list[Result]] = {}
    with harness.terminate_on_sigterm(), tempfile.TemporaryDirectory() as tmp:
        origin, origin_port, origin_name = start_origin(tmp, args.origin)
        print(f"origin: {origin_name}; relays pinned to core {PROXY_CORE}, wrk and origin on core {LOAD_CORE}; "
              f"{args.duration}s per run, {args.rounds} interleaved rounds; rubrisproxy access log: {args.access_log}")
        processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        probes = harness.Processes()
        speed = harness.CoreSpeed(probes, PROXY_CORE, tmp)
        try:
            for relay in relays:
                processes[relay] = start_relay(relay, origin_port, args.access_log, tmp, args.compare)
                run_wrk(processes[relay][1], "/small", 10, 1)  # warm up
            for round_number in range(args.rounds):
                for name, path, connections, headers in tests:
                    for relay in relays:
                        process, port = processes[relay]
                        user_before, system_before = cpu_times(process.pid)
                        started = time.time()
                        rps, p99, total = run_wrk(port, path, connections, args.duration, headers)
                        user_after, system_after = cpu_times(process.pid)
                        slowdown = speed.slowdown(started, time.time())
                        user, system = user_after - user_before, system_after - system_before
                        per_request = 1e6 / max(total, 1)
                        result = Result(relay, name, rps, p99, (user + system) * per_request, user * per_request)
                        samples.setdefault((relay, name), []).append(result)
                        print(f"  round {round_number + 1} {relay:26} {name:12} {rps:10.0f} req/s  "
                              f"p99 {p99:8.2f} ms  {result.cpu_us:8.1f} CPU us/req ({result.user_us:.1f} user)  "
                              f"core {slowdown:4.2f}x slower than its best")
        finally:
            probes.stop_all()
            for process, _ in processes.values():
                process.send_signal(signal.SIGTERM)
                process.wait(10)
            origin.terminate()
            origin.wait(10)
    report([median(results) for results in samples.values()])


def median(results: list[Result]) -> Result:
    first = results[0]
    return Result(first.relay, first.test, middle([r.rps for r in results]), middle([r.p99_ms for r in results]),
                  middle([r.cpu_us for r in results]), middle([r.user_us for r in results]))


def report(results: list[Result]) -> None:
    by = {(r.relay, r.test): r for r in results}
    tests = list(dict.fromkeys(r.test for r in results))
    print("\nmedians")
    for r in results:
        print(f"  {r.relay:26} {r.test:12} {r.rps:10.0f} req/s  p99 {r.p99_ms:8.2f} ms  {r.cpu_us:8.1f} CPU us/req "
              f"({r.user_us:.1f} user)")
    print("\nratios: req/s, and CPU per request (lower is better for rubrisproxy)")
    for test in tests:
        one, two = by.get(("rubrisproxy", test)), by.get(("rubrisproxy-2origins", test))
        if one and two:
            print(f"  {test:12} balancing over 2 origins vs 1: {two.rps / one.rps:5.2f}x req/s, "
                  f"{two.cpu_us / one.cpu_us:5.2f}x CPU/req")
    for test in tests:
        for variant in ("rubrisproxy", "rubrisproxy-nolog"):
            if (variant, test) in by:
                print(f"  {test:12} {variant:17} " + "; ".join(
                    ratio_line(by[variant, test], by[baseline, test], f"vs {baseline}")
                    for baseline in ("reverse", "portforward", "haproxy") if (baseline, test) in by))
    for r in results:
        if (f"{r.relay}@{COMPARED}", r.test) in by:
            print(f"  {r.test:12} {r.relay:17} "
                  + ratio_line(r, by[f"{r.relay}@{COMPARED}", r.test], "vs the compared checkout"))


def ratio_line(ours: Result, other: Result, label: str) -> str:
    return f"{label}: {ours.rps / other.rps:5.2f}x req/s, {ours.cpu_us / other.cpu_us:5.2f}x CPU/req"


if __name__ == "__main__":
    main()
