"""What a Redis cluster costs: Redis operations per request, and latency added to the requests that write.

    python bench/cluster_bench.py [--requests 2000] [--rounds 3]

Starts a real ``redis-server`` (a free port, its own temporary directory), a Twisted origin (bench/baselines.py)
and rubrisproxy nodes under twistd, each with a backend of two addresses of that origin and a stick table on
``header(X-User)``:

- ``local``: no ``[cluster]`` (the baseline);
- ``cluster``: ``[cluster]`` on the Redis;
- ``local-asyncio``: as ``local``, on Twisted's asyncio reactor: what choosing redis-py's asyncio client (which
  needs that reactor) would cost every request.

Redis operations are counted with ``INFO commandstats`` before and after each phase on the cluster node (the
bench's own ``INFO`` calls subtracted): plain requests (no stick key), requests whose stick entry exists,
requests each creating a new stick entry, and session-mode WebSocket resumes (sessions moved off a drained
server). Latency: one keep-alive connection sending requests one after another, each with a new stick key (each
creates an entry), and the same with no key; median and p99 per node, rounds interleaved, as ratios to
``local``. Results go to bench/results/cluster_bench.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from websockets.sync.client import connect as websocket_connect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

NODES = ("local", "cluster", "local-asyncio")


def start_redis(processes: harness.Processes, tmp: str) -> int:
    port = harness.free_port()
    processes.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
                     "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    harness.wait_port(port)
    return port


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, check=True, text=True).stdout


def redis_calls(port: int) -> int:
    """Commands Redis has run so far, the INFO calls of this bench excluded."""
    total = 0
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def start_echo(processes: harness.Processes) -> int:
    """A WebSocket echo backend (tests/wsecho.py)."""
    port = harness.free_port()
    processes.start([sys.executable, "-m", "tests.wsecho", str(port)], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                    env=harness.python_path_env(ROOT))
    harness.wait_port(port)
    return port


@dataclass(frozen=True)
class Backends:
    """What the nodes stand in front of: the HTTP origin's two ports, the two echo backends, Redis's port."""

    origins: list[int]
    echoes: list[int]
    redis: int


@dataclass(frozen=True)
class Node:
    port: int
    admin: int
    ws: int
    pid: int


def start_node(processes: harness.Processes, kind: str, tmp: str, backends: Backends) -> Node:
    origins, echoes, redis = backends.origins, backends.echoes, backends.redis
    port, admin, ws = harness.free_port(), harness.free_port(), harness.free_port()
    config = Path(tmp) / f"{kind}.toml"
    text = (f'[admin]\nlisten = ["tcp:{admin}:interface=127.0.0.1"]\n'
            f'[frontends.web]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\nbackend = "app"\n'
            f'[frontends.ws]\nlisten = ["tcp:{ws}:interface=127.0.0.1"]\nbackend = "ws"\n'
            f'[access-log]\nenabled = false\n'
            f'[backends.app]\nservers = ["127.0.0.1:{origins[0]}", "127.0.0.1:{origins[1]}"]\n'
            f'[backends.app.stick]\non = "header(X-User)"\n'
            f'[backends.ws]\nservers = ["127.0.0.1:{echoes[0]}", "127.0.0.1:{echoes[1]}"]\n'
            f'[backends.ws.websocket]\nmode = "session"\n')
    if kind == "cluster":
        text = f'[cluster]\nredis = "redis://127.0.0.1:{redis}/0"\nnode = "bench"\n' + text
    config.write_text(text)
    reactor = ["--reactor", "asyncio"] if kind.endswith("asyncio") else []
    command = [*harness.twistd_command(), "-n", "--pidfile=", *reactor, "--logfile", str(Path(tmp) / f"{kind}.log"),
               "rubrisproxy", "--config", str(config)]
    process = processes.start(command, env=harness.python_path_env(ROOT))
    harness.wait_port(port, process)
    return Node(port, admin, ws, process.pid)


def admin_call(admin: int, method: str, path: str) -> dict[str, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method,
                                     data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"} if method == "POST" else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def count_resume_operations(out: harness.Output, admin: int, ws: int, redis: int, count: int = 40) -> None:
    """Session-mode WebSockets, then a drain of the server half of them are on: Redis operations per resume."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(websocket_connect(f"ws://127.0.0.1:{ws}/")) for _ in range(count)]
        for each in sockets:
            each.send("hello")
            each.recv(timeout=10)
        before = redis_calls(redis)
        admin_call(admin, "POST", "/backends/ws/servers/s1/drain")
        deadline = time.monotonic() + 20
        resumes = 0
        while time.monotonic() < deadline and resumes < count // 2:
            time.sleep(0.1)
            resumes = int(str(admin_call(admin, "GET", "/backends/ws")["resumes"]))
        for each in sockets:
            each.send("again")
            each.recv(timeout=10)
        time.sleep(0.3)
        operations = redis_calls(redis) - before
    out(f"  Redis operations per session resume: {(operations - 2) / max(resumes, 1):.3f} "
        f"({resumes} sessions moved by a drain; the drain itself: 2)")


