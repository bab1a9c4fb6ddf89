"""Mass resume under callgrind: the proxy's instructions per move, a steady figure on a noisy machine.

The scenario of bench/mass_resume.py, smaller (``--connections``, default 1200: 600 moves), with rubrisproxy
under ``valgrind --tool=callgrind`` counting only from the SIGKILL of backend A until the proxy's log says every
session of A resumed on B (plus ``--settle`` seconds). Its instructions over the moves are the cost of one move:
the lost backend leg, the dial, the new leg's handshake, the replay and the log lines. The probes are idle
(one message every 100 s) and nothing pings (client- and backend-ping-interval 0), so what is counted is the moves
(and the reactor's turns meanwhile). ``--tree DIR``
(repeatable) measures another checkout in the same command; figures are ratios to the first tree.

``--cprofile PATH`` runs the proxy without valgrind, cProfiled over the same window, and prints where the time
went per move; ``--py-spy PATH`` has py-spy sample it instead (raw stacks).

    python bench/mass_resume_instructions.py [--connections 1200] [--tree DIR ...] [--output PATH]
                                             [--cprofile PATH [--top 40]]
"""

from __future__ import annotations

import argparse
import glob
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import Output, Processes
from mass_resume import HERE, RESUMED, ROOT, Run, ScenarioError

PROFILED = HERE / "mass_resume" / "profiled_twistd.py"
PROFILE_SIGNAL = signal.SIGRTMIN + 2

out = Output()
RESULTS = ROOT / "bench" / "results" / "mass_resume_instructions.txt"


def instructions(prefix: str) -> int:
    """The instructions counted in the callgrind dumps named ``prefix``* (each file's ``totals:``)."""
    total = 0
    for path in glob.glob(prefix + "*"):
        text = Path(path).read_text(errors="replace")
        found = re.search(r"^totals: (\d+)", text, re.M)
        total += int(found.group(1)) if found else 0
    return total


