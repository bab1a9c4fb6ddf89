"""WebSocket benchmark: rubrisproxy's tunnel and session modes against portforward, HAProxy and no relay, in one run.

Starts a Node `ws` echo backend (bench/ws/echo.js), then each relay pinned to core 1, and
drives each with a Node `ws` load generator (bench/ws/loadgen.js) from core 0, where the
backend runs too. Relays: direct (no relay), portforward (twisted.protocols.portforward),
tunnel and session (rubrisproxy --websocket tunnel|session), haproxy (HAProxy 2.6, one thread, if installed).
Loads, 50 clients each keeping
16 binary messages in flight: 32 B and 16 KiB. Reports echoed messages/s, p50 and p99
round trip, and the relay's CPU (utime + stime from /proc) per message, each also as a ratio
to portforward. Then opens --idle-connections idle WebSockets through a fresh instance of
each relay, holds them 5 s and reports the relay's RSS growth per connection; and opens
--handshakes WebSockets (100 handshakes in flight) through another fresh instance, as a reconnect storm
after a restart would: handshakes per second and the relay's CPU per handshake.
Rounds are interleaved; medians are reported and written to bench/results/ws_bench.txt.

    python bench/ws_bench.py [--rounds 3] [--duration 10] [--only tunnel,portforward]
                             [--idle-connections 5000] [--skip-idle] [--handshakes 5000] [--compare DIR]

``--compare DIR`` runs the tunnel and session relays a second time from another checkout (``tunnel@compared``,
``session@compared``, e.g. the code before a change) in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import harness
from harness import JsonLines, Output, Processes, cpu_seconds, free_port, middle

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WS_DIR = HERE / "ws"
RESULTS = HERE / "results" / "ws_bench.txt"
PROXY_CORE = "1"
LOAD_CORE = "0"
RELAYS = ("direct", "portforward", "haproxy", "tunnel", "session")
BASELINE = "portforward"
COMPARED = "compared"  # the suffix of a relay run from the --compare checkout
CLIENTS = 50
IN_FLIGHT = 16
LOADS = (("32 B", 32), ("16 KiB", 16 * 1024))
WARMUP_SECONDS = 1.0
IDLE_HOLD_SECONDS = 5.0
OPEN_TIMEOUT_SECONDS = 120.0
HANDSHAKES_IN_FLIGHT = 100
# Targets: relay -> ({load: max CPU/msg ratio to portforward}, max idle KB per connection, min handshakes/s).
TARGETS = {"tunnel": ({"32 B": 1.3, "16 KiB": 1.3}, 5.5, 0.0), "session": ({"32 B": 1.2, "16 KiB": 1.5}, 10.0, 1500.0)}
HAPROXY_CONF = """
global
    nbthread 1
    maxconn {maxconn}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend ws
    bind 127.0.0.1:{port} backlog 1024
    default_backend echo
backend echo
    server s1 127.0.0.1:{echo}
"""


class RelayUnavailable(Exception):
    """A relay that would not start or would not pass a WebSocket echo."""


@dataclass(frozen=True)
class LoadShape:
    """One run of the load generator: ``clients`` connections, each keeping ``in_flight`` messages of ``size``
    bytes in flight (0: they only open and hold), measured for ``seconds`` after ``warmup``."""

    clients: int
    in_flight: int
    size: int
    seconds: float
    warmup: float = WARMUP_SECONDS


@dataclass
class LoadResult:
    """One load run through one relay."""

    relay: str
    test: str
    rate: float  # echoed messages per second
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # relay user + system CPU per echoed message; None without a relay
    relay_busy: float | None  # relay CPU seconds per wall second
    load_busy: float  # load generator + echo backend CPU seconds per wall second (core 0)


@dataclass
class IdleResult:
    """Idle connections held through one fresh relay process."""

    relay: str
    kb_per_conn: float
    rss_before_mib: float
    rss_after_mib: float
    open_seconds: float
    fds: int


@dataclass
class HandshakeResult:
    """WebSockets opened through one fresh relay process, ``HANDSHAKES_IN_FLIGHT`` at a time."""

    relay: str
    per_second: float
    cpu_us: float  # relay user + system CPU per handshake


out = Output()
wait_port = partial(harness.wait_port, how=harness.PortWait(error=RelayUnavailable))


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_files_limit(pid: int) -> str:
    """The soft 'Max open files' limit of a process, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


