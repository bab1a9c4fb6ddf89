"""Mass resume: thousands of session-mode WebSockets lose half their backends at once; who waits, how long.

Two Node `ws` echo backends A and B (bench/ws/echo.js, which answers "?" with its name), rubrisproxy in
session mode in front of them (round robin), and one Node process (bench/mass_resume/clients.js) opening
CONNECTIONS WebSockets through it. A sample of them (--sample, spread over the opening order) are probes:
each asks which backend it is on, then sends a numbered message every --interval-ms and records the echoes;
the other connections stay idle. After --before-kill seconds backend A is SIGKILLed: its half of the
sessions move to B while B's half should go on being served.

Per probe, a message's echo wait is the time from its sending until an echo of it or of a later message of
the same probe (a message lost with A is answered by the next one's echo: the probe waits "until
echoed"). Reported per group (probes that stayed on B, probes moved from A), over the messages sent from
one interval before the kill on: each probe's longest wait (median, p99 and max over the probes), the
messages' round trips, how many were never answered; the same for the seconds before the kill (the steady
state); every connection closed (disconnects); when the proxy's log says the moves finished (its
"resumed ... in N ms" lines: median and max) and the proxy's CPU from the kill on.

The proxy runs pinned to core 1, the Node processes on core 0. ``--tree DIR`` (repeatable) runs rubrisproxy
from another checkout (PYTHONPATH=DIR), e.g. the code before a change, in the same command; the default is
this tree. Figures go to bench/results/mass_resume.txt.

    python bench/mass_resume.py [--connections 8000] [--sample 196] [--interval-ms 100]
                                [--before-kill 3] [--after-kill 6] [--tree DIR ...] [--rounds N]
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
import threading
import time
from calendar import timegm
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import harness
from harness import JsonLines, Output, Processes, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ECHO_JS = HERE / "ws" / "echo.js"
CLIENTS_JS = HERE / "mass_resume" / "clients.js"
RESULTS = HERE / "results" / "mass_resume.txt"
PROXY_CORE, LOAD_CORE = "1", "0"
RESUMED = re.compile(r"resumed: (\S+) -> (\S+) in (\d+) ms")
#: A "resumed" line's time (the main log's ISO 8601 UTC, milliseconds) and how long its move took.
RESUMED_AT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*resumed: \S+ -> \S+ in (\d+) ms", re.M)
DRAIN_MS = 2000


class ScenarioError(Exception):
    """Something the run needs did not happen."""


out = Output()
wait_port = partial(harness.wait_port, how=harness.PortWait(interval=0.02, error=ScenarioError, name_command=True))


def quantile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@dataclass
class Group:
    """The probes of one backend, and their waits in one stretch of time."""

    name: str
    probes: int = 0
    longest: list[float] = field(default_factory=list)  # each probe's longest wait
    round_trips: list[float] = field(default_factory=list)
    unanswered: int = 0  # messages with no echo of theirs or of a later one
    first_answer: list[float] = field(default_factory=list)  # kill to the first echo of a message sent after it

    def line(self) -> str:
        if not self.probes:
            return f"{self.name}: no probes"
        return (f"{self.name:26} {self.probes:4} probes; longest wait per probe p50 {ms(quantile(self.longest, .5))} / "
                f"p99 {ms(quantile(self.longest, .99))} / max {ms(max(self.longest, default=None))} ms; round trips "
                f"p50 {ms(quantile(self.round_trips, .5))} / p99 {ms(quantile(self.round_trips, .99))} ms; "
                f"unanswered {self.unanswered}"
                + (f"; first echo after the kill: p50 {ms(quantile(self.first_answer, .5))} / max "
                   f"{ms(max(self.first_answer, default=None))} ms" if self.first_answer else ""))


def waits(sent: list[float], echoed: list[float | None], start: float, stop: float) -> tuple[list[float], int]:
    """Echo waits of the messages sent in [start, stop): each until its echo or a later message's; unanswered."""
    answered_at: list[float | None] = [None] * len(sent)
    soonest: float | None = None
    for seq in range(len(sent) - 1, -1, -1):
        echo = echoed[seq]
        if echo is not None and (soonest is None or echo < soonest):
            soonest = echo
        answered_at[seq] = soonest
    result, unanswered = [], 0
    for seq, at in enumerate(sent):
        if not start <= at < stop:
            continue
        answer = answered_at[seq]
        if answer is None:
            unanswered += 1
        else:
            result.append(answer - at)
    return result, unanswered


