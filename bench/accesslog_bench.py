"""What the access log costs: rubrisproxy with its default access log against ``--access-log off``, in one run.

Both proxies run under twistd (main log to a file, as a daemon's would be), pinned to one core; wrk
drives each with 50 keep-alive connections from the other core, against a minimal keep-alive origin
(fixed answers, no parsing, so it is never the bottleneck). Rounds are interleaved and medians
reported, with the ratios of the same run: the machine may be shared, so only ratios compare.

    python bench/accesslog_bench.py [--duration 10] [--rounds 3] [--connections 50] [--compare DIR]

``--compare DIR`` measures another checkout (e.g. the code before a change) the same way, in the same
rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import Processes, cpu_times, free_port, middle, python_path_env, twistd_command  # noqa: E402
from http_bench import LOAD_CORE, PROXY_CORE, ROOT, run_wrk, wait_port  # noqa: E402
from twisted.internet import protocol, reactor  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, world\n"


def origin(port: int) -> None:
    """A keep-alive origin that answers every request head (bodyless GETs) with the same small response."""

    class Answer(protocol.Protocol):
        buffered = b""

        def dataReceived(self, data: bytes) -> None:
            data = self.buffered + data
            count = data.count(b"\r\n\r\n")
            self.buffered = data[data.rfind(b"\r\n\r\n") + 4:] if count else data
            if count:
                self.transport.write(RESPONSE * count)  # type: ignore[union-attr]

    factory = protocol.Factory.forProtocol(Answer)
    factory.noisy = False
    reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=1024)  # type: ignore[attr-defined, arg-type]
    reactor.run()  # type: ignore[attr-defined]


@dataclass
class Variant:
    label: str
    root: str
    access_log: list[str]  # flags: none for the default


@dataclass
class Sample:
    rps: float
    cpu_us: float


def start_proxy(processes: Processes, variant: Variant, origin_port: int, tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = os.path.join(tmp, f"{variant.label.replace(' ', '_')}.log")
    command = ["taskset", "-c", PROXY_CORE, *twistd_command(), "-n", "--pidfile=", "--logfile", log, "rubrisproxy",
               "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024", "--backend", f"127.0.0.1:{origin_port}",
               *variant.access_log]
    process = processes.start(command, env=python_path_env(variant.root), cwd=tmp)
    wait_port(port, process)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--compare", default="", help="another checkout to measure the same way")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    roots = [("", ROOT)] + ([(f"{os.path.basename(os.path.abspath(args.compare))}: ", args.compare)]
                            if args.compare else [])
    variants = [Variant(f"{name}{label}", root, flags) for name, root in roots
                for label, flags in (("default log", []), ("log off", ["--access-log", "off"]))]
    samples: dict[str, list[Sample]] = {v.label: [] for v in variants}
    processes = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            origin_port = free_port()
            origin_process = processes.start(
                ["taskset", "-c", LOAD_CORE, sys.executable, os.path.abspath(__file__), "--origin", str(origin_port)])
            wait_port(origin_port, origin_process)
            proxies = {v.label: start_proxy(processes, v, origin_port, tmp) for v in variants}
            print(f"proxies pinned to core {PROXY_CORE}, wrk and origin on core {LOAD_CORE}; {args.connections} "
                  f"keep-alive connections, {args.duration}s per run, {args.rounds} interleaved rounds")
            for _, port in proxies.values():
                run_wrk(port, "/", 10, 1)  # warm up
            for round_number in range(args.rounds):
                for variant in variants:
                    process, port = proxies[variant.label]
                    user, system = cpu_times(process.pid)
                    rps, _, total = run_wrk(port, "/", args.connections, args.duration)
                    user_after, system_after = cpu_times(process.pid)
                    sample = Sample(rps, (user_after - user + system_after - system) * 1e6 / max(total, 1))
                    samples[variant.label].append(sample)
                    print(f"  round {round_number + 1} {variant.label:24} {rps:9.0f} req/s {sample.cpu_us:7.1f} "
                          f"CPU us/req", flush=True)
            for variant in variants:
                log = os.path.join(tmp, f"{variant.label.replace(' ', '_')}.log")
                print(f"  {variant.label}: main log {os.path.getsize(log) // 1024} KiB")
        finally:
            processes.stop_all()
    print("\nmedians")
    medians = {label: Sample(middle([s.rps for s in runs]), middle([s.cpu_us for s in runs]))
               for label, runs in samples.items()}
    for label, sample in medians.items():
        print(f"  {label:24} {sample.rps:9.0f} req/s {sample.cpu_us:7.1f} CPU us/req")
    print("\nratios, default access log / --access-log off (same run)")
    for name, _ in roots:
        on, off = medians[f"{name}default log"], medians[f"{name}log off"]
        print(f"  {name or 'this tree: '}{on.rps / off.rps:5.2f}x req/s, {on.cpu_us / off.cpu_us:5.2f}x CPU/req")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--origin"]:
        origin(int(sys.argv[2]))
    else:
        main()
