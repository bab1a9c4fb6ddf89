"""Live upgrade (issue 18): what WebSocket and keep-alive HTTP clients see when the proxy is upgraded at 10 s.

Load, all through one relay port: 200 session-mode and 200 tunnel-mode WebSocket clients (two processes of
bench/ws_resume/clients.js, paths /session and /tunnel), each sending the text message "<client>:<seq>" every
20 ms and checking the echoes (lost, duplicated, reordered: both directions, since an echo must come back),
to two Node `ws` echo backends (bench/ws/echo.js, balanced round robin); wrk on keep-alive HTTP (20
connections, each waiting 10 ms between requests, so the relay is not saturated) to bench/fast_origin.py;
and one keep-alive probe connection (a GET every 20 ms, noting when the relay closes it between requests).
At 10 s the event, per variant:

    upgrade         twistd -n rubrisproxy --config FILE, then `rubrisproxy ctl upgrade` (else SIGUSR2 when the
                    tree handles it; else "upgrade not available in this tree" and the variant is skipped)
    restart         today's baseline: SIGTERM rubrisproxy, wait for it to exit, start it again
    haproxy-reload  HAProxy 2.6 (every WebSocket a tunnel), a new process started with `-x SOCKET -sf OLDPID`
                    (the seamless reload: listeners passed over the stats socket); no hard-stop-after, so the
                    old process lingers while it holds connections, as users see it

Printed per variant, next to the targets (0 disconnected, 0 lost/duplicated/reordered, 0 HTTP errors):
disconnected clients and close codes, lost / duplicated / reordered messages per mode, the longest
silence of each client from the event on (p99 and max over the clients that stayed connected), wrk's
non-2xx and socket errors, the probe's failures and the keep-alive connections the relay closed, and when
each old process exited (seconds after the event) or that it was still alive at the end; then per variant the
targets met or missed, what `ctl upgrade` and `ctl upgrade --status` said, and the relay's `upgrade:` log lines.
Written to bench/results/upgrade_scenario.txt.

    python bench/upgrade_scenario.py [--variants upgrade,restart,haproxy-reload] [--tree DIR] [--workers N]
                                     [--upgrade-by auto|ctl|signal]
                                     [--clients 200] [--interval-ms 20] [--seconds 20] [--event-at 10]
                                     [--http-connections 20] [--http-delay-ms 10] [--no-pin] [--keep-logs DIR]

--tree DIR runs rubrisproxy (and its ctl) from that checkout (PYTHONPATH=DIR, from a temporary directory), for the
upgrade and restart variants alike. --upgrade-by ctl or signal insists on one way.
--workers N gives rubrisproxy `[process] workers = N` (then nothing is pinned: the workers need both cores);
otherwise the relay runs on core 1 and the load on core 0. Every process of a variant carries a tag in its
environment, so what the relay spawned (an upgraded process, workers) is found and stopped too, even on
Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
from harness import JsonLines, Output, Processes, free_port
from ws_resume import ECHO_JS, LogTail, log_shapes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIENTS_JS = HERE / "ws_resume" / "clients.js"
FAST_ORIGIN = HERE / "fast_origin.py"
HAPROXY = "/usr/sbin/haproxy"
RESULTS = HERE / "results" / "upgrade_scenario.txt"
VARIANTS = ("upgrade", "restart", "haproxy-reload")
MODES = ("session", "tunnel")
TAG = "RUBRISPROXY_BENCH_RUN"
PROXY_CORE, LOAD_CORE = "1", "0"
DRAIN_MS = 3000  # the clients wait this long for late echoes after they stop sending
LINGER_S = 5.0  # after the clients have closed, how long old processes are watched for their exit
OPEN_TIMEOUT_S = 60.0
UPGRADE_LINE = "upgrade:"  # the relay's log lines about an upgrade start so; shown whole
WRK_SCRIPT = """
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "10")
function delay() return delay_ms end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p99_us": %d, "max_us": %d}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(99), latency.max))
end
"""


class ScenarioError(Exception):
    """Something the scenario needs did not happen (a process would not start, the clients failed)."""


out = Output()
PORT_WAIT = harness.PortWait(interval=0.02, error=ScenarioError, name_command=True)


# --- processes of a run ---------------------------------------------------------------------------------

def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def tagged_pids(tag: str) -> set[int]:
    """Processes whose environment carries ``TAG=tag`` (the relay and whatever it spawned with its environment)."""
    needle = f"{TAG}={tag}".encode()
    found = set()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.add(pid)
        except OSError:
            continue
    return {pid for pid in found if alive(pid)}


def children(parents: set[int]) -> set[int]:
    """Living processes whose parent is one of ``parents``."""
    found = set()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) in parents:
                    found.add(pid)
        except (OSError, IndexError, ValueError):
            continue
    return {pid for pid in found if alive(pid)}


def listeners(port: int, skip: set[int], since: int) -> set[int]:
    """Processes (but those in ``skip``, and those older than pid ``since``) holding a socket listening on ``port``:
    one spawned with a clean environment, and not by a process we know, is still found this way. Costly on a busy
    machine (every socket of the host, every file descriptor of the candidates): done a few times per run."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        inodes |= {f"socket:[{row[9]}]" for row in rows if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port}
    found = set()
    for pid in {pid for pid in all_pids() if pid >= since} - skip - {os.getpid()}:
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                found.add(pid)
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return "?"
    return " ".join(Path(w.decode(errors="replace")).name if i == 0 else w.decode(errors="replace")
                    for i, w in enumerate(words) if w)[:90]