def ensure_node_modules() -> None:
    """``npm install`` in bench/ws when its node_modules lacks ws or bufferutil."""
    if all((WS_DIR / "node_modules" / name / "package.json").exists() for name in ("ws", "bufferutil")):
        return
    if not shutil.which("npm") or not shutil.which("node"):
        raise SystemExit("node and npm are needed (bench/ws holds a Node load generator and echo backend)")
    print("installing bench/ws node modules (npm install)", flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=WS_DIR, check=True, timeout=600)


class LineReader(JsonLines):
    """The load generator's JSON lines, each read with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(process, "load generator")

    def until(self, event: str, deadline: float) -> dict[str, Any]:
        """Skip objects until one whose ``event`` is ``event`` (a failed result ends it early)."""
        for _ in range(1000):
            message = self.next(deadline)
            if message.get("event") == event:
                return message
            if message.get("event") == "result":
                raise RuntimeError(f"load generator failed: {message}")
        raise RuntimeError(f"no {event!r} from the load generator")


# --- the bench ----------------------------------------------------------------------------------

@dataclass
class Relay:
    """A running relay (or the echo backend itself, for ``direct``)."""

    name: str
    port: int
    process: subprocess.Popen[bytes] | None


class Bench:
    """The echo backend, the relays and the load generator runs."""

    def __init__(self, processes: Processes, tmp: Path, compare: str = "") -> None:
        self.processes = processes
        self.tmp = tmp
        self.compare = compare
        self.echo_port = free_port()
        self.echo = processes.start(["taskset", "-c", LOAD_CORE, "node", str(WS_DIR / "echo.js"), str(self.echo_port)],
                                    stdout=subprocess.DEVNULL)
        try:
            wait_port(self.echo_port, self.echo)
        except RelayUnavailable as error:
            raise SystemExit(f"echo backend: {error}") from error

    def start_relay(self, name: str) -> Relay:
        """Start one relay on core 1 and check a WebSocket echo through it; ``mode@compared`` runs from the
        ``--compare`` checkout (:attr:`compare`)."""
        mode, _, at = name.partition("@")
        if name == "direct":
            return Relay(name, self.echo_port, None)
        port = free_port()
        if name == "portforward":
            command = [sys.executable, str(HERE / "baselines.py"), "portforward", str(port), str(self.echo_port)]
        elif name == "haproxy":
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            if not os.path.exists(haproxy):
                raise RelayUnavailable("haproxy is not installed")
            conf = self.tmp / "haproxy.cfg"
            maxconn = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100) // 2  # two descriptors per connection
            conf.write_text(HAPROXY_CONF.format(port=port, echo=self.echo_port, maxconn=maxconn))
            command = [haproxy, "-f", str(conf), "-db"]
        else:
            command = harness.twistd_command() + [
                "-n", "--pidfile=", "--logfile", str(self.tmp / f"{name}.log"), "rubrisproxy",
                "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                "--backend", f"127.0.0.1:{self.echo_port}", "--access-log", "off", "--websocket", mode]
        env = harness.python_path_env(self.compare if at else ROOT)
        log = self.tmp / f"{name}.out"
        with open(log, "wb") as sink:
            process = self.processes.start(["taskset", "-c", PROXY_CORE, *command], env=env, stdout=sink,
                                           stderr=subprocess.STDOUT)
        relay = Relay(name, port, process)
        try:
            wait_port(port, process)
            self.load(relay, LoadShape(clients=10, in_flight=4, size=32, seconds=1.0, warmup=0.2))  # warm up and check
        except (RelayUnavailable, RuntimeError) as error:
            self.processes.stop(process)
            tail = b"".join(path.read_bytes()[-1500:] for path in (log, self.tmp / f"{name}.log") if path.exists())
            raise RelayUnavailable(f"{error}\n{tail.decode(errors='replace')}") from error
        return relay

    def stop_relay(self, relay: Relay) -> None:
        if relay.process is not None:
            self.processes.stop(relay.process)

    def loadgen(self, url: str, shape: LoadShape, concurrency: int = 200) -> subprocess.Popen[bytes]:
        command = ["taskset", "-c", LOAD_CORE, "node", str(WS_DIR / "loadgen.js"), url, str(shape.clients),
                   str(shape.in_flight), str(shape.size), str(shape.seconds), "--warmup", str(shape.warmup),
                   "--open-timeout", str(OPEN_TIMEOUT_SECONDS), "--concurrency", str(concurrency)]
        return self.processes.start(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def load(self, relay: Relay, shape: LoadShape, test: str = "") -> LoadResult:
        """One load run; relay CPU is read when the load generator starts and stops its window."""
        loadgen = self.loadgen(f"ws://127.0.0.1:{relay.port}/", shape)
        reader = LineReader(loadgen)
        deadline = time.monotonic() + OPEN_TIMEOUT_SECONDS + shape.warmup + shape.seconds + 30
        pids = [loadgen.pid, self.echo.pid]
        try:
            reader.until("start", deadline)
            started = time.monotonic()
            relay_before = cpu_seconds(relay.process.pid) if relay.process else 0.0
            load_before = sum(cpu_seconds(pid) for pid in pids)
            reader.until("stop", deadline)
            wall = time.monotonic() - started
            relay_cpu = cpu_seconds(relay.process.pid) - relay_before if relay.process else 0.0
            load_cpu = sum(cpu_seconds(pid) for pid in pids) - load_before
            result = reader.until("result", deadline)
            loadgen.wait(max(1.0, deadline - time.monotonic()))
        finally:
            self.processes.stop(loadgen)
        if not result.get("ok") or not result.get("messages"):
            raise RuntimeError(f"load generator reported a failure: {result}")
        messages = int(result["messages"])
        return LoadResult(relay.name, test, float(result["rate"]), float(result["p50_ms"]), float(result["p99_ms"]),
                          relay_cpu * 1e6 / messages if relay.process else None,
                          relay_cpu / wall if relay.process else None, load_cpu / wall)

    @contextmanager
    def opening(self, name: str, count: int, seconds: float, in_flight: int | None = None,
                before: Callable[[int], float] = lambda pid: 0.0) -> Iterator[Opening]:
        """A fresh relay ``name``, ``count`` WebSockets opened through it (``in_flight`` handshakes at a time, kept
        open ``seconds``), ``before(pid)`` read just before they start; it stops the load and the relay on the way
        out. What it yields: the relay's pid, ``before``'s reading, the load generator's "open" report."""
        relay = self.start_relay(name)
        assert relay.process is not None
        pid = relay.process.pid
        loadgen = None
        try:
            time.sleep(0.5)
            reading = before(pid)
            extra = () if in_flight is None else (in_flight,)
            loadgen = self.loadgen(f"ws://127.0.0.1:{relay.port}/", LoadShape(count, 0, 0, seconds), *extra)
            reader = LineReader(loadgen)
            opened = reader.until("open", time.monotonic() + OPEN_TIMEOUT_SECONDS + 10)
            if opened["opened"] != count:
                raise RuntimeError(f"opened {opened['opened']} of {count}: {opened['errors']}")
            yield Opening(pid, reading, opened, loadgen, reader)
        finally:
            if loadgen is not None:
                self.processes.stop(loadgen)
            self.stop_relay(relay)

    def idle(self, name: str, connections: int) -> IdleResult:
        """Open ``connections`` WebSockets through a fresh relay, hold them idle, measure its RSS growth."""
        with self.opening(name, connections, OPEN_TIMEOUT_SECONDS + IDLE_HOLD_SECONDS + 30, before=rss_kib) as o:
            time.sleep(IDLE_HOLD_SECONDS)
            after = rss_kib(o.pid)
            fds = len(os.listdir(f"/proc/{o.pid}/fd"))
            result = o.finish()
            if not result.get("ok") or result.get("still_open") != connections:
                raise RuntimeError(f"connections did not stay open: {result}")
        return IdleResult(name, (after - o.before) / connections, o.before / 1024, after / 1024,
                          float(o.opened["open_seconds"]), fds)

    def handshakes(self, name: str, count: int) -> HandshakeResult:
        """Open ``count`` WebSockets, ``HANDSHAKES_IN_FLIGHT`` at a time, through a fresh relay: the rate and its CPU."""
        with self.opening(name, count, OPEN_TIMEOUT_SECONDS + 30, HANDSHAKES_IN_FLIGHT, before=cpu_seconds) as o:
            cpu = cpu_seconds(o.pid) - o.before
            o.finish()
        return HandshakeResult(name, count / float(o.opened["open_seconds"]), cpu * 1e6 / count)


