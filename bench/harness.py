"""Running and measuring benchmark processes: the helpers bench/ws_bench.py, ws_resume.py and http_bench.py share.

Children in process groups of their own (started, signalled, stopped, checked for strays), ports
(a free one, waiting for one to listen), how to launch twistd and give a child this tree on its
PYTHONPATH, the open-files limit, CPU times from /proc, JSON lines read from a child with a
deadline, and an ``Output`` that prints and keeps lines for a results file.
"""

from __future__ import annotations

import glob
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Output:
    """Prints and keeps every line, for the results file."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self, path: str) -> None:
        """Write every line kept to ``path`` (its directory made if need be), and say where."""
        output = Path(path)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("\n".join(self.lines) + "\n")
        print(f"written to {output}")


# --- processes -----------------------------------------------------------------------------------

class Processes:
    """Children, each in its own process group (session), all killed by ``stop_all``."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.groups: set[int] = set()

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``command`` in a new session, so in a process group of its own."""
        process: subprocess.Popen[bytes] = subprocess.Popen(command, start_new_session=True, **kwargs)
        self.children.append(process)
        self.groups.add(process.pid)
        return process

    def signal(self, process: subprocess.Popen[bytes], sig: int, timeout: float = 10.0) -> None:
        """Send ``sig`` to the process group, wait for the process (SIGKILL it if it lingers), close its pipes."""
        for each in (sig, signal.SIGKILL):
            try:
                os.killpg(process.pid, each)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(process.pid, signal.SIGKILL)  # anything left in the group
        except ProcessLookupError:
            pass
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        if process in self.children:
            self.children.remove(process)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        self.signal(process, signal.SIGTERM, timeout)

    def stop_all(self) -> None:
        for process in list(reversed(self.children)):
            self.stop(process)

    def strays(self) -> list[int]:
        """Process groups we started that still have members (should be none after ``stop_all``)."""
        left = []
        for group in sorted(self.groups):
            try:
                os.killpg(group, 0)
                left.append(group)
            except ProcessLookupError:
                pass
            except PermissionError:
                left.append(group)
        return left


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the children are stopped on the way out."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def twistd_command() -> list[str]:
    """How to run twistd: the script next to this Python when there is one, else through ``-c``."""
    twistd = Path(sys.executable).with_name("twistd")
    if twistd.exists():
        return [str(twistd)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def python_path_env(path: str | Path) -> dict[str, str]:
    """This environment with ``path`` first on PYTHONPATH (for a child that imports rubrisproxy from it)."""
    return dict(os.environ, PYTHONPATH=str(path) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def raise_open_files(needed: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by every child) to at least ``needed`` if allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # only root may raise the hard limit
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# --- ports ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PortWait:
    """How a script waits for a port: polling every ``interval`` seconds, failing with ``error(message)``;
    ``name_command`` starts the message about an exit with the process's command."""

    interval: float = 0.05
    error: Callable[[str], BaseException] = RuntimeError
    name_command: bool = False


def wait_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0, *,
              how: PortWait = PortWait()) -> None:
    """Poll a TCP connect to ``port`` until it succeeds, ``process`` exits or ``timeout`` passes; raises as
    ``how`` says when it does not listen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            who = f"{process.args!r} " if how.name_command else ""
            raise how.error(f"{who}exited with status {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(how.interval)
    raise how.error(f"nothing listening on {port} after {timeout:.0f}s")


# --- measuring -----------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (so fields[11] is utime, fields[12] stime)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = _stat_fields(pid)
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (OSError once it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS


def middle(values: list[float]) -> float:
    """The median (the upper one of an even count)."""
    return sorted(values)[len(values) // 2]


_SPEED_LOOP = """
import sys, time
out = open(sys.argv[1], "w", buffering=1)
while True:
    start = time.thread_time()
    total = 0
    for i in range(20000):
        total += i
    out.write(f"{time.time():.3f} {time.thread_time() - start:.6f}\\n")
    time.sleep(0.25)
"""


class CoreSpeed:
    """How fast a core runs a fixed piece of Python, sampled 4 times a second by a small process pinned to it.

    On a shared virtual machine a core's speed can drop by up to 2x for seconds at a time (its host is busy), and
    every process on it then spends more CPU per request: :meth:`slowdown` says by how much it did during a run,
    as the CPU time of the fixed piece (mean over the run: a run's CPU rises with the time it spent slowed) over
    the fastest seen, so a run's figures can be read
    with that in mind. The probe costs under 1% of the core.
    """

    def __init__(self, processes: Processes, core: str, tmp: str | Path) -> None:
        self._path = Path(tmp) / f"core{core}-speed.txt"
        processes.start(["taskset", "-c", core, sys.executable, "-c", _SPEED_LOOP, str(self._path)])

    def _samples(self) -> list[tuple[float, float]]:
        try:
            lines = self._path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(float(a), float(b)) for a, b in (line.split() for line in lines if line.count(" ") == 1)]

    def slowdown(self, start: float, end: float) -> float:
        """The core's mean time for the fixed piece between the wall-clock times ``start`` and ``end``, over its best."""
        samples = self._samples()
        during = [took for at, took in samples if start <= at <= end]
        if not during:
            return float("nan")
        return sum(during) / len(during) / min(took for _, took in samples)


class JsonLines:
    """JSON objects, one a line, from a child's stdout, each read with a deadline.

    ``name`` says who wrote them in errors, raised as ``error(message)``.
    """

    def __init__(self, process: subprocess.Popen[bytes], name: str,
                 error: Callable[[str], BaseException] = RuntimeError) -> None:
        assert process.stdout is not None
        self.process = process
        self.name = name
        self.error = error
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def ready(self) -> bool:
        """Whether a whole line is buffered."""
        return b"\n" in self.buffer

    def pump(self, wait: float) -> None:
        """Read what the child wrote, waiting at most ``wait`` seconds for it."""
        readable, _, _ = select.select([self.fd], [], [], max(0.0, wait))
        if readable:
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                raise self.error(f"{self.name} ended early (status {self.process.wait(5)})")
            self.buffer += chunk

    def next(self, deadline: float) -> dict[str, Any]:
        """The next JSON object; ``error`` at EOF or when ``deadline`` (monotonic) passes."""
        while not self.ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.error(f"{self.name} timed out")
            self.pump(min(left, 0.5))
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))


def callgrind_total(out: str) -> int:
    """The instructions counted in the callgrind files ``OUT.<pid>`` a run wrote (the process's own: the largest
    total, as a forked child writes a file of its own)."""
    total = 0
    for path in glob.glob(out + ".*"):
        with open(path) as f:
            for line in f:
                match = re.match(r"summary:\s+(\d+)", line) or re.match(r"totals:\s+(\d+)", line)
                if match:
                    total = max(total, int(match.group(1)))
    return total
