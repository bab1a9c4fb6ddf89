"""Interruptible WebSocket sessions: what clients see when a backend crashes, and when one is drained.

Two Node `ws` echo backends A and B (bench/ws/echo.js), a relay in front of them, and 200 Node
WebSocket clients (bench/ws_resume/clients.js), each sending the text message "<client>:<seq>"
every 20 ms for 30 s and checking the echoes. Meanwhile:

    10 s    SIGKILL backend A                      15 s    restart A on the same port
    20 s    drain B: POST /backends/default/servers/s2/drain on the proxy's admin port
    22 s    SIGTERM B                              22.5 s  restart B, then POST .../servers/s2/ready

Relays: ``rubrisproxy`` (twistd rubrisproxy --websocket session --admin ...) and ``roundrobin``, a
portforward-style TCP relay alternating new connections over A and B
(bench/ws_resume/roundrobin_forward.py), which drops a client whose backend dies, like HAProxy or
nginx in TCP mode; it has no drain call, so B gets SIGTERM at 20 s and is restarted at 22 s.

Reports per relay: clients disconnected (with close codes), messages sent, echoed, lost,
duplicated and out of order, the longest gap between consecutive echoes of a client, the
messages in flight on A at the SIGKILL, and which losses fall in the crash window (sent until 1 s
before the drain call) and which in the drain window (sent from then on), each split at its
event; the targets (0 clients disconnected, 0 lost/duplicated/reordered across the drain, crash
loss <= in flight at the kill) met or missed; what the proxy logged after each event (sessions
moved, how fast) and its admin counters. Written to bench/results/ws_resume.txt.

    python bench/ws_resume.py [--relays roundrobin,rubrisproxy] [--clients 200] [--interval-ms 20]
                              [--seconds 30] [--proxy-path DIR | --proxy-commit COMMIT]
                              [--replay-messages N] [--no-admin] [--keep-logs DIR]

Event times are flags too (--kill-a 10 --restart-a 15 --drain-b 20 --stop-b 22 --restart-b 22.5;
for the baseline --baseline-stop-b 20 --baseline-restart-b 22). --proxy-path runs rubrisproxy
from another tree instead of this checkout; --proxy-commit COMMIT from a `git archive` of one commit of
this repository (HEAD: without the uncommitted edits of the working tree). When the proxy
has no --admin option the rubrisproxy run goes on without the drain and ready calls, and says so.
--replay-messages N gives rubrisproxy a config file with replay-messages = N for the backend, so a
session resends its last N messages after a crash (at-least-once: expect duplicates, not loss).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import harness
from harness import JsonLines, Output, Processes, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ECHO_JS = HERE / "ws" / "echo.js"
CLIENTS_JS = HERE / "ws_resume" / "clients.js"
ROUNDROBIN = HERE / "ws_resume" / "roundrobin_forward.py"
RESULTS = HERE / "results" / "ws_resume.txt"
RELAYS = ("roundrobin", "rubrisproxy")
DRAIN_MS = 3000  # the clients wait this long for late echoes after they stop sending
SLACK_S = 1.0  # the drain window starts this long before the drain call, to include what was in flight at it
GAP_LIST_INTERVALS = 3  # the clients list every gap between echoes longer than this many intervals
OPEN_TIMEOUT_S = 60.0
START_TIMEOUT_S = 20.0


class ScenarioError(Exception):
    """Something the scenario needs did not happen (a process would not start, the clients failed)."""


out = Output()
wait_port = partial(harness.wait_port, how=harness.PortWait(interval=0.02, error=ScenarioError, name_command=True))


def open_sockets(pid: int) -> int | None:
    """Sockets a process holds open (for an echo backend: its connections plus its listener)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return None
    return sum(link.startswith("socket:") for link in links)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a process so far (None once it is gone)."""
    try:
        return harness.cpu_seconds(pid)
    except OSError:
        return None


def post(url: str, timeout: float = 5.0) -> tuple[int | None, str, float]:
    """POST with an empty body: (status or None, first 200 characters of the answer or the error, seconds)."""
    started = time.monotonic()
    request = urllib.request.Request(url, data=b"", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, body = answer.status, answer.read(200).decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(200).decode(errors="replace")
    except (OSError, urllib.error.URLError) as error:
        status, body = None, str(error)
    return status, " ".join(body.split()), time.monotonic() - started


class LogTail:
    """New lines of a growing log file, each stamped with the scenario time it was first seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.lines: list[tuple[float, str]] = []

    def poll(self, now_s: float) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        self.lines.extend((now_s, line.decode(errors="replace")) for line in complete if line.strip())