@dataclass
class Opening:
    """WebSockets opened through a fresh relay (:meth:`Bench.opening`)."""

    pid: int
    before: float
    opened: dict[str, Any]
    loadgen: subprocess.Popen[bytes]
    reader: LineReader

    def finish(self) -> dict[str, Any]:
        """The load generator closes its connections and reports: its result."""
        assert self.loadgen.stdin is not None
        self.loadgen.stdin.close()
        return self.reader.until("result", time.monotonic() + 30)


# --- reporting ------------------------------------------------------------------------------------

def median_load(results: list[LoadResult]) -> LoadResult:
    first = results[0]
    cpu = [r.cpu_us for r in results if r.cpu_us is not None]
    busy = [r.relay_busy for r in results if r.relay_busy is not None]
    return LoadResult(first.relay, first.test, middle([r.rate for r in results]), middle([r.p50_ms for r in results]),
                      middle([r.p99_ms for r in results]), middle(cpu) if cpu else None,
                      middle(busy) if busy else None, middle([r.load_busy for r in results]))


def median_idle(results: list[IdleResult]) -> IdleResult:
    first = results[0]
    return IdleResult(first.relay, middle([r.kb_per_conn for r in results]),
                      middle([r.rss_before_mib for r in results]), middle([r.rss_after_mib for r in results]),
                      middle([r.open_seconds for r in results]), int(middle([float(r.fds) for r in results])))


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:5.2f}x" if value is not None and base else "    -"


