"""Socket.IO clients through a backend crash: what 200 python-socketio clients see per relay.

Two python-socketio servers A and B (aiohttp, bench/sio_resume/server.py), a relay in front of
them, and 200 python-socketio AsyncClients in one process (bench/sio_resume/clients.py) that
connect with long polling, upgrade to WebSocket, then emit ``tick`` with an ack every 100 ms for
20 s; server A is SIGKILLed 8 s in. The clients reconnect with python-socketio's defaults (first
delay 1 s, ±50% jitter), as the JavaScript client does.

Relays, run one after the other in one command:

    rubrisproxy           twistd rubrisproxy --websocket session (whatever resume the tree has)
    rubrisproxy-noresume  the same with [websocket] resume = false
    haproxy               HAProxy, round robin with cookie stickiness (cookie SRV insert), health
                          checks every 1 s, option redispatch; skipped, saying why, when the
                          haproxy binary is missing
    compare               rubrisproxy session mode from the tree given by --compare DIR
    compare-noresume      the same with resume = false

Reports per relay: clients on A, clients disconnected (of all, and of A's), how soon they noticed
(their ``disconnect`` events after the kill: first, median, last), the reconnect storm
(reconnections after the kill: how many, first, median, 90th percentile and last, in seconds after
the kill), emits lost (sent, never acknowledged), emits refused while between sessions, and the
longest gap between two acks of one client (all clients' maximum, and the median of A's clients).
Written to bench/results/sio_resume.txt.

    python bench/sio_resume.py [--relays rubrisproxy,rubrisproxy-noresume,haproxy] [--clients 200]
                               [--interval-ms 100] [--seconds 20] [--kill-at 8]
                               [--proxy-path DIR] [--compare DIR] [--transports polling,websocket]
                               [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from harness import Output, Processes, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER = HERE / "sio_resume" / "server.py"
CLIENTS = HERE / "sio_resume" / "clients.py"
RESULTS = HERE / "results" / "sio_resume.txt"
RELAYS = ("rubrisproxy", "rubrisproxy-noresume", "haproxy", "compare", "compare-noresume")
START_TIMEOUT_S = 60.0

HAPROXY_CONFIG = """global
    maxconn 8192
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option redispatch
    retries 3
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
    cookie SRV insert indirect nocache
    server a 127.0.0.1:{a} cookie a check inter 1s fall 2 rise 2
    server b 127.0.0.1:{b} cookie b check inter 1s fall 2 rise 2
