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
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def start_node(processes: harness.Processes, kind: str, tmp: str, origin: int, origin2: int, redis: int) -> tuple[int, int]:
    port, admin = harness.free_port(), harness.free_port()
    config = Path(tmp) / f"{kind}.toml"
    text = (f'[admin]\nlisten = ["tcp:{admin}:interface=127.0.0.1"]\n'
            f'[frontends.web]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\nbackend = "app"\n'
            f'[access-log]\nenabled = false\n'
            f'[backends.app]\nservers = ["127.0.0.1:{origin}", "127.0.0.1:{origin2}"]\n'
            f'[backends.app.stick]\non = "header(X-User)"\n')
    if kind == "cluster":
        text = f'[cluster]\nredis = "redis://127.0.0.1:{redis}/0"\nnode = "bench"\n' + text
    config.write_text(text)
    reactor = ["--reactor", "asyncio"] if kind.endswith("asyncio") else []
    command = [*harness.twistd_command(), "-n", "--pidfile=", *reactor, "--logfile", str(Path(tmp) / f"{kind}.log"),
               "rubrisproxy", "--config", str(config)]
    process = processes.start(command, env=harness.python_path_env(ROOT))
    harness.wait_port(port, process)
    return port, admin


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
            origin, origin2 = harness.free_port(), harness.free_port()
            processes.start([sys.executable, str(HERE / "baselines.py"), "origin", str(origin), str(origin2)])
            harness.wait_port(origin)
            nodes = {kind: start_node(processes, kind, tmp, origin, origin2, redis) for kind in NODES}
            time.sleep(0.5)  # the cluster node connects
            out(f"cluster_bench: {args.requests} requests per phase, {args.rounds} interleaved rounds, "
                f"one keep-alive connection, loopback; python {sys.version.split()[0]}")
            out("Redis operations (INFO commandstats, on the cluster node):")
            count_operations(out, nodes["cluster"][0], redis, args.requests)
            samples: dict[tuple[str, str], list[float]] = {}
            for round_ in range(args.rounds):
                for kind in NODES:
                    for keyed in ("", f"r{round_}"):
                        samples.setdefault((kind, keyed and "new entry"), []).extend(
                            latencies(nodes[kind][0], args.requests, keyed and f"{kind}-{keyed}"))
            out("Latency, one request at a time (median / p99, µs; ratio to local):")
            for phase in ("new entry", ""):
                base = samples[("local", phase)]
                for kind in NODES:
                    values = samples[(kind, phase)]
                    out(f"  {kind:14} {phase or 'no stick key':12} {harness.middle(values) * 1e6:7.1f} / "
                        f"{percentile(values, 0.99) * 1e6:7.1f}   "
                        f"{harness.middle(values) / harness.middle(base):.2f}x / "
                        f"{percentile(values, 0.99) / percentile(base, 0.99):.2f}x")
    finally:
        for process in list(processes.children):
            processes.stop(process)
        shutil.rmtree(tmp, ignore_errors=True)
    results = HERE / "results" / "cluster_bench.txt"
    results.write_text("\n".join(out.lines) + "\n")
    print(f"written to {os.path.relpath(results)}")


if __name__ == "__main__":
    main()