def verdict(value: float | None, limit: float, unit: str) -> str:
    if value is None:
        return ""
    return f"target <= {limit:g}{unit}: {'met' if value <= limit else 'MISSED'}"


def limited_by(r: LoadResult) -> str:
    """Which core set the rate: the busier one, or both when both were nearly saturated."""
    if r.relay_busy is None:
        return "load"
    if min(r.relay_busy, r.load_busy) >= 0.9:
        return "both"
    if max(r.relay_busy, r.load_busy) < 0.85:
        return "neither"  # other work on the machine took the cores
    return "relay" if r.relay_busy >= r.load_busy else "load"


def report_load(results: list[LoadResult]) -> None:
    """One table per load, ratios to portforward, targets for tunnel and session."""
    for test in dict.fromkeys(r.test for r in results):
        rows = [r for r in results if r.test == test]
        base = next((r for r in rows if r.relay == BASELINE), None)
        out(f"\n{CLIENTS} clients x {IN_FLIGHT} in flight, {test} messages (medians)")
        out(f"  {'relay':16} {'msg/s':>9} {'x pf':>6} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/msg':>11} {'x pf':>6} "
            f"{'relay core':>10} {'load core':>9} {'limit':>7}  target")
        for r in rows:
            cpu_ratio = r.cpu_us / base.cpu_us if base and base.cpu_us and r.cpu_us is not None else None
            target = verdict(cpu_ratio, TARGETS[r.relay][0][test], "x pf CPU/msg") if r.relay in TARGETS else ""
            cpu = f"{r.cpu_us:11.1f}" if r.cpu_us is not None else f"{'-':>11}"
            relay_busy = f"{r.relay_busy:9.0%}" if r.relay_busy is not None else f"{'-':>9}"
            out(f"  {r.relay:16} {r.rate:9.0f} {ratio(r.rate, base.rate if base else None):>6} {r.p50_ms:8.2f} "
                f"{r.p99_ms:8.2f} {cpu} {ratio(r.cpu_us, base.cpu_us if base else None):>6} "
                f"{relay_busy:>10} {r.load_busy:9.0%} {limited_by(r):>7}  {target}")
    out("  relay core, load core: CPU seconds per second of the relay, and of the load generator plus echo backend;")
    out("  limit: the side that set the rate (load: that relay's msg/s is a floor on what it can do; neither: both")
    out("  cores had CPU to spare, so other work on the machine interfered)")