def measure(args: argparse.Namespace, tree: str, processes: Processes, tmp: Path) -> tuple[int, int]:
    """Instructions from the kill until every moved session resumed (0 with ``--cprofile``), and the moves."""
    run = Run(args, tree, processes, tmp)
    dumps = str(tmp / "callgrind.out")
    run.start_backend("A")
    run.start_backend("B")
    config = tmp / "quiet.toml"  # no pings: their count over the window would follow how long it lasts
    config.write_text("[websocket]\nclient-ping-interval = 0\nbackend-ping-interval = 0\n")
    options = ("--config", str(config))
    spy = None
    if args.py_spy:
        proxy = run.start_proxy(options=options)
        start, stop = ["true"], ["true"]
    elif args.cprofile:
        proxy = run.start_proxy((sys.executable, str(PROFILED), str(Path(args.cprofile).resolve())), options)
        start = stop = ["kill", f"-{int(PROFILE_SIGNAL)}", str(proxy.pid)]
    else:
        proxy = run.start_proxy(("valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 f"--callgrind-out-file={dumps}.%p"), options)
        start, stop = (["callgrind_control", "-i", flag, str(proxy.pid)] for flag in ("on", "off"))
    clients, lines, opened = run.open_clients("--concurrency", "20", "--open-timeout", "600")
    if int(opened["opened"]) != args.connections:
        raise ScenarioError(f"only {opened['opened']} connections opened")
    moving = args.connections // 2
    subprocess.run(start, check=True, capture_output=True)
    if args.py_spy:
        spy = processes.start([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proxy.pid),
                               "--nonblocking", "--format", "raw", "--rate", "1000", "--output", args.py_spy],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached
    processes.signal(run.backends.pop("A"), signal.SIGKILL, timeout=5.0)
    deadline = time.monotonic() + 600
    resumed = 0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        text = run.log.read_text(errors="replace") if run.log.exists() else ""
        resumed = len(RESUMED.findall(text))
        if resumed >= moving or "could not move" in text:
            break
    time.sleep(args.settle)
    subprocess.run(stop, check=True, capture_output=True)
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded
        spy.wait(30)
    if resumed < moving:
        raise ScenarioError(f"{resumed} of {moving} sessions resumed")
    time.sleep(1.0)  # the stats written
    if args.keep_log:
        shutil.copyfile(run.log, args.keep_log)
    processes.signal(proxy, signal.SIGTERM, timeout=120.0)  # callgrind writes its counts as the proxy exits
    del clients, lines
    return (0 if args.cprofile or args.py_spy else instructions(dumps)), resumed


def profile_summary(path: str, moves: int, top: int) -> None:
    """The functions that took the most time (cumulative, then own), per move."""
    stats = pstats.Stats(path)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _, _, own, _, _ in entries.values())
    out(f"cProfile: {total * 1e3:.0f} ms in the profiled window, {total * 1e6 / moves:.0f} us per move "
        "(inflated by the profiler); per move:")
    for title, key in (("cumulative", 3), ("own", 2)):
        out(f"  by {title} time:")
        ranked = sorted(entries.items(), key=lambda item: item[1][key], reverse=True)[:top]
        for (file, line, name), (_, calls, own, cumulative, _) in ranked:
            where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
            out(f"    {cumulative * 1e6 / moves:7.1f} cum {own * 1e6 / moves:6.1f} own us {calls / moves:6.2f} calls  "
                f"{name} ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1200)
    parser.add_argument("--settle", type=float, default=0.0, help="seconds counted after the last move")
    parser.add_argument("--tree", action="append", default=[], help="checkout to measure (repeatable; default: this)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--cprofile", metavar="PATH",
                        help="no valgrind: cProfile the proxy over the same window, stats to PATH, a summary printed")
    parser.add_argument("--py-spy", metavar="PATH", help="no valgrind: py-spy records the proxy over the same window "
                        "(raw stacks to PATH)")
    parser.add_argument("--keep-log", metavar="PATH", help="copy the proxy's log here")
    parser.add_argument("--top", type=int, default=40, help="functions in the --cprofile summary")
    args = parser.parse_args()
    args.trees = [str(Path(tree).resolve()) for tree in args.tree] or [str(ROOT)]
    args.sample, args.interval_ms = 2, 100_000.0
    for tool in ("node", *(() if args.cprofile or args.py_spy else ("valgrind", "callgrind_control"))):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    harness.raise_open_files(2 * args.connections + 2048)
    out(f"python bench/mass_resume_instructions.py {' '.join(sys.argv[1:])}".rstrip())
    out(f"{args.connections} session-mode WebSockets over backends A and B, SIGKILL A; instructions of the proxy "
        f"(callgrind) from the kill until its {args.connections // 2} sessions resumed; load average "
        f"{os.getloadavg()[0]:.2f}")
    processes = Processes()
    first = None
    with harness.terminate_on_sigterm():
        try:
            for tree in args.trees:
                with tempfile.TemporaryDirectory(prefix="mass_resume_instructions.") as tmp:
                    try:
                        total, moves = measure(args, tree, processes, Path(tmp))
                    except ScenarioError as error:
                        out(f"{tree}: failed: {error}")
                        continue
                    finally:
                        processes.stop_all()
                if args.py_spy:
                    out(f"{tree}: {moves} moves, py-spy's samples in {args.py_spy}")
                    continue
                if args.cprofile:
                    out(f"{tree}: {moves} moves")
                    profile_summary(args.cprofile, moves, args.top)
                    continue
                per_move = total / moves
                first = first or per_move
                out(f"{tree}: {moves} moves, {total / 1e6:.1f} M instructions, {per_move / 1e3:.0f} k per move"
                    + (f" ({per_move / first:.2f}x the first)" if per_move != first else ""))
        finally:
            processes.stop_all()
    out.save(args.output)


if __name__ == "__main__":
    main()