"""

out = Output()


class Skipped(Exception):
    """A relay that cannot run here (its binary missing)."""


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's next stdout line, within ``timeout`` seconds."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
            raise RuntimeError(f"{process.args!r}: no line within {timeout:.0f}s (so far {line[:200]!r})")
        chunk = process.stdout.readline()
        if not chunk:
            raise RuntimeError(f"{process.args!r} ended (status {process.wait()}) before writing a line")
        line += chunk
    return line.decode().strip()


@dataclass
class Run:
    """One relay's run: the clients' reports and when A was killed (time.monotonic())."""

    relay: str
    clients: list[dict[str, Any]]
    killed: float
    started: float


class Scenario:
    """Servers A and B, one relay, the clients, and the kill."""

    def __init__(self, args: argparse.Namespace, relay: str, processes: Processes, tmp: Path) -> None:
        self.args = args
        self.relay = relay
        self.processes = processes
        self.tmp = tmp
        self.port = free_port()
        self.ports = {"A": free_port(), "B": free_port()}
        self.servers: dict[str, subprocess.Popen[bytes]] = {}

    def start_server(self, name: str) -> None:
        process = self.processes.start([sys.executable, str(SERVER), name, str(self.ports[name])],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if read_line(process, START_TIMEOUT_S) != "READY":
            raise RuntimeError(f"server {name} did not start")
        self.servers[name] = process

    def relay_command(self) -> tuple[list[str], dict[str, str] | None]:
        a, b = self.ports["A"], self.ports["B"]
        if self.relay == "haproxy":
            binary = shutil.which("haproxy")
            if binary is None:
                raise Skipped("haproxy is not installed (apt-get install -y haproxy)")
            config = self.tmp / "haproxy.cfg"
            config.write_text(HAPROXY_CONFIG.format(port=self.port, a=a, b=b))
            return [binary, "-db", "-f", str(config)], None
        tree = self.args.compare if self.relay.startswith("compare") else self.args.proxy_path
        if tree is None:
            raise Skipped("no --compare DIR given")
        config = self.tmp / f"{self.relay}.toml"
        config.write_text("[websocket]\nresume = false\n" if self.relay.endswith("noresume") else "")
        command = [*harness.twistd_command(), "-n", "--pidfile=", "--logfile", str(self.tmp / f"{self.relay}.log"),
                   "rubrisproxy", "--config", str(config), "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                   "--backend", f"127.0.0.1:{a}", "--backend", f"127.0.0.1:{b}", "--websocket", "session",
                   "--access-log", "off"]
        return command, harness.python_path_env(Path(tree).resolve())

    def run(self) -> Run:
        a = self.args
        command, env = self.relay_command()
        self.start_server("A")
        self.start_server("B")
        with open(self.tmp / f"{self.relay}.out", "ab") as sink:
            relay = self.processes.start(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=self.tmp)
        harness.wait_port(self.port, relay)
        clients = self.processes.start(
            [sys.executable, str(CLIENTS), f"http://127.0.0.1:{self.port}", str(a.clients), str(a.interval_ms),
             str(a.seconds), "--transports", a.transports], stdout=subprocess.PIPE)
        ready = read_line(clients, START_TIMEOUT_S)
        if not ready.startswith("READY"):
            raise RuntimeError(f"clients: {ready[:200]}")
        started = float(ready.split()[1])
        time.sleep(max(0.0, started + a.kill_at - time.monotonic()))
        killed = time.monotonic()
        self.processes.signal(self.servers.pop("A"), signal.SIGKILL, timeout=5.0)
        line = read_line(clients, a.seconds + 60)
        if a.keep:
            Path(a.keep).mkdir(parents=True, exist_ok=True)
            (Path(a.keep) / f"{self.relay}.json").write_text(
                json.dumps({"killed": killed, "started": started, "clients": json.loads(line)}))
        return Run(self.relay, json.loads(line), killed, started)


def quantile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def summarize(run: Run) -> list[str]:
    clients, killed = run.clients, run.killed
    on_a = [c for c in clients if c["server"] == "A"]
    dropped = [c for c in clients if any(t >= killed for t in c["disconnects"])]
    dropped_a = [c for c in on_a if c in dropped]
    reconnects = sorted(t - killed for c in clients for t in c["connects"] if t >= killed)
    noticed = sorted(t - killed for c in clients for t in c["disconnects"] if t >= killed)
    sent = sum(c["sent"] for c in clients)
    lost = sum(c["sent"] - c["acked"] for c in clients)
    lines = [
        f"{run.relay}: {len(clients)} clients, {len(on_a)} on A",
        f"  disconnected      {len(dropped)} ({len(dropped_a)} of A's, {len(dropped) - len(dropped_a)} of B's)",
    ]
    if noticed:
        lines.append(f"  noticed           {len(noticed)} disconnect events: first {noticed[0]:.2f} s after the kill, "
                     f"median {quantile(noticed, 0.5):.2f}, last {noticed[-1]:.2f}")
    if reconnects:
        lines.append(
            f"  reconnect storm   {len(reconnects)} reconnections: first {reconnects[0]:.2f} s after the kill, "
            f"median {quantile(reconnects, 0.5):.2f}, p90 {quantile(reconnects, 0.9):.2f}, last {reconnects[-1]:.2f}")
    else:
        lines.append("  reconnect storm   none")
    lines.append(f"  emits             {sent} sent, {lost} lost (never acknowledged), "
                 f"{sum(c['skipped'] for c in clients)} refused between sessions")
    gaps = [c["gap"] for c in clients]
    gaps_a = [c["gap"] for c in on_a] or [0.0]
    lines.append(f"  longest ack gap   {max(gaps):.2f} s (median of A's clients {quantile(gaps_a, 0.5):.2f} s)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relays", default="rubrisproxy,rubrisproxy-noresume,haproxy")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kill-at", type=float, default=8.0)
    parser.add_argument("--proxy-path", default=str(ROOT), help="the tree rubrisproxy runs from (default: this one)")
    parser.add_argument("--compare", default=None, help="another tree, run as the compare relays (added to --relays)")
    parser.add_argument("--transports", default="polling,websocket", help="the clients' transports")
    parser.add_argument("--keep", default=None, help="a directory to write each relay's raw client reports to")
    args = parser.parse_args()
    relays = args.relays.split(",")
    if args.compare and "compare" not in relays:
        relays += ["compare", "compare-noresume"]
    unknown = set(relays) - set(RELAYS)
    if unknown:
        parser.error(f"unknown relays {sorted(unknown)}; known: {', '.join(RELAYS)}")
    harness.raise_open_files(8192)
    out(f"sio_resume: {args.clients} clients, emit+ack every {args.interval_ms} ms for {args.seconds:g} s, "
        f"SIGKILL A at {args.kill_at:g} s, transports {args.transports}")
    processes = Processes()
    with harness.terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="sio_resume-") as tmp:
        try:
            for relay in relays:
                try:
                    run = Scenario(args, relay, processes, Path(tmp)).run()
                except Skipped as why:
                    out(f"{relay}: skipped: {why}")
                    continue
                finally:
                    processes.stop_all()
                for line in summarize(run):
                    out(line)
        finally:
            processes.stop_all()
    out.save(str(RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