def report_idle(results: list[IdleResult], connections: int) -> None:
    """The idle-connection table: RSS growth per connection, ratios to portforward, targets."""
    base = next((r for r in results if r.relay == BASELINE), None)
    out(f"\n{connections} idle WebSocket connections held {IDLE_HOLD_SECONDS:g}s through a fresh relay (medians)")
    out(f"  {'relay':12} {'KB/conn':>8} {'x pf':>6} {'RSS before':>11} {'RSS after':>10} {'open s':>7} "
        f"{'relay fds':>9}  target")
    for r in results:
        target = verdict(r.kb_per_conn, TARGETS[r.relay][1], " KB/conn") if r.relay in TARGETS else ""
        out(f"  {r.relay:12} {r.kb_per_conn:8.2f} {ratio(r.kb_per_conn, base.kb_per_conn if base else None):>6} "
            f"{r.rss_before_mib:7.1f} MiB {r.rss_after_mib:6.1f} MiB {r.open_seconds:7.2f} {r.fds:9}  {target}")


def report_handshakes(results: list[HandshakeResult], count: int) -> None:
    """The handshake table: WebSockets opened per second and CPU per handshake, ratios to HAProxy."""
    base = next((r for r in results if r.relay == "haproxy"), None)
    out(f"\n{count} WebSockets opened, {HANDSHAKES_IN_FLIGHT} handshakes in flight, through a fresh relay (medians)")
    out(f"  {'relay':16} {'opened/s':>9} {'x haproxy':>9} {'CPU us/handshake':>17} {'x haproxy':>9}  target")
    for r in results:
        minimum = TARGETS[r.relay][2] if r.relay in TARGETS else 0.0
        target = (f"target >= {minimum:g}/s: {'met' if r.per_second >= minimum else 'MISSED'}" if minimum else "")
        out(f"  {r.relay:16} {r.per_second:9.0f} {ratio(r.per_second, base.per_second if base else None):>9} "
            f"{r.cpu_us:17.0f} {ratio(r.cpu_us, base.cpu_us if base else None):>9}  {target}")


# --- main -------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per load run")
    parser.add_argument("--only", default=",".join(RELAYS), help="comma-separated relays: " + ", ".join(RELAYS))
    parser.add_argument("--idle-connections", type=int, default=5000, help="idle WebSockets per relay")
    parser.add_argument("--skip-idle", action="store_true", help="skip the idle-connection memory test")
    parser.add_argument("--handshakes", type=int, default=5000, help="WebSockets opened per relay (0: skip)")
    parser.add_argument("--skip-load", action="store_true", help="skip the message loads")
    parser.add_argument("--compare", default="", help="another checkout whose tunnel and session relays run too")
    args = parser.parse_args()
    args.relays = [name for name in args.only.split(",") if name]
    unknown = set(args.relays) - set(RELAYS)
    if unknown or not args.relays:
        parser.error(f"unknown relays {sorted(unknown)}; choose from {', '.join(RELAYS)}")
    if (not 1 <= args.rounds <= 100 or not 0 < args.duration <= 3600 or not 1 <= args.idle_connections <= 50000
            or not 0 <= args.handshakes <= 50000):
        parser.error("--rounds 1..100, --duration 0..3600, --idle-connections 1..50000, --handshakes 0..50000")
    if args.compare:
        args.relays += [f"{name}@{COMPARED}" for name in args.relays if name in ("tunnel", "session")]
    return args


