"""Where an idle WebSocket's memory goes in rubrisproxy: a heap breakdown per connection, by type and by allocating line.

Starts the Node ``ws`` echo backend and a relay (``twistd rubrisproxy --websocket MODE``, as ws_bench.py runs it),
with a ``sitecustomize`` hook that answers SIGRTMIN+5 with a heap report (tracemalloc, gc objects by type, pymalloc
and malloc totals, RSS). It takes one report before and one after opening N idle WebSockets through it (ws_bench's
Node load generator), and prints the growth divided by N:

  - RSS, pymalloc's (arenas in use, blocks in use) and glibc malloc's (in use, free in its arenas);
  - objects per connection by type (count, and bytes by ``sys.getsizeof``, dicts' own tables included);
  - with --trace, bytes per connection by allocating line (tracemalloc, from process start: slow, for finding owners).

    python bench/idle_heap.py [--mode session|tunnel] [--connections 2000] [--trace] [--top 40] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import harness
from harness import Processes, free_port, wait_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

HOOK = r'''
import ctypes, gc, json, os, signal, sys, tracemalloc

_first = []

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

def _malloc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
        return {"malloc_used": info.uordblks + info.hblkhd, "malloc_free": info.fordblks}
    except Exception:
        return {}

def _pymalloc():
    stats = {}
    try:
        import io, contextlib
        err = io.StringIO()
        fd = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        sys._debugmallocstats()
        os.dup2(fd, 2)
        os.close(w)
        os.close(fd)
        text = os.read(r, 1 << 20).decode()
        os.close(r)
        for line in text.splitlines():
            if line.startswith("# arenas highwater mark") or line.startswith("# arenas allocated current"):
                stats[line.split("=")[0].strip("# ").strip()] = int(line.split("=")[1].replace(",", ""))
            elif "bytes in allocated blocks" in line or "bytes in available blocks" in line:
                stats[line.split("=")[0].strip("# ").strip()] = int(line.split("=")[1].replace(",", ""))
    except Exception as e:
        stats["error"] = str(e)
    return stats

def _rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0

def _report(signum, frame):
    gc.collect()
    report = {"rss": _rss(), **_malloc(), **_pymalloc()}
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        lines, owners = {}, {}
        for trace in snap.traces:
            frames = trace.traceback
            where = f"{frames[-1].filename}:{frames[-1].lineno}"  # frames run from the oldest
            entry = lines.setdefault(where, [0, 0])
            entry[0] += 1
            entry[1] += trace.size
            ours = next((f for f in reversed(frames) if "rubrisproxy" in f.filename), None)
            owner = f"{ours.filename.split('rubrisproxy/')[-1]}:{ours.lineno}" if ours else "-"
            entry = owners.setdefault(f"{owner} <- {where}", [0, 0])
            entry[0] += 1
            entry[1] += trace.size
        report["lines"] = lines
        report["owners"] = owners
        del snap
    types = {}
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if type(obj).__name__ == "method":
            name = f"method {type(obj.__self__).__qualname__}.{obj.__func__.__name__}"
        entry = types.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    report["types"] = types
    samples = {}
    wanted = ("Server", "Client", "ClientLeg", "BackendLeg", "ClientConnection", "OriginConnection", "RequestHead",
              "Exchange", "Tunnel", "WebSocketSession", "DelayedCall", "Connector")
    for obj in reversed(gc.get_objects()):
        name = type(obj).__name__
        if name in wanted and name not in samples and not isinstance(obj, type):
            d = getattr(obj, "__dict__", None)
            if d is not None:
                samples[name] = [sys.getsizeof(d), {k: [type(v).__name__, sys.getsizeof(v)] for k, v in d.items()}]
            else:
                slots = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
                samples[name] = [0, {k: [type(getattr(obj, k, None)).__name__, sys.getsizeof(getattr(obj, k, None))]
                                     for k in slots if isinstance(k, str)}]
    report["samples"] = samples
    path = os.environ["IDLE_HEAP_OUT"] + f".{len(_first)}"
    with open(path + ".part", "w") as f:
        json.dump(report, f)
    os.rename(path + ".part", path)
    _first.append(1)

signal.signal(signal.SIGRTMIN + 5, _report)
'''


def report(root: Path, mode: str, connections: int, trace: bool, top: int) -> None:
    processes = Processes()
    harness.raise_open_files(2 * connections + 1024)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "hook").mkdir()
        (tmp / "hook" / "sitecustomize.py").write_text(HOOK)
        out = tmp / "heap"
        try:
            echo_port, port = free_port(), free_port()
            processes.start(["node", str(HERE / "ws" / "echo.js"), str(echo_port)], stdout=subprocess.DEVNULL)
            env = harness.python_path_env(f"{tmp / 'hook'}{os.pathsep}{root}")
            env["IDLE_HEAP_OUT"] = str(out)
            if trace:
                env["PYTHONTRACEMALLOC"] = "8"
            relay = processes.start(harness.twistd_command() + [
                "-n", "--pidfile=", "--logfile", str(tmp / "relay.log"), "rubrisproxy",
                "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=1024", "--backend", f"127.0.0.1:{echo_port}",
                "--access-log", "off", "--websocket", mode], env=env, stdout=subprocess.DEVNULL,
                stderr=open(tmp / "relay.err", "wb"))
            wait_port(echo_port, timeout=60)
            wait_port(port, relay, timeout=120)
            # one WebSocket through it first, so what the first one makes once is in the baseline
            warm = processes.start(["node", str(HERE / "ws" / "loadgen.js"), f"ws://127.0.0.1:{port}/", "20", "4",
                                    "32", "0.5", "--warmup", "0.2"], stdout=subprocess.DEVNULL)
            warm.wait(30)
            time.sleep(0.5)
            before = _take(relay, out, 0)
            loadgen = processes.start(["node", str(HERE / "ws" / "loadgen.js"), f"ws://127.0.0.1:{port}/",
                                       str(connections), "0", "0", "300"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE)
            assert loadgen.stdout is not None
            for line in loadgen.stdout:
                event = json.loads(line)
                if event.get("event") == "open":
                    if event["opened"] != connections:
                        raise SystemExit(f"opened {event['opened']} of {connections}")
                    break
            time.sleep(3.0)
            after = _take(relay, out, 1)
        except BaseException:
            print((tmp / "relay.err").read_text()[-3000:])
            raise
        finally:
            processes.stop_all()
    _print(before, after, connections, top, mode)


def _take(relay: subprocess.Popen[bytes], out: Path, index: int) -> dict:
    relay.send_signal(signal.SIGRTMIN + 5)
    path = Path(f"{out}.{index}")
    for _ in range(1500):
        time.sleep(0.2)
        if path.exists():
            return json.loads(path.read_text())
    raise SystemExit(f"no heap report {index} from the relay")


def _growth(before: dict, after: dict, n: int) -> list[tuple[str, float, float]]:
    """(name, count, bytes) per connection for each [count, bytes] entry of ``after``, largest first."""
    rows = []
    for name, (count, size) in after.items():
        b = before.get(name, [0, 0])
        rows.append((name, (count - b[0]) / n, (size - b[1]) / n))
    rows.sort(key=lambda r: -r[2])
    return rows


def _print_rows(title: str, rows: list[tuple[str, float, float]], top: int) -> None:
    print(f"{title}: {sum(r[2] for r in rows):.0f} bytes/conn")
    for name, count, size in rows[:top]:
        print(f"  {size:8.0f} B {count:6.2f}x  {name.replace(str(ROOT), '')}")


def _print(before: dict, after: dict, n: int, top: int, mode: str) -> None:
    print(f"{mode}: {n} idle WebSockets; growth per connection (bytes)")
    for key in ("rss", "malloc_used", "malloc_free", "arenas allocated current", "bytes in allocated blocks",
                "bytes in available blocks"):
        if key in after and key in before:
            print(f"  {key:28} {(after[key] - before[key]) / n:9.0f}")
    _print_rows("gc-tracked objects by type (sys.getsizeof, shallow)", _growth(before["types"], after["types"], n), top)
    for name, (size, attrs) in after.get("samples", {}).items():
        print(f"sample {name}: __dict__ {size} B, {len(attrs)} keys: "
              + ", ".join(f"{k}={t}:{z}" for k, (t, z) in attrs.items()))
    if "lines" in after:
        _print_rows("tracemalloc by allocating line", _growth(before.get("lines", {}), after["lines"], n), top)
        _print_rows("tracemalloc by innermost rubrisproxy frame <- allocating line",
                    _growth(before.get("owners", {}), after["owners"], n), top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("session", "tunnel"), default="session")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc from process start (slow)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose rubrisproxy runs")
    args = parser.parse_args()
    report(Path(args.root), args.mode, args.connections, args.trace, args.top)


if __name__ == "__main__":
    main()