# --- one run ---------------------------------------------------------------------------------------

@dataclass
class Event:
    """One scheduled step of the scenario."""

    name: str
    at: float  # planned, seconds after the clients start sending
    label: str
    action: Callable[[], str]
    prepare: Callable[[], str] | None = None  # run just before the instant is taken
    actual: float | None = None  # seconds after t0, taken right before the action
    note: str = ""


@dataclass
class RunResult:
    """What one relay's run produced."""

    relay: str
    result: dict[str, Any]
    events: list[Event]
    notes: list[str]
    log: list[tuple[float, str]]
    on_a: set[int] | None  # clients the relay put on A, when it says so
    a_connections_at_kill: int | None
    cpu: dict[str, float]  # relay and clients: CPU seconds per second of the run
    admin_state: dict[str, Any] | None  # GET /backends/default at the end, when there is an admin API


class Scenario:
    """Backends A and B, one relay, the clients, and the scheduled kills, restarts and calls."""

    def __init__(self, args: argparse.Namespace, relay: str, processes: Processes, tmp: Path) -> None:
        self.args = args
        self.relay = relay
        self.processes = processes
        self.tmp = tmp
        self.port = free_port()
        self.backend_ports = {"A": free_port(), "B": free_port()}
        self.admin_port = free_port()
        self.backends: dict[str, subprocess.Popen[bytes]] = {}
        self.notes: list[str] = []
        self.admin = False
        self.relay_log: Path | None = None
        self.tail: LogTail | None = None
        self.t0_ns = 0
        self.client: subprocess.Popen[bytes] | None = None
        self.relay_process: subprocess.Popen[bytes] | None = None
        self.a_connections_at_kill: int | None = None

    # processes
    def start_backend(self, name: str) -> None:
        port = self.backend_ports[name]
        sink = open(self.tmp / f"{self.relay}-echo-{name}.out", "ab")
        with sink:
            process = self.processes.start(["node", str(ECHO_JS), str(port)], stdout=sink, stderr=subprocess.STDOUT)
        self.backends[name] = process
        wait_port(port, process, timeout=10.0)

    def stop_backend(self, name: str, sig: int) -> None:
        process = self.backends.pop(name)
        self.processes.signal(process, sig, timeout=5.0)

    def proxy_env(self) -> dict[str, str]:
        return harness.python_path_env(Path(self.args.proxy_path).resolve())

    def proxy_has_admin(self) -> bool:
        """Whether ``twistd rubrisproxy --help`` lists an --admin option."""
        try:
            done = subprocess.run([*harness.twistd_command(), "rubrisproxy", "--help"], env=self.proxy_env(),
                                  capture_output=True, timeout=30, cwd=self.tmp)
        except subprocess.TimeoutExpired:
            return False
        return b"--admin" in done.stdout

    def start_relay(self) -> None:
        a, b = self.backend_ports["A"], self.backend_ports["B"]
        if self.relay == "roundrobin":
            command = [sys.executable, str(ROUNDROBIN), str(self.port), str(a), str(b)]
            self.relay_log = self.tmp / "roundrobin.out"
            env = None
        else:
            self.admin = not self.args.no_admin and self.proxy_has_admin()
            if not self.admin:
                why = "--no-admin given" if self.args.no_admin else "rubrisproxy has no --admin option (yet)"
                self.notes.append(f"{why}: ran without the drain and ready calls; B was only SIGTERMed and restarted")
            self.relay_log = self.tmp / "rubrisproxy.log"
            command = [*harness.twistd_command(), "-n", "--pidfile=", "--logfile", str(self.relay_log), "rubrisproxy",
                       "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--backend", f"127.0.0.1:{a}",
                       "--backend", f"127.0.0.1:{b}", "--websocket", "session", "--access-log", "off"]
            if self.admin:
                command += ["--admin", f"tcp:{self.admin_port}:interface=127.0.0.1"]
            if self.args.replay_messages:
                config = self.tmp / "rubrisproxy.toml"
                window = f"replay-window = \"{self.args.replay_window_ms}ms\"\n" if self.args.replay_window_ms else ""
                config.write_text(f"[websocket]\nreplay-messages = {self.args.replay_messages}\n{window}")
                command += ["--config", str(config)]
                self.notes.append(f"at-least-once: [websocket] replay-messages = {self.args.replay_messages}"
                                  + (f", replay-window = {self.args.replay_window_ms} ms" if window else ""))
            env = self.proxy_env()
        out_path = self.tmp / f"{self.relay}.out"
        with open(out_path, "ab") as sink:
            process = self.processes.start(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.relay_process = process
        try:
            wait_port(self.port, process)
            if self.admin:
                wait_port(self.admin_port, process, timeout=5.0)
        except ScenarioError as error:
            tail = out_path.read_bytes()[-2000:] + (self.relay_log.read_bytes()[-2000:] if self.relay_log.exists()
                                                    and self.relay_log != out_path else b"")
            raise ScenarioError(f"{self.relay}: {error}\n{tail.decode(errors='replace')}") from error
        self.tail = LogTail(self.relay_log)

    # events
    def now(self) -> float:
        """Seconds since the clients started sending."""
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def mark(self, name: str) -> float:
        """Stamp an instant on the clients' timeline (they count messages in flight at it); returns it."""
        ns = time.monotonic_ns()
        assert self.client is not None and self.client.stdin is not None
        try:
            self.client.stdin.write(f"mark {name} {ns}\n".encode())
            self.client.stdin.flush()
        except BrokenPipeError:
            pass
        return (ns - self.t0_ns) / 1e9

    def admin_call(self, what: str) -> str:
        if not self.admin:
            return f"skipped: no admin endpoint, {what} not called"
        url = f"http://127.0.0.1:{self.admin_port}/backends/default/servers/s2/{what}"
        status, body, seconds = post(url)
        if status is None or not 200 <= status < 300:
            self.notes.append(f"POST {what} failed: {status} {body}")
        return f"POST .../s2/{what} -> {status} {body[:120]!r} in {seconds * 1000:.0f} ms"

    def events(self) -> list[Event]:
        """The schedule for this relay."""
        a = self.args
        if self.relay == "roundrobin":
            return [Event("kill_a", a.kill_a, "SIGKILL A", self._kill_a, self._connections("A")),
                    Event("restart_a", a.restart_a, "restart A", self._restart("A")),
                    Event("stop_b", a.baseline_stop_b, "SIGTERM B (no drain call)", self._stop_b,
                          self._connections("B")),
                    Event("restart_b", a.baseline_restart_b, "restart B", self._restart("B"))]
        return [Event("kill_a", a.kill_a, "SIGKILL A", self._kill_a, self._connections("A")),
                Event("restart_a", a.restart_a, "restart A", self._restart("A")),
                Event("drain_b", a.drain_b, "drain s2 (B)", lambda: self.admin_call("drain"), self._connections("B")),
                Event("stop_b", a.stop_b, "SIGTERM B", self._stop_b, self._connections("B")),
                Event("restart_b", a.restart_b, "restart B", self._restart("B")),
                Event("ready_b", a.restart_b, "ready s2 (B)", self._ready_b)]

    # The events' actions and notes

    def _connections(self, name: str) -> Callable[[], str]:
        def count() -> str:
            sockets = open_sockets(self.backends[name].pid)
            if sockets is None:
                return ""
            if name == "A":
                self.a_connections_at_kill = sockets - 1
            return f"{name} had {sockets - 1} connections; "
        return count

    def _kill_a(self) -> str:
        self.stop_backend("A", signal.SIGKILL)
        return "killed"

    def _restart(self, name: str) -> Callable[[], str]:
        def action() -> str:
            started = time.monotonic()
            self.start_backend(name)
            return f"listening after {(time.monotonic() - started) * 1000:.0f} ms"
        return action

    def _stop_b(self) -> str:
        self.stop_backend("B", signal.SIGTERM)
        return "exited"

    def _ready_b(self) -> str:
        wait_port(self.backend_ports["B"], self.backends["B"], timeout=10.0)
        return self.admin_call("ready")

    def run(self) -> RunResult:
        a = self.args
        self.start_backend("A")
        self.start_backend("B")
        self.start_relay()
        command = ["node", str(CLIENTS_JS), f"ws://127.0.0.1:{self.port}/", str(a.clients), str(a.interval_ms),
                   str(a.seconds), "--drain-ms", str(DRAIN_MS), "--open-timeout", str(OPEN_TIMEOUT_S),
                   "--gap-list-ms", str(GAP_LIST_INTERVALS * a.interval_ms)]
        self.client = self.processes.start(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        reader = JsonLines(self.client, "the clients", ScenarioError)
        opened = reader.next(time.monotonic() + OPEN_TIMEOUT_S + START_TIMEOUT_S)
        if opened.get("event") != "open":
            raise ScenarioError(f"unexpected first line from the clients: {opened}")
        if opened["failed"]:
            self.notes.append(f"{opened['failed']} of {a.clients} clients failed to connect: {opened['errors']}")
        started = reader.next(time.monotonic() + START_TIMEOUT_S)
        self.t0_ns = int(started["t0_ns"])
        assert self.relay_process is not None
        watched = {"relay": self.relay_process.pid, "clients": self.client.pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        assert self.tail is not None
        events = self.events()
        for event in events:
            self.wait_until(event.at, reader)
            prepared = event.prepare() if event.prepare else ""
            event.actual = self.mark(event.name)
            try:
                event.note = prepared + event.action()
            except ScenarioError as error:
                event.note = f"failed: {error}"
                self.notes.append(f"{event.label}: {error}")
            self.tail.poll(self.now())
        result = self.wait_result(reader, time.monotonic() + a.seconds + DRAIN_MS / 1000 + 30)
        wall = self.now()
        (self.tmp / f"{self.relay}-clients.json").write_text(json.dumps(result))  # kept with --keep-logs
        cpu = {}
        for name, pid in watched.items():
            before, after = cpu_before[name], cpu_seconds(pid)
            if before is not None and after is not None:
                cpu[name] = (after - before) / wall
        try:
            self.client.wait(10)  # it closes its connections, then exits: the proxy's counts should be back to 0
        except subprocess.TimeoutExpired:
            self.notes.append("the clients took over 10 s to close their connections and exit")
        time.sleep(0.5)
        self.tail.poll(self.now())
        on_a = self.roundrobin_on_a(result) if self.relay == "roundrobin" else None
        return RunResult(self.relay, result, events, self.notes, self.tail.lines, on_a, self.a_connections_at_kill,
                         cpu, self.admin_state())

    def admin_state(self) -> dict[str, Any] | None:
        """The proxy's view of the backend (GET /backends/default), if it has an admin API."""
        if not self.admin:
            return None
        try:
            url = f"http://127.0.0.1:{self.admin_port}/backends/default"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return dict(json.loads(answer.read(1 << 20)))
        except (OSError, ValueError) as error:
            self.notes.append(f"GET /backends/default failed: {error}")
            return None

    def wait_until(self, at: float, reader: JsonLines) -> None:
        """Sleep until ``at`` seconds after t0, polling the relay's log; bounded by the run's length."""
        assert self.tail is not None
        deadline = time.monotonic() + max(0.0, at - self.now())
        while (left := deadline - time.monotonic()) > 0:
            reader.pump(min(left, 0.05))  # the clients print nothing until the end; this also notices them dying
            self.tail.poll(self.now())

    def wait_result(self, reader: JsonLines, deadline: float) -> dict[str, Any]:
        assert self.tail is not None
        while not reader.ready():
            if time.monotonic() > deadline:
                raise ScenarioError("no result from the clients")
            reader.pump(0.1)
            self.tail.poll(self.now())
        result = reader.next(deadline)
        if result.get("event") != "result":
            raise ScenarioError(f"unexpected line from the clients: {result}")
        return result

    def roundrobin_on_a(self, result: dict[str, Any]) -> set[int]:
        """Clients the round-robin relay sent to A, from its ``CLIENT_PORT A|B`` lines."""
        assert self.relay_log is not None
        backend_of = {}
        for line in self.relay_log.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                backend_of[int(parts[0])] = parts[1]
        return {int(client) for client, port in result["local_ports"].items() if backend_of.get(port) == "A"}


# --- analysis ------------------------------------------------------------------------------------------

@dataclass
class Window:
    """A stretch of the run (seconds after t0) losses are counted in, split at its event."""

    name: str
    start: float
    event: float  # the kill or the drain/stop; sent before it vs after it
    end: float


def windows(run: RunResult) -> list[Window]:
    """The crash window (split at the SIGKILL), the drain window (split at the drain call, else the SIGTERM)."""
    times = {e.name: e.actual for e in run.events if e.actual is not None}
    end = run.result["end_ms"] / 1000 + 1
    kill = times.get("kill_a", 0.0)
    drain = times.get("drain_b", times.get("stop_b", end))
    return [Window("crash window", -1.0, kill, drain - SLACK_S), Window("drain window", drain - SLACK_S, drain, end)]


def split(items: list[float], window: Window) -> tuple[int, int]:
    """Of the times in ``items`` within the window: how many before its event, how many at or after it."""
    inside = [t for t in items if window.start <= t < window.end]
    return sum(t < window.event for t in inside), sum(t >= window.event for t in inside)


def mark(run: RunResult, name: str) -> dict[str, Any] | None:
    return next((m for m in run.result["marks"] if m["name"] == name), None)


def in_flight_at_kill(run: RunResult) -> tuple[int | None, str]:
    """Messages in flight on A at the SIGKILL, and how that was counted."""
    at_kill = mark(run, "kill_a")
    if at_kill is None:
        return None, "no kill"
    if run.on_a is not None:
        count = sum(n for client, n in at_kill["per_client"].items() if int(client) in run.on_a)
        return count, f"the {len(run.on_a)} clients the relay says it put on A"
    hit = crash_hit_clients(run)
    if hit and len(hit) == run.a_connections_at_kill:
        count = sum(n for client, n in at_kill["per_client"].items() if int(client) in hit)
        return count, (f"the {len(hit)} clients that lost messages or were disconnected in the crash window, as many "
                       "as A had connections (so taken to be A's)")
    return at_kill["in_flight"], "all clients (an upper bound: which were on A is not known)"


def crash_hit_clients(run: RunResult) -> set[int]:
    """Clients that lost a message sent in the crash window or were disconnected in it."""
    crash = windows(run)[0]
    hit = {client for client, _, sent in run.result["lost_list"] if crash.start <= sent / 1000 < crash.end}
    hit |= {d["client"] for d in run.result["disconnects"] if crash.start <= d["t"] / 1000 < crash.end}
    return hit


def longest_gap(run: RunResult, window: Window, inside: bool = False) -> float:
    """The longest gap between consecutive echoes of one client overlapping the window (``inside``: within it), ms."""
    if inside:
        gaps = [to - frm for _, frm, to in run.result["gaps"] if frm / 1000 >= window.start and to / 1000 <= window.end]
    else:
        gaps = [to - frm for _, frm, to in run.result["gaps"] if frm / 1000 < window.end and to / 1000 > window.start]
    return max(gaps, default=0.0)


def gap_text(gap: float, args: argparse.Namespace) -> str:
    """A gap in ms; gaps up to the listing threshold are not listed by the clients, so shown as a bound."""
    threshold = GAP_LIST_INTERVALS * args.interval_ms
    return f"{gap:.0f} ms" if gap > threshold else f"<= {threshold:.0f} ms"


def fmt_split(before: int, after: int) -> str:
    return f"{before + after} ({before} before / {after} after)" if before + after else "0"


def report(runs: list[RunResult], args: argparse.Namespace) -> None:
    """The side-by-side table, targets and verdicts, then per-run events and the proxy's log."""
    names = [r.relay for r in runs]
    width = 30
    column = 33
    rows: list[tuple[str, list[str], str]] = []

    def row(label: str, values: list[str], target: str = "") -> None:
        rows.append((label, values, target))

    def per_window(run: RunResult, kind: str) -> list[tuple[Window, tuple[int, int]]]:
        r = run.result
        times = {"lost": [s / 1000 for _, _, s in r["lost_list"]],
                 "duplicated": [s / 1000 for _, _, s, n in r["duplicate_list"] for _ in range(n)],
                 "out of order": [s / 1000 for _, _, s, _ in r["out_of_order_list"]],
                 "disconnected": [d["t"] / 1000 for d in r["disconnects"]]}[kind]
        return [(w, split(times, w)) for w in windows(run)]

    row("clients disconnected", [f"{r.result['disconnected']} of {r.result['opened']}" for r in runs], "0")
    row("  close codes", [", ".join(f"{c}x{n}" for c, n in sorted(r.result["close_codes"].items())) or "-"
                          for r in runs])
    for index, label in ((0, "  in crash window"), (1, "  in drain window")):
        row(label, [str(sum(per_window(r, "disconnected")[index][1])) for r in runs], "0")
    row("messages sent", [str(r.result["sent"]) for r in runs])
    row("  of scheduled (until closed)", [f"{r.result['sent'] / max(1, r.result['scheduled']):.1%}" for r in runs])
    row("messages echoed", [str(r.result["echoed"]) for r in runs])
    for kind in ("lost", "duplicated", "out of order"):
        key = {"lost": "lost", "duplicated": "duplicated", "out of order": "out_of_order"}[kind]
        row(f"messages {kind}", [str(r.result[key]) for r in runs])
        for index, label, target in ((0, "  crash window", "<= in flight at the kill" if kind == "lost" else ""),
                                     (1, "  drain window", "0")):
            row(label, [fmt_split(*per_window(r, kind)[index][1]) for r in runs], target)
    row("in flight at the kill", [str(in_flight_at_kill(r)[0]) for r in runs])
    row("  all clients, at the kill", [str((mark(r, "kill_a") or {}).get("in_flight")) for r in runs])
    row("  A's connections at the kill", [str(r.a_connections_at_kill) for r in runs])
    row("longest gap between echoes", [f"{r.result['longest_gap_ms']:.0f} ms" for r in runs])
    for label, pick, inside in (("  ended before the kill", lambda ws: Window("", -1.0, 0.0, ws[0].event), True),
                                ("  in crash window", lambda ws: Window("", ws[0].event, 0.0, ws[0].end), False),
                                ("  in drain window", lambda ws: ws[1], False)):
        row(label, [gap_text(longest_gap(r, pick(windows(r)), inside), args) for r in runs])
    row("round trip p50 / p99", [f"{r.result['p50_ms']:.2f} / {r.result['p99_ms']:.2f} ms" for r in runs])
    row("foreign echoes", [str(r.result["foreign"]) for r in runs], "0")
    row("CPU busy: relay / clients", [f"{r.cpu.get('relay', 0):.0%} / {r.cpu.get('clients', 0):.0%}" for r in runs])

    out(f"\n{'':{width}}" + "".join(f"{n:>{column}}" for n in names) + "    target")
    for label, values, target in rows:
        out(f"{label:{width}}" + "".join(f"{v:>{column}}" for v in values) + (f"    {target}" if target else ""))
    out("  Windows by send time (disconnects by close time): the crash window until 1 s before the drain call (the")
    out("  SIGTERM of B without one), the drain window from then to the end. 'before' and 'after' split each at its")
    out("  event (the SIGKILL of A; the drain call, else the SIGTERM of B): a message lost 'before' the kill was")
    out("  in flight at it, one lost 'after' it was sent once A was gone. Gaps: between consecutive echoes of a")
    out("  client, longest overlapping each stretch.")

    for run in runs:
        verdicts(run)
        describe(run, args)


def verdicts(run: RunResult) -> None:
    """Each target: met or missed."""
    r = run.result
    interval = r["interval_ms"]
    if r["p50_ms"] is not None and r["p50_ms"] > interval:
        out(f"\n{run.relay}: SATURATED: the median round trip ({r['p50_ms']:.0f} ms) exceeds the message interval "
            f"({interval:g} ms): the relay (or this machine) cannot keep up, so messages queue; in-flight counts and "
            "crash losses grow with that queue. Try a longer --interval-ms for the unsaturated behaviour.")
    ws = windows(run)
    lost = [s / 1000 for _, _, s in r["lost_list"]]
    dups = [s / 1000 for _, _, s, n in r["duplicate_list"] for _ in range(n)]
    ooo = [s / 1000 for _, _, s, _ in r["out_of_order_list"]]
    crash_lost = split(lost, ws[0])
    drain_bad = sum(split(lost, ws[1])) + sum(split(dups, ws[1])) + sum(split(ooo, ws[1]))
    in_flight, how = in_flight_at_kill(run)
    drained = any(e.name == "drain_b" and not e.note.startswith("skipped") for e in run.events)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out(f"\n{run.relay}: targets")
    out(f"  0 clients disconnected: {r['disconnected']} -> {verdict(r['disconnected'] == 0)}")
    out(f"  0 lost/duplicated/reordered across the drain: {drain_bad} -> {verdict(drain_bad == 0)}"
        + ("" if drained else " (no drain call was made: B was just SIGTERMed)"))
    if in_flight is not None:
        total = sum(crash_lost)
        out(f"  crash loss <= in flight at the kill: {total} <= {in_flight} -> {verdict(total <= in_flight)}"
            f" (in flight counted on {how})")
        out(f"  (of the crash loss, {crash_lost[0]} were sent before the kill and {crash_lost[1]} after it, before the "
            "relay saw that A was gone)")
    if r.get("lists_truncated"):
        out("  (the clients' lists of lost/duplicated/reordered messages were truncated: window counts are partial)")


RESUMED = re.compile(r"session \S+ resumed: (\S+) -> (\S+) in (\d+) ms .*?; (\d+) held messages sent")


def resume_summary(lines: list[tuple[float, str]]) -> str:
    """What rubrisproxy's session log lines say: sessions moved, resumed (how fast), failed, closed."""
    moved = sum("moving off" in text for _, text in lines)
    resumed = [(t, RESUMED.search(text)) for t, text in lines]
    done = [(t, m) for t, m in resumed if m]
    retries = sum("did not take over" in text for _, text in lines)
    closed = Counter(m.group(1) for _, text in lines if (m := re.search(r"closing the client \((\d+)\)", text)))
    if not (moved or done or retries or closed):
        return ""
    parts = [f"{moved} sessions moving", f"{len(done)} resumed"]
    if done:
        ms = sorted(int(m.group(3)) for _, m in done)
        routes = Counter(f"{m.group(1)}->{m.group(2)}" for _, m in done)
        parts.append(" ".join(f"{route} x{n}" for route, n in routes.items()))
        parts.append(f"in p50 {ms[len(ms) // 2]} / max {ms[-1]} ms")
        parts.append(f"{sum(int(m.group(4)) for _, m in done)} held messages sent")
        parts.append(f"last resumed at {max(t for t, _ in done):.2f}s")
    if retries:
        parts.append(f"{retries} dials that did not take over")
    if closed:
        parts.append("clients closed: " + ", ".join(f"{code}x{n}" for code, n in closed.items()))
    return "; ".join(parts)


def describe(run: RunResult, args: argparse.Namespace) -> None:
    """Events as they happened, notes, and the relay's log lines grouped by the event they followed."""
    out(f"\n{run.relay}: events (seconds after the clients started sending)")
    for event in run.events:
        actual = f"{event.actual:6.2f}" if event.actual is not None else "     -"
        out(f"  {actual}  {event.label:24} {event.note}")
    for note in run.notes:
        out(f"  note: {note}")
    if run.relay == "roundrobin":
        return
    if run.admin_state:
        out(f"  admin at the end: resumes {run.admin_state.get('resumes')}, resume failures "
            f"{run.admin_state.get('resume_failures')}; servers "
            + ", ".join(f"{s.get('name')} {s.get('state')} ({s.get('sessions')} sessions, {s.get('total')} total)"
                        for s in run.admin_state.get("servers", [])))
    out(f"{run.relay}: log lines, grouped by the event they followed (ids folded to ID, numbers to N, counted)")
    bounds = [(-1e9, "start")] + [(e.actual, e.label) for e in run.events if e.actual is not None]
    for index, (start, label) in enumerate(bounds):
        stop = bounds[index + 1][0] if index + 1 < len(bounds) else 1e9
        lines = [(t, text) for t, text in run.log if start <= t < stop]
        out(f"  after {label}: {len(lines)} lines")
        summary = resume_summary(lines)
        if summary:
            out(f"    {summary}")
        for line in log_shapes(lines, args.log_shapes):
            out(f"    {line}")


def log_shapes(lines: list[tuple[float, str]], limit: int) -> list[str]:
    """Log lines folded into kinds (ids to ID, numbers to N), most common first: a count, the first time and
    message of each of the ``limit`` commonest, then how many kinds were left out."""
    shapes: Counter[str] = Counter()
    first: dict[str, tuple[float, str]] = {}
    for t, text in lines:
        message = text.split("] ", 1)[-1]
        shape = re.sub(r"\d+(\.\d+)?", "N", re.sub(r"\b[0-9a-f]{8,}\b", "ID", message))
        shapes[shape] += 1
        first.setdefault(shape, (t, message))
    shown = []
    for shape, count in shapes.most_common(limit):
        t, message = first[shape]
        shown.append(f"{count:5}x  first at {t:6.2f}s: {message[:220]}")
    if len(shapes) > limit:
        shown.append(f"... {len(shapes) - limit} more kinds")
    return shown


# --- main ---------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relays", default=",".join(RELAYS), help="comma-separated: " + ", ".join(RELAYS))
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=20.0, help="each client sends a message this often")
    parser.add_argument("--seconds", type=float, default=30.0, help="sending time (then a 3 s drain)")
    parser.add_argument("--kill-a", type=float, default=10.0, help="SIGKILL backend A at this second")
    parser.add_argument("--restart-a", type=float, default=15.0)
    parser.add_argument("--drain-b", type=float, default=20.0, help="POST .../servers/s2/drain (rubrisproxy)")
    parser.add_argument("--stop-b", type=float, default=22.0, help="SIGTERM B (rubrisproxy)")
    parser.add_argument("--restart-b", type=float, default=22.5, help="restart B, then POST .../s2/ready")
    parser.add_argument("--baseline-stop-b", type=float, default=20.0, help="SIGTERM B (roundrobin)")
    parser.add_argument("--baseline-restart-b", type=float, default=22.0, help="restart B (roundrobin)")
    parser.add_argument("--proxy-path", default=str(ROOT), help="PYTHONPATH for rubrisproxy (default: this tree)")
    parser.add_argument("--proxy-commit", metavar="COMMIT",
                        help="run rubrisproxy from `git archive COMMIT` of this repository (e.g. HEAD, to leave out "
                             "uncommitted edits) instead of --proxy-path")
    parser.add_argument("--no-admin", action="store_true", help="run rubrisproxy without --admin (no drain call)")
    parser.add_argument("--replay-window-ms", type=int, default=0, metavar="MS",
                        help="with --replay-messages: resend only messages sent within this many ms of the loss")
    parser.add_argument("--replay-messages", type=int, default=0, metavar="N",
                        help="rubrisproxy [websocket] replay-messages (at-least-once after a crash); 0: its default")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the relay and backend logs here")
    parser.add_argument("--log-shapes", type=int, default=8, help="kinds of log line shown per event")
    parser.add_argument("--output", default=str(RESULTS), help="results file")
    args = parser.parse_args()
    args.relay_list = [name for name in args.relays.split(",") if name]
    if not args.relay_list or set(args.relay_list) - set(RELAYS):
        parser.error(f"--relays: choose from {', '.join(RELAYS)}")
    if not 1 <= args.clients <= 5000 or not 1 <= args.interval_ms <= 10000 or not 1 <= args.seconds <= 600:
        parser.error("--clients 1..5000, --interval-ms 1..10000, --seconds 1..600")
    schedules = {"rubrisproxy": [args.kill_a, args.restart_a, args.drain_b, args.stop_b, args.restart_b],
                 "roundrobin": [args.kill_a, args.restart_a, args.baseline_stop_b, args.baseline_restart_b]}
    for relay in args.relay_list:
        times = schedules[relay]
        if times != sorted(times) or times[0] <= 0 or times[-1] >= args.seconds:
            parser.error(f"{relay}: event times must be in order, after 0 and before --seconds")
    return args


def git(*arguments: str) -> str:
    """Output of a read-only git command in this repository ('' if it fails)."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else ""


def prepare_proxy_source(args: argparse.Namespace, tmp: Path) -> str:
    """Point args.proxy_path at the rubrisproxy to run; describe it."""
    if args.proxy_commit:
        commit = git("rev-parse", "--verify", f"{args.proxy_commit}^{{commit}}")
        if not commit:
            raise SystemExit(f"--proxy-commit: no commit {args.proxy_commit!r}")
        source = tmp / "proxy-src"
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "rubrisproxy", "twisted"],
                                 capture_output=True, timeout=120, check=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=120)
        args.proxy_path = str(source)
        return f"commit {commit[:10]} ({git('log', '-1', '--format=%s', commit)[:80]})"
    if Path(args.proxy_path).resolve() == ROOT:
        head = git("rev-parse", "--short=10", "HEAD")
        dirty = git("status", "--porcelain", "--", "rubrisproxy", "twisted")
        return f"working tree at {head}" + (" with uncommitted changes to rubrisproxy" if dirty else "")
    return f"{args.proxy_path}"


def _run_one(scenario: Scenario, runs: list[RunResult]) -> None:
    """Run one relay's scenario: its result goes to ``runs``, or its failure and notes to the output."""
    out(f"running {scenario.relay} ...")
    try:
        runs.append(scenario.run())
    except ScenarioError as error:
        out(f"{scenario.relay}: failed: {str(error).strip()}")
        for note in scenario.notes:
            out(f"  note: {note}")
    finally:
        scenario.processes.stop_all()


def _keep_logs(tmp: Path, keep: Path) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        if path.is_file():
            shutil.copy(path, keep / path.name)


def main() -> None:
    args = parse_args()
    if not shutil.which("node"):
        raise SystemExit("node is needed")
    if not (HERE / "ws" / "node_modules" / "ws" / "package.json").exists():
        raise SystemExit("bench/ws/node_modules is missing: run `npm install` in bench/ws")
    limit = harness.raise_open_files(4 * args.clients + 1024)
    processes = Processes()
    runs: list[RunResult] = []
    started = time.monotonic()
    out(f"python bench/ws_resume.py {' '.join(sys.argv[1:])}".rstrip())
    out(f"{args.clients} clients, a text message each every {args.interval_ms:g} ms for {args.seconds:g} s (then "
        f"{DRAIN_MS / 1000:g} s for late echoes); open files limit {limit}; load average at start "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="ws_resume.") as tmp_name, harness.terminate_on_sigterm():
        tmp = Path(tmp_name)
        if "rubrisproxy" in args.relay_list:
            out(f"rubrisproxy: {prepare_proxy_source(args, tmp)}")
        try:
            for relay in args.relay_list:
                _run_one(Scenario(args, relay, processes, tmp), runs)
        finally:
            processes.stop_all()
            if args.keep_logs:
                _keep_logs(tmp, Path(args.keep_logs))
    if runs:
        report(runs, args)
    strays = processes.strays()
    out(f"\ntotal {time.monotonic() - started:.0f}s; "
        + (f"STRAY process groups left: {strays}" if strays else "no stray processes left"))
    out.save(args.output)


if __name__ == "__main__":
    main()