def kill_all(pids: set[int]) -> list[int]:
    """SIGTERM, then SIGKILL, the living ones of ``pids``; returns them."""
    left = sorted(pid for pid in pids if alive(pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(alive(pid) for pid in left):
            time.sleep(0.05)
    return left


@dataclass
class Watched:
    """A process of the relay: when it was first seen and when it exited, its CPU seconds when last seen."""

    pid: int
    what: str
    seen: float  # scenario seconds
    exited: float | None = None
    status: int | None = None  # its exit status, when it was our child (negative: the signal that ended it)
    cpu: float = 0.0


class Watch:
    """The relay's processes (found by tag, parentage or, twice after the event, listening socket), polled: when
    each appeared and exited, and its CPU."""

    SCAN_S = 0.5  # how often /proc is searched for new processes of the relay

    def __init__(self, tag: str, port: int, load: Callable[[], set[int]]) -> None:
        self.tag, self.port, self.load = tag, port, load
        self.pids: dict[int, Watched] = {}
        self.scanned = -1.0
        self.deep_at: list[float] = []  # when to look for listeners on the port too (after the event)

    def scan(self, deep: bool = False) -> set[int]:
        """The relay's processes now: tagged, children of those we know, and (``deep``) listening on its port."""
        found = tagged_pids(self.tag) | children(self.living())
        if deep and self.pids:
            found |= listeners(self.port, skip=found | self.load(), since=min(self.pids))
        return found

    def poll(self, now: float, direct: list[subprocess.Popen[bytes]]) -> None:
        for process in direct:
            if process.poll() is not None and process.pid in self.pids:  # reaped, so its exit is seen
                self.pids[process.pid].status = process.returncode
        if now - self.scanned >= self.SCAN_S:
            self.scanned = now
            deep = bool(self.deep_at) and now >= self.deep_at[0]
            if deep:
                self.deep_at.pop(0)
            for pid in self.scan(deep) - set(self.pids):
                self.pids[pid] = Watched(pid, command_line(pid), now)
        for watched in self.pids.values():
            if watched.exited is not None:
                continue
            try:
                watched.cpu = harness.cpu_seconds(watched.pid)
            except OSError:
                pass
            if not alive(watched.pid):
                watched.exited = now

    def living(self) -> set[int]:
        return {pid for pid, w in self.pids.items() if w.exited is None}


# --- the keep-alive probe ---------------------------------------------------------------------------------

@dataclass
class ProbeResult:
    """One keep-alive connection's requests: failures, and the times the relay closed it between requests."""

    requests: int = 0
    ok: int = 0
    connections: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    closed_idle: list[tuple[float, str]] = field(default_factory=list)  # retried at once on a new connection
    answered: list[tuple[float, float]] = field(default_factory=list)  # (when sent, seconds to the answer)


class KeepAliveProbe(threading.Thread):
    """A GET every ``interval`` s on one keep-alive connection until ``stop``; a request that fails on a reused
    connection is retried at once on a new one (as HTTP clients do for idempotent requests): only a failure on a
    fresh connection, or a status other than 200, is a failure."""

    def __init__(self, port: int, interval: float, clock: Callable[[], float], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.clock, self.stop = port, interval, clock, stop
        self.result = ProbeResult()

    def run(self) -> None:
        r = self.result
        connection: http.client.HTTPConnection | None = None
        reused = False
        while not self.stop.is_set():
            if connection is None:
                connection, reused = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0), False
                r.connections += 1
            r.requests += 1
            sent = self.clock()
            try:
                connection.request("GET", "/probe")
                answer = connection.getresponse()
                answer.read()
                r.answered.append((sent, self.clock() - sent))
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = None
                closed = reused and not isinstance(error, TimeoutError)  # a slow answer is a failure, not a close
                (r.closed_idle if closed else r.failures).append((self.clock(), type(error).__name__))
                if closed:
                    continue
            else:
                reused = True
                if answer.status == 200:
                    r.ok += 1
                else:
                    r.failures.append((self.clock(), f"status {answer.status}"))
                if answer.will_close:
                    connection.close()
                    connection = None
                    r.closed_idle.append((self.clock(), "Connection: close"))
            self.stop.wait(self.interval)
        if connection is not None:
            connection.close()


# --- one variant's run ------------------------------------------------------------------------------------

@dataclass
class EventRecord:
    """What the event did and how long it took."""

    at: float | None = None  # scenario seconds
    what: str = ""
    notes: list[str] = field(default_factory=list)
    old: set[int] = field(default_factory=set)  # the relay's processes alive at the event


@dataclass
class RunResult:
    """What one variant's run produced."""

    variant: str
    clients: dict[str, dict[str, Any]]  # mode -> the clients' result line
    wrk: dict[str, Any] | None
    probe: ProbeResult
    event: EventRecord
    processes: list[Watched]
    clients_closed: float | None  # scenario seconds at which both client processes had exited
    end: float
    log: list[tuple[float, str]]
    cpu: dict[str, float]  # relay and load: CPU seconds per second of the run
    t0_wall: float  # time.time() at scenario second 0, to place the log's own timestamps
    args_seconds: float  # the sending time


class Run:
    """Echo backends, the origin, one relay, the clients, wrk and the probe; the event at ``--event-at``."""

    def __init__(self, args: argparse.Namespace, variant: str, processes: Processes, tmp: Path) -> None:
        self.args, self.variant, self.processes, self.tmp = args, variant, processes, tmp
        self.tag = f"{uuid.uuid4().hex[:12]}-{variant}"
        self.port, self.admin_port, self.origin_port = free_port(), free_port(), free_port()
        self.echo_ports = (free_port(), free_port())
        self.pin = not args.no_pin and not args.workers
        self.relay: subprocess.Popen[bytes] | None = None
        self.direct: list[subprocess.Popen[bytes]] = []  # relay processes we started (to reap them)
        self.load: dict[str, subprocess.Popen[bytes]] = {}
        self.readers: dict[str, JsonLines] = {}
        self.watch = Watch(self.tag, self.port, lambda: {p.pid for p in self.load.values()})
        self.event = EventRecord()
        self.t0 = 0.0
        self.t0_wall = 0.0
        self.log = self.tmp / f"{variant}.log"
        self.tail = LogTail(self.log)
        self.ctl: subprocess.Popen[bytes] | None = None
        self.ctl_started = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self, name: str, command: list[str], *, relay: bool = False, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process pinned to its core (when pinning), tagged when it is the relay's."""
        core = PROXY_CORE if relay else LOAD_CORE
        prefix = ["taskset", "-c", core] if self.pin else []
        env = dict(kwargs.pop("env", None) or os.environ)
        if relay:
            env[TAG] = self.tag
        with open(self.tmp / f"{self.variant}-{name}.out", "ab") as sink:
            kwargs.setdefault("stdout", sink)
            process = self.processes.start(prefix + command, env=env, stderr=sink, **kwargs)
        if relay:
            self.direct.append(process)
        else:
            self.load[name] = process
        return process

    # the relays

    def proxy_config(self) -> Path:
        servers = ", ".join(f'"127.0.0.1:{port}"' for port in self.echo_ports)
        workers = f"[process]\nworkers = {self.args.workers}\n\n" if self.args.workers else ""
        routes = "".join(f'[[frontends.web.routes]]\npath-prefix = "/{mode}"\nbackend = "ws_{mode}"\n\n' for mode in MODES)
        backends = "".join(f'[backends.ws_{mode}]\nservers = [{servers}]\n\n[backends.ws_{mode}.websocket]\n'
                           f'mode = "{mode}"\n\n' for mode in MODES)
        config = self.tmp / f"{self.variant}.toml"
        config.write_text(
            f'{workers}[access-log]\nenabled = false\n\n[admin]\nlisten = ["tcp:{self.admin_port}:interface=127.0.0.1"]'
            f'\n\n[frontends.web]\nlisten = ["tcp:{self.port}:interface=127.0.0.1"]\nbackend = "http"\n\n{routes}'
            f'[backends.http]\nservers = ["127.0.0.1:{self.origin_port}"]\n\n{backends}')
        return config

    def start_rubrisproxy(self) -> subprocess.Popen[bytes]:
        command = [*harness.twistd_command(), "-n", "--pidfile=", "--logfile", str(self.log), "rubrisproxy",
                   "--config", str(self.tmp / f"{self.variant}.toml")]
        process = self.start("relay", command, relay=True, env=tree_env(self.args), cwd=self.tmp)
        self.wait_listening(process, self.port)
        self.wait_listening(process, self.admin_port)
        return process

    def haproxy_config(self) -> Path:
        servers = "".join(f"    server e{i} 127.0.0.1:{port}\n" for i, port in enumerate(self.echo_ports))
        config = self.tmp / "haproxy.cfg"
        config.write_text(
            f"global\n    maxconn 4000\n    stats socket {self.tmp}/haproxy.sock mode 600 level admin expose-fd listeners\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            "    timeout tunnel 1h\n    timeout http-keep-alive 5s\n"
            f"frontend web\n    bind 127.0.0.1:{self.port}\n"
            + "".join(f"    use_backend ws_{mode} if {{ path_beg /{mode} }}\n" for mode in MODES)
            + "    default_backend http\n"
            + "".join(f"backend ws_{mode}\n    balance roundrobin\n{servers}" for mode in MODES)
            + f"backend http\n    server o 127.0.0.1:{self.origin_port}\n")
        return config

    def start_haproxy(self, *reload: str) -> subprocess.Popen[bytes]:
        name = "relay" if not reload else f"relay-{len(self.direct)}"
        process = self.start(name, [HAPROXY, "-f", str(self.tmp / "haproxy.cfg"), "-db", *reload], relay=True)
        self.wait_listening(process, self.port)
        return process

    def wait_listening(self, process: subprocess.Popen[bytes], port: int) -> None:
        try:
            harness.wait_port(port, process, timeout=30.0, how=PORT_WAIT)
        except ScenarioError as error:
            self.tail.poll(self.now())
            tail = "\n".join(text for _, text in self.tail.lines[-15:])
            output = b"".join(p.read_bytes()[-1500:] for p in self.tmp.glob(f"{self.variant}-relay*.out"))
            raise ScenarioError(f"{error}\n{tail}\n{output.decode(errors='replace')}") from error

    # the events

    def do_event(self) -> None:
        self.watch.poll(self.now(), self.direct)
        self.event.old = self.watch.living()
        self.event.at = self.now()
        self.watch.deep_at = [self.event.at + 1.0, self.event.at + 5.0]
        started = time.monotonic()
        {"upgrade": self.upgrade, "restart": self.restart, "haproxy-reload": self.reload_haproxy}[self.variant]()
        self.event.what += f" (the call took {(time.monotonic() - started) * 1000:.0f} ms)"

    def upgrade(self) -> None:
        assert self.relay is not None
        if self.args.upgrade_how == "ctl":
            self.ctl = self.processes.start(self.ctl_command("upgrade"), env=tree_env(self.args), cwd=self.tmp,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.ctl_started = time.monotonic()
            self.event.what = "rubrisproxy ctl upgrade started"
        else:
            os.kill(self.relay.pid, signal.SIGUSR2)
            self.event.what = f"kill -USR2 {self.relay.pid}"

    def ctl_command(self, *words: str) -> list[str]:
        return [sys.executable, "-m", "rubrisproxy.ctl", "ctl", "--admin", f"http://127.0.0.1:{self.admin_port}", *words]

    def upgrade_status(self) -> None:
        """What `ctl upgrade --status` says at the end (the upgrade's counts, as the new process sees them)."""
        if self.ctl is not None:
            self.event.notes.append("ctl upgrade was still running at the end")
            return
        try:
            done = subprocess.run(self.ctl_command("upgrade", "--status"), env=tree_env(self.args), cwd=self.tmp,
                                  capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            self.event.notes.append("ctl upgrade --status did not answer within 30 s")
            return
        said = (done.stdout + done.stderr).decode(errors="replace").strip()
        self.event.notes.append(f"ctl upgrade --status at the end (exit {done.returncode}):")
        self.event.notes.extend(f"  {line}" for line in said.splitlines()[:20])

    def poll_ctl(self) -> None:
        """Note how `ctl upgrade` ended, once it has."""
        if self.ctl is None or self.ctl.poll() is None:
            return
        assert self.ctl.stdout is not None
        said = " ".join(self.ctl.stdout.read().decode(errors="replace").split())[:300]
        self.event.notes.append(f"ctl upgrade exited {self.ctl.returncode} after "
                                f"{time.monotonic() - self.ctl_started:.2f} s: {said!r}")
        self.processes.signal(self.ctl, signal.SIGTERM, timeout=1.0)  # closes its pipe
        self.ctl = None

    def restart(self) -> None:
        assert self.relay is not None
        stopping = time.monotonic()
        self.processes.stop(self.relay, timeout=60.0)
        stopped = time.monotonic()
        self.watch.poll(self.now(), self.direct)
        self.tail.poll(self.now())
        self.relay = self.start_rubrisproxy()
        listening = time.monotonic()
        self.event.what = (f"SIGTERM: exited after {stopped - stopping:.2f} s; started again, listening after "
                           f"{listening - stopped:.2f} s")

    def reload_haproxy(self) -> None:
        assert self.relay is not None
        old = self.relay.pid
        self.relay = self.start_haproxy("-x", str(self.tmp / "haproxy.sock"), "-sf", str(old))
        self.event.what = f"haproxy -x SOCKET -sf {old}: the new process listening"

    # the run

    def start_load(self) -> None:
        for index, port in enumerate(self.echo_ports):
            process = self.start(f"echo{index}", ["node", str(ECHO_JS), str(port)])
            harness.wait_port(port, process, timeout=10.0, how=PORT_WAIT)
        origin = self.start("origin", [sys.executable, str(FAST_ORIGIN), str(self.origin_port)])
        harness.wait_port(self.origin_port, origin, timeout=10.0, how=PORT_WAIT)

    def start_clients(self) -> float:
        """Start both client processes, wait for every connection, tell them to go; their start (monotonic s)."""
        a = self.args
        for mode in MODES:
            command = ["node", str(CLIENTS_JS), f"ws://127.0.0.1:{self.port}/{mode}", str(a.clients), str(a.interval_ms),
                       str(a.seconds), "--drain-ms", str(DRAIN_MS), "--open-timeout", str(OPEN_TIMEOUT_S),
                       "--gap-list-ms", str(3 * a.interval_ms), "--wait-go"]
            process = self.start(f"clients-{mode}", command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.readers[mode] = JsonLines(process, f"the {mode} clients", ScenarioError)
        for mode, reader in self.readers.items():
            opened = reader.next(time.monotonic() + OPEN_TIMEOUT_S + 20)
            if opened.get("event") != "open" or opened["opened"] != a.clients:
                raise ScenarioError(f"the {mode} clients did not all open: {opened}")
        self.tell_clients("go")
        starts: list[float] = []
        for mode, reader in self.readers.items():
            started = reader.next(time.monotonic() + 10)
            if started.get("event") != "start":
                raise ScenarioError(f"the {mode} clients did not start: {started}")
            starts.append(int(started["t0_ns"]) / 1e9)  # CLOCK_MONOTONIC, time.monotonic()'s clock
        return min(starts)

    def tell_clients(self, line: str) -> None:
        for mode in MODES:
            stdin = self.load[f"clients-{mode}"].stdin
            assert stdin is not None
            try:
                stdin.write(f"{line}\n".encode())
                stdin.flush()
            except BrokenPipeError:
                pass

    def start_http(self, stop: threading.Event) -> KeepAliveProbe:
        a = self.args
        script = self.tmp / "wrk.lua"
        script.write_text(WRK_SCRIPT)
        self.start("wrk", ["wrk", "-t1", f"-c{a.http_connections}", f"-d{a.seconds:g}s", "-s", str(script),
                           f"http://127.0.0.1:{self.port}/"], stdout=subprocess.PIPE,
                   env=dict(os.environ, WRK_DELAY_MS=str(a.http_delay_ms)))
        probe = KeepAliveProbe(self.port, a.interval_ms / 1000, self.now, stop)
        probe.start()
        return probe

    def pump(self, until: float) -> None:
        """Until scenario second ``until``: read the clients, poll the relay's processes and log and the ctl."""
        while (left := until - self.now()) > 0:
            waiting = [reader for reader in self.readers.values() if not reader.ready()]
            for reader in waiting:
                reader.pump(min(left, 0.025))
            if not waiting:
                time.sleep(min(left, 0.025))
            self.watch.poll(self.now(), self.direct)
            self.tail.poll(self.now())
            self.poll_ctl()

    def results(self) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + 60
        results: dict[str, dict[str, Any]] = {}
        for mode, reader in self.readers.items():
            while mode not in results:
                if reader.ready():
                    line = reader.next(deadline)
                    if line.get("event") == "result":
                        results[mode] = line
                    continue
                if time.monotonic() > deadline:
                    raise ScenarioError(f"no result from the {mode} clients")
                self.pump(self.now() + 0.1)
        self.readers = {}  # the clients close and exit next: nothing more to read
        return results

    def wrk_result(self) -> dict[str, Any] | None:
        wrk = self.load["wrk"]
        try:
            output, _ = wrk.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            return None
        lines = [line for line in output.decode(errors="replace").splitlines() if line.startswith("{")]
        return dict(json.loads(lines[-1])) if lines else None

    def wait_clients_closed(self) -> float | None:
        """Wait for both client processes to close their connections and exit; the scenario second they had."""
        deadline = time.monotonic() + 15
        clients = [self.load[f"clients-{mode}"] for mode in MODES]
        while any(p.poll() is None for p in clients):
            if time.monotonic() > deadline:
                return None
            self.watch.poll(self.now(), self.direct)
            time.sleep(0.05)
        return self.now()

    def load_cpu(self) -> float:
        total = 0.0
        for process in self.load.values():
            try:
                total += harness.cpu_seconds(process.pid)
            except OSError:
                pass
        return total

    def run(self) -> RunResult:
        a = self.args
        self.start_load()
        if self.variant == "haproxy-reload":
            self.haproxy_config()
            self.relay = self.start_haproxy()
        else:
            self.proxy_config()
            self.relay = self.start_rubrisproxy()
        self.t0 = self.start_clients()  # the clients' own timeline, so their times and ours agree
        self.t0_wall = time.time() - (time.monotonic() - self.t0)
        script_cpu = time.process_time()
        stop = threading.Event()
        probe = self.start_http(stop)
        self.pump(a.event_at)
        self.tell_clients(f"mark event {time.monotonic_ns()}")
        self.do_event()
        self.pump(a.seconds)
        stop.set()
        clients = self.results()
        cpu = {"relay": sum(w.cpu for w in self.watch.pids.values()), "load": self.load_cpu(),
               "this script": time.process_time() - script_cpu}
        end = self.now()
        wrk = self.wrk_result()
        closed = self.wait_clients_closed()
        linger = time.monotonic() + LINGER_S
        while self.watch.living() and time.monotonic() < linger:
            self.pump(self.now() + 0.1)
        self.poll_ctl()
        if self.variant == "upgrade" and a.upgrade_how == "ctl":
            self.upgrade_status()
        probe.join(5)
        return RunResult(self.variant, clients, wrk, probe.result, self.event,
                         sorted(self.watch.pids.values(), key=lambda w: w.pid), closed, end, self.tail.lines,
                         {name: seconds / end for name, seconds in cpu.items()}, self.t0_wall, a.seconds)

    def cleanup(self) -> list[int]:
        """Stop everything this run started (the relay's spawn found by tag); the pids that had to be killed."""
        self.watch.scanned = -1e9
        self.watch.poll(self.now(), self.direct)
        self.processes.stop_all()
        known = self.watch.living()
        return kill_all(tagged_pids(self.tag) | children(known) | known)


def tree_env(args: argparse.Namespace) -> dict[str, str]:
    return harness.python_path_env(Path(args.tree).resolve())


def upgrade_how(args: argparse.Namespace, tmp: Path) -> str | None:
    """How the tree upgrades: "ctl" (`rubrisproxy ctl upgrade` exists), "usr2" (its source handles SIGUSR2), None;
    ``--upgrade-by`` may ask for one of them."""
    has_ctl = False
    try:
        done = subprocess.run([sys.executable, "-m", "rubrisproxy.ctl", "ctl", "--help"], env=tree_env(args),
                              cwd=tmp, capture_output=True, timeout=30)
        has_ctl = re.search(rb"[{,]upgrade[,}]", done.stdout) is not None
    except subprocess.TimeoutExpired:
        pass
    source = Path(args.tree) / "rubrisproxy"
    has_usr2 = any("SIGUSR2" in path.read_text(errors="replace") for path in source.rglob("*.py"))
    if has_ctl and args.upgrade_by in ("auto", "ctl"):
        return "ctl"
    if has_usr2 and args.upgrade_by in ("auto", "signal"):
        return "usr2"
    return None


# --- report -----------------------------------------------------------------------------------------------

def seq_problems(result: dict[str, Any]) -> str:
    return f"{result['lost']} / {result['duplicated']} / {result['out_of_order']}"


def silence(result: dict[str, Any]) -> str:
    """p99 / max of the clients' longest silence from the event on, over those that stayed connected."""
    event = next((m for m in result["marks"] if m["name"] == "event"), None)
    if event is None:
        return "-"
    if not event["silence"]["clients"]:
        return "- (none connected)"
    s = event["silence"]
    return f"{s['p99_ms']:.0f} / {s['max_ms']:.0f} ms ({s['clients']})"


def kind(w: Watched) -> str:
    """A relay process's kind, from its command line."""
    return next((name for needle, name in (("rubrisproxy.workers", "worker"), ("twistd", "twistd"),
                                           ("haproxy", "haproxy")) if needle in w.what), w.what.split(" ", 1)[0])


def grouped(items: list[tuple[str, str]]) -> str:
    """(kind, text) pairs as "kind text", alike ones counted: "twistd +0.5 s; 2 x worker +0.5 s"."""
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return "; ".join(f"{f'{n} x ' if n > 1 else ''}{name} {text}" for (name, text), n in counts.items())


def old_processes(run: RunResult) -> str:
    """When each process alive at the event exited, in seconds after it; or that it outlived the run."""
    at = run.event.at or 0.0
    closing = max(r["end_ms"] for r in run.clients.values()) / 1000  # the clients close their connections from here
    parts = []
    for w in (w for w in run.processes if w.pid in run.event.old):
        if w.exited is None:
            parts.append((kind(w), "alive at the end"))
        elif w.exited >= closing:
            parts.append((kind(w), f"alive until the clients left at the end, +{w.exited - at:.1f} s"))
        else:
            parts.append((kind(w), f"+{w.exited - at:.2f} s"))
    return grouped(parts) or "-"


def new_processes(run: RunResult) -> str:
    """The relay's processes that appeared after the event: when first seen, in seconds after it."""
    at = run.event.at or 0.0
    new = [w for w in run.processes if w.pid not in run.event.old and w.seen >= at]
    return grouped([(kind(w), f"+{w.seen - at:.1f} s" + ("" if w.exited is None else f" (exited +{w.exited - at:.1f} s)"))
                    for w in new]) or "none"


def probe_latency(run: RunResult) -> str:
    """The probe's median answer time for requests sent before the event, in the 5 s after it, and later."""
    at = run.event.at or 0.0
    spans = ((-1e9, at), (at, at + 5), (at + 5, 1e9))
    medians = [[d for t, d in run.probe.answered if start <= t < end] for start, end in spans]
    return " / ".join(f"{harness.middle(m) * 1000:.1f}" if m else "-" for m in medians) + " ms"


def socket_errors(run: RunResult) -> str:
    w = run.wrk
    return "no summary" if w is None else f"{w['connect']} / {w['read']} / {w['write']} / {w['timeout']}"


def report(runs: list[RunResult], args: argparse.Namespace) -> None:
    """The side-by-side table with the targets, then each run's event, processes and log."""
    rows: list[tuple[str, list[str], str]] = []
    for mode in MODES:
        rows.append((f"{mode}: disconnected", [f"{r.clients[mode]['disconnected']} of {r.clients[mode]['opened']}"
                                                for r in runs], "0"))
        rows.append(("  close codes", [", ".join(f"{c}x{n}" for c, n in sorted(r.clients[mode]["close_codes"].items()))
                                       or "-" for r in runs], ""))
        rows.append(("  lost / dup / reordered", [seq_problems(r.clients[mode]) for r in runs], "0 / 0 / 0"))
        rows.append(("  of messages sent", [str(r.clients[mode]["sent"]) for r in runs], ""))
        rows.append(("  silence p99 / max", [silence(r.clients[mode]) for r in runs], ""))
        rows.append(("  round trip p50 / p99", [f"{r.clients[mode]['p50_ms']:.1f} / {r.clients[mode]['p99_ms']:.1f} ms"
                                                for r in runs], ""))
    rows.append(("wrk requests", [str(r.wrk["requests"]) if r.wrk else "-" for r in runs], ""))
    rows.append(("  latency p99 / max", [f"{r.wrk['p99_us'] / 1000:.0f} / {r.wrk['max_us'] / 1000:.0f} ms" if r.wrk
                                         else "-" for r in runs], ""))
    rows.append(("wrk non-2xx", [str(r.wrk["status"]) if r.wrk else "-" for r in runs], "0"))
    rows.append(("wrk socket errors c/r/w/t", [socket_errors(r) for r in runs], "0"))
    rows.append(("probe requests / failures", [f"{r.probe.requests} / {len(r.probe.failures)}" for r in runs], "- / 0"))
    rows.append(("  p50 before / +0-5 s / later", [probe_latency(r) for r in runs], ""))
    rows.append(("  keep-alive closed by relay", [f"{len(r.probe.closed_idle)} (connections {r.probe.connections})"
                                                  for r in runs], ""))
    rows.append(("CPU busy: relay / load / script", [f"{r.cpu['relay']:.0%} / {r.cpu['load']:.0%} / "
                                                     f"{r.cpu['this script']:.0%}" for r in runs], ""))
    width = max(len(label) for label, _, _ in rows) + 2
    columns = [max([len(r.variant)] + [len(values[i]) for _, values, _ in rows]) + 3 for i, r in enumerate(runs)]
    out("\n" + " " * width + "".join(f"{r.variant:>{c}}" for r, c in zip(runs, columns, strict=True)) + "   target")
    for label, values, target in rows:
        out(f"{label:{width}}" + "".join(f"{v:>{c}}" for v, c in zip(values, columns, strict=True))
            + (f"   {target}" if target else ""))
    out("  silence: each client's longest stretch without an echo, from the event on (the clients still connected at "
        "the end; how many in brackets); a message is lost when never echoed, both directions. wrk socket errors:")
    out("  connect / read / write / timeout; wrk reconnects at once, so while nothing listens each refused attempt "
        "counts (as a write error), and a keep-alive connection the relay closes counts as a read error even when idle.")
    name_width = max(len(r.variant) for r in runs) + 2
    out("\nthe relay's processes alive at the event: when each exited (seconds after the event)")
    for r in runs:
        out(f"  {r.variant + ':':{name_width}}{old_processes(r)}")
    out("new processes of the relay: when each was first seen (seconds after the event)")
    for r in runs:
        out(f"  {r.variant + ':':{name_width}}{new_processes(r)}")
    for run in runs:
        describe(run, args)


def describe(run: RunResult, args: argparse.Namespace) -> None:
    out(f"\n{run.variant}: event at {run.event.at or 0:.2f} s: {run.event.what}")
    for note in run.event.notes:
        out(f"  {note}")
    closing = max(r["end_ms"] for r in run.clients.values()) / 1000
    out(f"  the clients stopped sending at {run.args_seconds:g} s and closed their connections from {closing:.2f} s"
        + (f"; their processes had exited at {run.clients_closed:.2f} s" if run.clients_closed is not None else ""))
    for w in run.processes:
        state = "alive at the end" if w.exited is None else f"exited at {w.exited:.2f} s"
        state += "" if w.status is None else f" (status {w.status})"
        out(f"  pid {w.pid} ({w.what}): seen at {w.seen:.2f} s, {state}")
    if run.variant == "upgrade" and new_processes(run) == "none":
        out("  NO UPGRADE SEEN: no new relay process appeared after the event")
    verdicts(run)
    for mode in MODES:
        describe_clients(mode, run.clients[mode])
    for label, items in (("probe failures", run.probe.failures), ("keep-alive closed", run.probe.closed_idle)):
        if items:
            out(f"  {label}: " + ", ".join(f"{t:.2f} s {what}" for t, what in items[:8])
                + (f" ... ({len(items)})" if len(items) > 8 else ""))
    describe_log([(t, text) for t, text in run.log if run.event.at is not None and t >= run.event.at], run, args)


def logged_at(text: str, run: RunResult, seen: float) -> float:
    """The scenario second of a log line, from its own ISO timestamp (else when this script saw it)."""
    try:
        return datetime.fromisoformat(text.split(" ", 1)[0].replace("Z", "+00:00")).timestamp() - run.t0_wall
    except ValueError:
        return seen


def describe_log(after: list[tuple[float, str]], run: RunResult, args: argparse.Namespace) -> None:
    """The relay's log after the event: its upgrade lines whole, the rest folded into kinds."""
    said = [(logged_at(text, run, t), text.split("] ", 1)[-1]) for t, text in after if UPGRADE_LINE in text]
    if said:
        out(f"  the relay's '{UPGRADE_LINE}' log lines (scenario seconds, by their own time stamps):")
        for t, message in said[:args.log_shapes * 5]:
            out(f"    {t:6.2f}  {message[:300]}")
    rest = [(t, text) for t, text in after if UPGRADE_LINE not in text]
    if rest:
        out(f"  other relay log lines after the event: {len(rest)}")
        for line in log_shapes(rest, args.log_shapes):
            out(f"    {line}")


def verdicts(run: RunResult) -> None:
    """Each target of issue 18, met or missed."""
    def verdict(value: int) -> str:
        return f"{value} ({'met' if value == 0 else 'MISSED'})"

    disconnected = sum(r["disconnected"] for r in run.clients.values())
    sequence = sum(r["lost"] + r["duplicated"] + r["out_of_order"] for r in run.clients.values())
    w = run.wrk or {}
    http = sum(w.get(key, 0) for key in ("status", "connect", "read", "write", "timeout")) + len(run.probe.failures)
    out(f"  targets: disconnected {verdict(disconnected)}; lost+duplicated+reordered {verdict(sequence)}; HTTP "
        f"errors (wrk and the probe) {verdict(http)}" + ("" if run.wrk else " (wrk gave no summary)"))


def describe_clients(mode: str, r: dict[str, Any]) -> None:
    """When one mode's clients were disconnected, and whether the load kept up."""
    if r["disconnects"]:
        times = sorted(d["t"] / 1000 for d in r["disconnects"])
        out(f"  {mode}: disconnects from {times[0]:.2f} s to {times[-1]:.2f} s")
    if r["p50_ms"] is not None and r["p50_ms"] > r["interval_ms"]:
        out(f"  {mode}: SATURATED: the median round trip ({r['p50_ms']:.0f} ms) exceeds the {r['interval_ms']:g} ms "
            "interval: the relay or this shared machine did not keep up, so silences include queueing")


# --- main ---------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose rubrisproxy runs (default: this one)")
    parser.add_argument("--upgrade-by", choices=("auto", "ctl", "signal"), default="auto",
                        help="auto: `ctl upgrade` when the tree has it, else SIGUSR2 when its source handles it")
    parser.add_argument("--workers", type=int, default=0, help="rubrisproxy [process] workers (default: unset)")
    parser.add_argument("--clients", type=int, default=200, help="WebSocket clients per mode")
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="sending time (then 3 s for late echoes)")
    parser.add_argument("--event-at", type=float, default=10.0)
    parser.add_argument("--http-connections", type=int, default=20)
    parser.add_argument("--http-delay-ms", type=int, default=10, help="each wrk connection waits this between requests")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing (default: relay core 1, load core 0)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the logs and outputs here")
    parser.add_argument("--log-shapes", type=int, default=8, help="kinds of relay log line shown after the event")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    args.variant_list = [v for v in args.variants.split(",") if v]
    if not args.variant_list or set(args.variant_list) - set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if not 0 < args.event_at < args.seconds <= 300 or not 1 <= args.clients <= 2000 or args.workers < 0:
        parser.error("need 0 < --event-at < --seconds <= 300, 1 <= --clients <= 2000, --workers >= 0")
    return args


def preflight(args: argparse.Namespace) -> None:
    for tool in ("node", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    if not (HERE / "ws" / "node_modules" / "ws" / "package.json").exists():
        raise SystemExit("bench/ws/node_modules is missing: run `npm ci` in bench/ws")
    if not (Path(args.tree) / "rubrisproxy").is_dir():
        raise SystemExit(f"--tree {args.tree}: no rubrisproxy package there")


def git_head(tree: str) -> str:
    done = subprocess.run(["git", "-C", tree, "log", "-1", "--format=%h %s"], capture_output=True, timeout=30)
    return done.stdout.decode(errors="replace").strip()[:100]


def run_variants(args: argparse.Namespace, tmp: Path) -> list[RunResult]:
    runs = []
    for variant in args.variant_list:
        if variant == "haproxy-reload" and not os.access(HAPROXY, os.X_OK):
            out(f"{variant}: skipped: no {HAPROXY}")
            continue
        if variant == "upgrade":
            args.upgrade_how = upgrade_how(args, tmp)
            if args.upgrade_how is None:
                out(f"upgrade: upgrade not available in this tree (--upgrade-by {args.upgrade_by}: no `rubrisproxy ctl "
                    "upgrade`, no SIGUSR2 handling found): skipped")
                continue
        out(f"running {variant} ...")
        run = Run(args, variant, Processes(), tmp)
        try:
            runs.append(run.run())
        except ScenarioError as error:
            out(f"{variant}: failed: {str(error).strip()}")
        finally:
            killed = run.cleanup()
            if killed:
                out(f"  {variant}: stopped the relay's leftover processes {killed}")
    return runs


def main() -> None:
    args = parse_args()
    preflight(args)
    limit = harness.raise_open_files(8 * args.clients + 1024)
    started = time.monotonic()
    out(f"python bench/upgrade_scenario.py {' '.join(sys.argv[1:])}".rstrip())
    out(f"rubrisproxy from {args.tree}: {git_head(args.tree)}; {args.clients} session + {args.clients} tunnel clients, "
        f"a message each every {args.interval_ms:g} ms for {args.seconds:g} s, the event at {args.event_at:g} s; wrk "
        f"{args.http_connections} connections, {args.http_delay_ms} ms between requests; "
        + ("not pinned" if args.no_pin or args.workers else f"relay on core {PROXY_CORE}, load on core {LOAD_CORE}")
        + (f"; [process] workers = {args.workers}" if args.workers else "")
        + f"; open files {limit}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="upgrade_scenario.") as name, harness.terminate_on_sigterm():
        tmp = Path(name)
        try:
            runs = run_variants(args, tmp)
        finally:
            if args.keep_logs:
                keep = Path(args.keep_logs)
                keep.mkdir(parents=True, exist_ok=True)
                for path in tmp.iterdir():
                    if path.is_file() and not path.is_socket():
                        shutil.copy(path, keep / path.name)
    if runs:
        report(runs, args)
    out(f"\ntotal {time.monotonic() - started:.0f} s")
    out.save(args.output)


if __name__ == "__main__":
    main()