@dataclass
class RunResult:
    """One tree's run."""

    tree: str
    opened: int
    open_s: float
    steady: dict[str, Group]
    after: dict[str, Group]
    closes: list[list[Any]]
    resumed_ms: list[int]
    failures: int
    retries: int  # dials that did not take over (each move then tries again)
    proxy_cpu_s: float
    not_moved: int
    timeline: Timeline


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds a process ran on a CPU and waited for one (runnable, another task running), from /proc/PID/schedstat."""
    with open(f"/proc/{pid}/schedstat") as f:
        ran, waited, _ = f.read().split()
    return int(ran) / 1e9, int(waited) / 1e9


class CpuSampler:
    """The proxy's user and system CPU seconds (clock ticks: 10 ms steps) and its time on and waiting for a CPU,
    sampled every 20 ms from :meth:`start`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, float, float, float]] = []  # (time.time(), user, system, ran, waited)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                user, system = harness.cpu_times(self.pid)
                ran, waited = schedstat(self.pid)
            except OSError:
                return
            self.samples.append((time.time(), user, system, ran, waited))
            self._stop.wait(0.02)

    def between(self, start: float, stop: float) -> tuple[float, ...]:
        """User and system CPU seconds, seconds on a CPU and waiting for one, from the first sample at or after
        ``start`` to the first at or after ``stop``."""
        def at(moment: float) -> tuple[float, ...]:
            for sample in self.samples:
                if sample[0] >= moment:
                    return sample[1:]
            return self.samples[-1][1:] if self.samples else (0.0,) * 4
        return tuple(b - a for a, b in zip(at(start), at(stop), strict=True))


@dataclass
class Timeline:
    """When the moves happened, from the proxy's log, in seconds after the kill."""

    lost: list[float]  # each moved session's old backend leg ended (its "resumed" line's time less its duration)
    resumed: list[float]
    cpu_user: float  # the proxy's CPU seconds from the kill to the last move
    cpu_system: float
    ran: float  # its seconds on a CPU (schedstat) from the kill to the last move
    waited: float  # runnable, waiting for a CPU that something else held

    def line(self) -> str:
        if not self.resumed:
            return "timeline: no moves"
        last = max(max(self.resumed), 1e-3)
        return (f"timeline after the kill: backend legs ended {min(self.lost) * 1e3:.0f}..{max(self.lost) * 1e3:.0f} ms, "
                f"moves done {min(self.resumed) * 1e3:.0f}..{last * 1e3:.0f} ms (p50 "
                f"{ms(quantile(self.resumed, .5) * 1e3)}); proxy CPU to the last move {(self.cpu_user + self.cpu_system) * 1e3:.0f} "
                f"ms (user {self.cpu_user * 1e3:.0f} / system {self.cpu_system * 1e3:.0f}); on its CPU {self.ran / last:.0%} of "
                f"the time, waiting for it {self.waited / last:.0%}, idle {max(0.0, 1 - (self.ran + self.waited) / last):.0%}")


def timeline(log: str, kill_wall: float, cpu: CpuSampler) -> Timeline:
    """The moves' timeline from the proxy's ``log`` text (times in UTC) against the kill (``kill_wall``)."""
    lost, resumed = [], []
    for match in RESUMED_AT.finditer(log):
        at = timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")) + int(match.group(2)) / 1000 - kill_wall
        resumed.append(at)
        lost.append(at - int(match.group(3)) / 1000)
    user, system, ran, waited = cpu.between(kill_wall, kill_wall + max(resumed, default=0.0))
    return Timeline(lost, resumed, user, system, ran, waited)