class Client:
    """One keep-alive HTTP/1.1 connection, requests one after another; each answer read whole."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, extra: bytes = b"") -> float:
        started = time.perf_counter()
        self.socket.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n" + extra + b"\r\n")
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(head.decode(errors="replace"))
                    return time.perf_counter() - started
            data = self.socket.recv(65536)
            if not data:
                raise RuntimeError("connection closed")
            self.buffer += data

    def close(self) -> None:
        self.socket.close()


def latencies(port: int, count: int, keyed: str) -> list[float]:
    client = Client(port)
    try:
        client.get()  # connected and warm
        if keyed:
            return [client.get(b"X-User: %s-%d\r\n" % (keyed.encode(), n)) for n in range(count)]
        return [client.get() for _ in range(count)]
    finally:
        client.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def count_operations(out: harness.Output, port: int, redis: int, count: int) -> None:
    client = Client(port)
    try:
        phases = (("plain request (no stick key)", lambda n: client.get()),
                  ("request whose stick entry exists", lambda n: client.get(b"X-User: known\r\n")),
                  ("request creating a stick entry", lambda n: client.get(b"X-User: new-%d\r\n" % n)))
        client.get(b"X-User: known\r\n")
        time.sleep(0.2)
        for label, request in phases:
            before = redis_calls(redis)
            for n in range(count):
                request(n)
            time.sleep(0.3)  # the last writes land
            out(f"  Redis operations per {label}: {(redis_calls(redis) - before) / count:.3f}")
    finally:
        client.close()


def report(out: harness.Output, samples: dict[tuple[str, str], list[float]], cpu: dict[tuple[str, str], float],
           requests: int) -> None:
    out("Latency, one request at a time: median / p99 (µs), their ratios to local; the node's CPU per request")
    for phase in ("new entry", ""):
        base = samples[("local", phase)]
        for kind in NODES:
            values = samples[(kind, phase)]
            out(f"  {kind:14} {phase or 'no stick key':12} {harness.middle(values) * 1e6:7.1f} / "
                f"{percentile(values, 0.99) * 1e6:7.1f}   "
                f"{harness.middle(values) / harness.middle(base):.2f}x / "
                f"{percentile(values, 0.99) / percentile(base, 0.99):.2f}x   "
                f"CPU {cpu[(kind, phase)] / requests * 1e6:6.1f} µs/req "
                f"({cpu[(kind, phase)] / cpu[('local', phase)]:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    out = harness.Output()
    processes = harness.Processes()
    tmp = tempfile.mkdtemp(prefix="cluster-bench-")
    try:
        with harness.terminate_on_sigterm():
            redis = start_redis(processes, tmp)
            origins = [harness.free_port(), harness.free_port()]
            processes.start([sys.executable, str(HERE / "baselines.py"), "origin", *map(str, origins)])
            harness.wait_port(origins[0])
            backends = Backends(origins, [start_echo(processes), start_echo(processes)], redis)
            nodes = {kind: start_node(processes, kind, tmp, backends) for kind in NODES}
            time.sleep(0.5)  # the cluster node connects
            out(f"cluster_bench: {args.requests} requests per phase, {args.rounds} interleaved rounds, "
                f"one keep-alive connection, loopback; python {sys.version.split()[0]}")
            out("Redis operations (INFO commandstats, on the cluster node):")
            cluster = nodes["cluster"]
            count_operations(out, cluster.port, redis, args.requests)
            count_resume_operations(out, cluster.admin, cluster.ws, redis)
            samples: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], float] = {}
            for round_ in range(args.rounds):
                for kind in NODES:
                    for keyed in ("", f"r{round_}"):
                        phase = keyed and "new entry"
                        used = harness.cpu_seconds(nodes[kind].pid)
                        samples.setdefault((kind, phase), []).extend(
                            latencies(nodes[kind].port, args.requests, keyed and f"{kind}-{keyed}"))
                        cpu[(kind, phase)] = cpu.get((kind, phase), 0.0) + harness.cpu_seconds(nodes[kind].pid) - used
            report(out, samples, cpu, args.requests * args.rounds)
    finally:
        for process in list(processes.children):
            processes.stop(process)
        shutil.rmtree(tmp, ignore_errors=True)
    out.save(os.path.relpath(HERE / "results" / "cluster_bench.txt"))


if __name__ == "__main__":
    main()