def main() -> None:
    args = parse_args()
    if not shutil.which("taskset"):
        raise SystemExit("taskset is needed (util-linux)")
    ensure_node_modules()
    limit = harness.raise_open_files(2 * args.idle_connections + 1024)
    started = time.monotonic()
    processes = Processes()
    loads: dict[tuple[str, str], list[LoadResult]] = {}
    idles: dict[str, list[IdleResult]] = {}
    shakes: dict[str, list[HandshakeResult]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp, harness.terminate_on_sigterm():
        try:
            bench = Bench(processes, Path(tmp), args.compare)
            out(f"relays pinned to core {PROXY_CORE}; Node ws load generator and echo backend on core {LOAD_CORE}; "
                f"{args.duration:g}s per load run after {WARMUP_SECONDS:g}s warm-up, {args.rounds} interleaved rounds; "
                f"open files limit {limit}")
            relays = _start_relays(bench, args.relays, skipped)
            fresh = [name for name in relays if name != "direct"]
            for round_number in range(1, args.rounds + 1):
                if not args.skip_load:
                    _load_round(bench, relays, round_number, args.duration, loads)
                if not args.skip_idle:
                    _idle_round(bench, fresh, round_number, args.idle_connections, idles)
                if args.handshakes:
                    _handshake_round(bench, fresh, round_number, args.handshakes, shakes)
        finally:
            processes.stop_all()
    if loads:
        report_load([median_load(results) for results in loads.values()])
    if idles:
        report_idle([median_idle(results) for results in idles.values()], args.idle_connections)
    if shakes:
        report_handshakes([HandshakeResult(r[0].relay, middle([x.per_second for x in r]), middle([x.cpu_us for x in r]))
                           for r in shakes.values()], args.handshakes)
    for name, reason in skipped.items():
        out(f"\n{name} skipped: {reason}")
    out(f"\ntotal {time.monotonic() - started:.0f}s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("python bench/ws_bench.py " + " ".join(sys.argv[1:]) + "\n" + "\n".join(out.lines) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


def _start_relays(bench: Bench, names: list[str], skipped: dict[str, str]) -> dict[str, Relay]:
    """The relays that start, by name; why the others did not goes to ``skipped``."""
    relays: dict[str, Relay] = {}
    for name in names:
        try:
            relays[name] = bench.start_relay(name)
        except RelayUnavailable as error:
            skipped[name] = str(error).strip()
            out(f"  {name}: unavailable, skipped: {skipped[name].splitlines()[0]}")
    for relay in relays.values():
        if relay.process is not None:
            out(f"  {relay.name}: pid {relay.process.pid}, open files limit "
                f"{open_files_limit(relay.process.pid)}")
    return relays


def _load_round(bench: Bench, relays: dict[str, Relay], round_number: int, duration: float,
                loads: dict[tuple[str, str], list[LoadResult]]) -> None:
    """Each load on each relay once; the results go to ``loads``."""
    for test, size in LOADS:
        for relay in list(relays.values()):
            try:
                r = bench.load(relay, LoadShape(CLIENTS, IN_FLIGHT, size, duration), test=test)
            except RuntimeError as error:
                out(f"  round {round_number} {relay.name:16} {test:7} failed: {error}")
                continue
            loads.setdefault((relay.name, test), []).append(r)
            cpu = f"{r.cpu_us:7.1f} CPU us/msg" if r.cpu_us is not None else f"{'-':>7} CPU us/msg"
            busy = f"relay {r.relay_busy:4.0%}" if r.relay_busy is not None else "relay    -"
            out(f"  round {round_number} {relay.name:16} {test:7} {r.rate:9.0f} msg/s  p50 {r.p50_ms:7.2f} "
                f"p99 {r.p99_ms:7.2f} ms  {cpu}  {busy}, load core {r.load_busy:4.0%}")


def _idle_round(bench: Bench, names: list[str], round_number: int, connections: int,
                idles: dict[str, list[IdleResult]]) -> None:
    """The idle measure on each relay once; the results go to ``idles``."""
    for name in names:
        try:
            i = bench.idle(name, connections)
        except (RuntimeError, RelayUnavailable) as error:
            out(f"  round {round_number} {name:12} idle    failed: {str(error).strip()}")
            continue
        idles.setdefault(name, []).append(i)
        out(f"  round {round_number} {name:12} idle    {i.kb_per_conn:7.2f} KB/conn  RSS "
            f"{i.rss_before_mib:.1f} -> {i.rss_after_mib:.1f} MiB, opened in {i.open_seconds:.2f}s, "
            f"{i.fds} relay fds")


def _handshake_round(bench: Bench, names: list[str], round_number: int, count: int,
                     shakes: dict[str, list[HandshakeResult]]) -> None:
    """The handshake measure on each relay once; the results go to ``shakes``."""
    for name in names:
        try:
            h = bench.handshakes(name, count)
        except (RuntimeError, RelayUnavailable) as error:
            out(f"  round {round_number} {name:12} handshakes failed: {str(error).strip()}")
            continue
        shakes.setdefault(name, []).append(h)
        out(f"  round {round_number} {name:12} handshakes {h.per_second:7.0f}/s  {h.cpu_us:6.0f} CPU us/handshake")


if __name__ == "__main__":
    main()