class Run:
    """Backends A and B, one rubrisproxy, the clients; the SIGKILL of A."""

    def __init__(self, args: argparse.Namespace, tree: str, processes: Processes, tmp: Path) -> None:
        self.args = args
        self.tree = tree
        self.processes = processes
        self.tmp = tmp
        self.port = free_port()
        self.ports = {"A": free_port(), "B": free_port()}
        self.backends: dict[str, subprocess.Popen[bytes]] = {}
        self.log = tmp / f"proxy-{len(list(tmp.iterdir()))}.log"

    def start_backend(self, name: str) -> None:
        with open(self.tmp / f"echo-{name}.out", "ab") as sink:
            process = self.processes.start(["taskset", "-c", LOAD_CORE, "node", str(ECHO_JS), str(self.ports[name]),
                                            name], stdout=sink, stderr=subprocess.STDOUT)
        self.backends[name] = process
        wait_port(self.ports[name], process, timeout=10.0)

    def start_proxy(self, wrapper: tuple[str, ...] = ("taskset", "-c", PROXY_CORE),
                    options: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """rubrisproxy in front of A and B, run by ``wrapper`` (pinned to its core; or under valgrind), with more
        ``options``."""
        command = [*harness.twistd_command(), "-n", "--pidfile=", "--logfile", str(self.log), "rubrisproxy",
                   "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                   "--backend", f"127.0.0.1:{self.ports['A']}", "--backend", f"127.0.0.1:{self.ports['B']}",
                   "--websocket", "session", "--access-log", "off", *options]
        with open(self.tmp / "proxy.out", "ab") as sink:
            process = self.processes.start([*wrapper, *command], stdout=sink,
                                           stderr=subprocess.STDOUT, env=harness.python_path_env(self.tree),
                                           cwd=self.tmp)
        try:
            wait_port(self.port, process, timeout=300.0 if wrapper[:1] == ("valgrind",) else 20.0)
        except ScenarioError as error:
            tail = b"".join(p.read_bytes()[-2000:] for p in (self.tmp / "proxy.out", self.log) if p.exists())
            raise ScenarioError(f"{error}\n{tail.decode(errors='replace')}") from error
        return process

    def open_clients(self, *options: str) -> tuple[subprocess.Popen[bytes], JsonLines, dict[str, Any]]:
        """The clients' process, opened and its probes asked where they are; its lines; what it said on opening."""
        a = self.args
        command = ["taskset", "-c", LOAD_CORE, "node", str(CLIENTS_JS), f"ws://127.0.0.1:{self.port}/",
                   str(a.connections), str(a.sample), str(a.interval_ms), "--drain-ms", str(DRAIN_MS), *options]
        clients = self.processes.start(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        lines = JsonLines(clients, "clients.js", ScenarioError)
        opened = lines.next(time.monotonic() + 300)
        if opened.get("failed"):
            out(f"  {opened['failed']} connections failed to open: {opened.get('errors')}")
        asked = lines.next(time.monotonic() + 30)
        out(f"  probes per backend: {asked.get('backends')}")
        return clients, lines, opened

    def run(self) -> RunResult:
        a = self.args
        self.start_backend("A")
        self.start_backend("B")
        proxy = self.start_proxy()
        clients, lines, opened = self.open_clients()
        assert clients.stdin is not None
        clients.stdin.write(b"start\n")
        clients.stdin.flush()
        started = lines.next(time.monotonic() + 10)
        t0_ns = int(started["t0_ns"])
        time.sleep(a.before_kill)
        spy = None
        if a.py_spy:  # from the kill on, for --py-spy-seconds
            spy = self.processes.start([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                        str(proxy.pid), "--nonblocking", "--format", "raw", "--rate", "500", "--output", a.py_spy,
                                        "--duration", str(a.py_spy_seconds)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_before = harness.cpu_seconds(proxy.pid)
        sampler = CpuSampler(proxy.pid)
        sampler.start()
        kill_ns, kill_wall = time.monotonic_ns(), time.time()
        self.processes.signal(self.backends.pop("A"), signal.SIGKILL, timeout=5.0)
        clients.stdin.write(f"mark kill {kill_ns}\n".encode())
        clients.stdin.flush()
        time.sleep(a.after_kill)
        clients.stdin.write(b"stop\n")
        clients.stdin.flush()
        result = lines.next(time.monotonic() + DRAIN_MS / 1000 + 30)
        proxy_cpu = harness.cpu_seconds(proxy.pid) - cpu_before  # the drain included: moves may end in it
        sampler.stop()
        if spy is not None:
            spy.wait(30)
        if a.keep_json:
            Path(a.keep_json).write_text(json.dumps(result | {"kill_ns": kill_ns, "t0_ns": t0_ns, "kill_wall": kill_wall}))
        if a.keep_log and self.log.exists():
            shutil.copyfile(self.log, a.keep_log)
        steady, after, not_moved = analyse(result["probes"], (kill_ns - t0_ns) / 1e6, a)
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        resumed = [int(m.group(3)) for m in RESUMED.finditer(text)]
        moves = timeline(text, kill_wall, sampler)
        failures = text.count("could not move")
        retries = text.count("did not take over")
        return RunResult(self.tree, int(opened["opened"]), opened["open_ms"] / 1000, steady, after, result["closes"],
                         resumed, failures, retries, proxy_cpu, not_moved, moves)


def analyse(probes: list[dict[str, Any]], kill_ms: float,
            args: argparse.Namespace) -> tuple[dict[str, Group], dict[str, Group], int]:
    """The probes' waits by group, before the kill and from it on; how many of A's probes did not end on B."""
    stop_ms = kill_ms + args.after_kill * 1000
    steady = {"stayed on B": Group("stayed on B"), "moved from A": Group("moved from A")}
    after = {"stayed on B": Group("stayed on B"), "moved from A": Group("moved from A")}
    not_moved = 0
    for probe in probes:
        key = {"A": "moved from A", "B": "stayed on B"}.get(probe["before"])
        if key is None:
            continue
        if key == "moved from A" and probe["after"] != "B":
            not_moved += 1
        sent, echoed = probe["sent"], probe["echoed"]
        pairs = list(zip(sent, echoed, strict=True))
        for groups, start, stop in ((steady, 1000.0, kill_ms - args.interval_ms),
                                    (after, kill_ms - args.interval_ms, stop_ms)):
            group = groups[key]
            group.probes += 1
            each, unanswered = waits(sent, echoed, start, stop)
            group.longest.append(max(each, default=0.0) if not unanswered else float("inf"))
            group.unanswered += unanswered
            group.round_trips += [e - s for s, e in pairs if e is not None and start <= s < stop]
        firsts = [e for s, e in pairs if s >= kill_ms and e is not None]
        if firsts:
            after[key].first_answer.append(min(firsts) - kill_ms)
    return steady, after, not_moved


def report(run: RunResult, args: argparse.Namespace) -> None:
    out(f"\n{run.tree}: {run.opened} WebSockets opened in {run.open_s:.1f} s")
    out("  before the kill (steady, from 1 s after the start):")
    for group in run.steady.values():
        out(f"    {group.line()}")
    out(f"  from the kill on ({args.after_kill:g} s):")
    for group in run.after.values():
        out(f"    {group.line()}")
    moved = sorted(run.resumed_ms)
    out(f"  proxy log: {len(moved)} sessions resumed, in p50 {ms(quantile(moved, .5))} / p99 "
        f"{ms(quantile(moved, .99))} / max {ms(moved[-1] if moved else None)} ms after their backend leg ended; "
        f"{run.failures} could not move, {run.retries} dials did not take over; proxy CPU {run.proxy_cpu_s:.2f} s from the kill to the end of the drain"
        + (f" ({run.proxy_cpu_s * 1e3 / len(moved):.2f} ms per move)" if moved else ""))
    out(f"  {run.timeline.line()}")
    codes: dict[int, int] = {}
    for _, _, code in run.closes:
        codes[code] = codes.get(code, 0) + 1
    out(f"  disconnects: {len(run.closes)}" + (f" (codes {codes})" if codes else "")
        + (f"; {run.not_moved} probes of A not on B at the end" if run.not_moved else ""))
    surviving = run.after["stayed on B"].longest
    moved_waits = run.after["moved from A"].longest
    out(f"  targets: stayed on B longest wait < 200 ms: {ms(max(surviving, default=None))} ms -> "
        f"{'met' if surviving and max(surviving) < 200 else 'MISSED'}; moved answered within 1500 ms: "
        f"{ms(max(moved_waits, default=None))} ms -> "
        f"{'met' if moved_waits and max(moved_waits) <= 1500 else 'MISSED'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8000)
    parser.add_argument("--sample", type=int, default=196, help="probes among the connections")
    parser.add_argument("--interval-ms", type=float, default=100.0, help="each probe sends a message this often")
    parser.add_argument("--before-kill", type=float, default=3.0, help="seconds of probing before the SIGKILL of A")
    parser.add_argument("--after-kill", type=float, default=6.0, help="seconds of probing after it")
    parser.add_argument("--tree", action="append", default=[],
                        help="run rubrisproxy from this checkout (repeatable; default: this tree)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tree, interleaved")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--py-spy", metavar="PATH",
                        help="py-spy record the proxy from the kill on (raw stacks; --nonblocking: a sample does not "
                             "stop the proxy, which blocking samples slow down several times over)")
    parser.add_argument("--py-spy-seconds", type=int, default=1)
    parser.add_argument("--keep-json", metavar="PATH", help="write the last run's raw client result here")
    parser.add_argument("--keep-log", metavar="PATH", help="copy the last run's proxy log here")
    args = parser.parse_args()
    args.trees = [str(Path(tree).resolve()) for tree in args.tree] or [str(ROOT)]
    if not 2 <= args.connections <= 9000 or not 1 <= args.sample <= args.connections:
        parser.error("--connections 2..9000, --sample 1..connections")
    if not 1 <= args.rounds <= 5 or not 0.5 <= args.after_kill <= 30 or not 1.5 <= args.before_kill <= 30:
        parser.error("--rounds 1..5, --before-kill 1.5..30, --after-kill 0.5..30")
    return args


def main() -> None:
    args = parse_args()
    for tool in ("node", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    if not (HERE / "ws" / "node_modules" / "ws" / "package.json").exists():
        raise SystemExit("bench/ws/node_modules is missing: run `npm install` in bench/ws")
    limit = harness.raise_open_files(2 * args.connections + 2048)
    out(f"python bench/mass_resume.py {' '.join(sys.argv[1:])}".rstrip())
    out(f"{args.connections} session-mode WebSockets over backends A and B, {args.sample} probes sending every "
        f"{args.interval_ms:g} ms; SIGKILL A after {args.before_kill:g} s, {args.after_kill:g} s more; proxy on core "
        f"{PROXY_CORE}, Node on core {LOAD_CORE}; open files limit {limit}; load average at start "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    processes = Processes()
    started = time.monotonic()
    with harness.terminate_on_sigterm():
        try:
            for round_index in range(args.rounds):
                for tree in args.trees:
                    out(f"round {round_index + 1}: {tree} ...")
                    with tempfile.TemporaryDirectory(prefix="mass_resume.") as tmp:
                        try:
                            report(Run(args, tree, processes, Path(tmp)).run(), args)
                        except ScenarioError as error:
                            out(f"  failed: {error}")
                        finally:
                            processes.stop_all()
        finally:
            processes.stop_all()
    strays = processes.strays()
    out(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end {os.getloadavg()[0]:.2f}; "
        + (f"STRAY process groups left: {strays}" if strays else "no stray processes left"))
    out.save(args.output)


if __name__ == "__main__":
    main()
