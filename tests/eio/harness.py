"""Twisted helpers that run real python-socketio servers and clients as subprocesses.

``start_server(testcase, name)`` spawns ``tests.eio.server`` and fires with its port; the
process is stopped (SIGTERM, then SIGKILL after a grace period) and reaped in the test's
cleanup (``spawn_server`` gives the process too, to kill it). ``run_client(url, count)``
spawns ``tests.eio.client`` and fires with its JSON report once the process has ended;
``spawn_reconnecting_client(testcase, url, *mode)`` spawns ``tests.eio.reconnect`` and gives its
lines as they come, ``spawn_emitter`` the same for ``tests.eio.emitter`` (``spawn_node_emitter``: its Socket.IO JavaScript twin). Nothing blocks the reactor and nothing sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, reactor
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial import unittest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_GUARD = 45.0  # seconds for a server to print its port: a guard (past 15 s on a loaded 2-core machine)
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
CLIENT_GUARD = 30.0  # the client bounds itself to ~20 s; this is a backstop


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _spawn(protocol: ProcessProtocol, module: str, *args: str, **env: str) -> IProcessTransport:
    argv = [sys.executable, "-m", module, *args]
    return reactor.spawnProcess(protocol, sys.executable, argv, env=_env(**env), path=str(REPO_ROOT))


class _Child(ProcessProtocol):
    """Collects a child's output and says when it has ended (exited and pipes closed)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.stdout = b""
        self.stderr = b""
        self.reason: Failure | None = None  # ProcessDone or ProcessTerminated, once ended
        self._waiters: list[defer.Deferred[None]] = []
        self._kill: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        log.msg(f"[{self.label} stderr] {data.decode(errors='replace').rstrip()}")

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def when_ended(self) -> defer.Deferred[None]:
        """Fires once the child has exited and its pipes are closed."""
        if self.reason is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def stop(self, grace: float = STOP_GRACE) -> defer.Deferred[None]:
        """SIGTERM now, SIGKILL after ``grace`` seconds; fires once the child has ended."""
        if self.reason is None and self._kill is None:
            self._signal("TERM")
            self._kill = reactor.callLater(grace, self._signal, "KILL")
        return self.when_ended()

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except error.ProcessExitedAlready:
            pass


class _Server(_Child):
    """Fires ``port`` with the number from the child's ``PORT <n>`` line."""

    def __init__(self, name: str) -> None:
        super().__init__(f"eio server {name}")
        self.port: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        if self.port.called:
            return
        for line in self.stdout.split(b"\n")[:-1]:  # complete lines only
            if line.startswith(b"PORT "):
                self.port.callback(int(line.split()[1]))
                return

    def processEnded(self, reason: Failure) -> None:
        if not self.port.called:
            self.port.errback(
                RuntimeError(f"{self.label} ended before listening: {self.stderr.decode(errors='replace')}")
            )
        super().processEnded(reason)


class _Lines(_Child):
    """Hands each complete line of the child's output to whoever waits for the next one."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.lines: list[str] = []
        self._taken = 0
        self._next: list[defer.Deferred[str]] = []

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        *complete, _ = self.stdout.decode(errors="replace").split("\n")
        for line in complete[len(self.lines):]:
            self.lines.append(line)
            if self._next:
                self._next.pop(0).callback(line)

    def next_line(self, guard: float = CLIENT_GUARD) -> defer.Deferred[str]:
        """Fires with the child's next line not yet taken."""
        taken, self._taken = self._taken, self._taken + 1
        if taken < len(self.lines):
            return defer.succeed(self.lines[taken])
        d: defer.Deferred[str] = defer.Deferred()
        self._next.append(d)
        return d.addTimeout(guard, reactor)


def spawn_server(testcase: unittest.TestCase, name: str, **env: str) -> _Server:
    """Spawn ``python -m tests.eio.server NAME`` (``env`` added to its environment); its ``port`` fires with the
    port. Stopped in cleanup."""
    proto = _Server(name)
    _spawn(proto, "tests.eio.server", name, **env)
    testcase.addCleanup(proto.stop)
    proto.port.addTimeout(START_GUARD, reactor)
    return proto


def start_server(testcase: unittest.TestCase, name: str) -> defer.Deferred[int]:
    """Spawn ``python -m tests.eio.server NAME``; fires with its port. Stopped in cleanup."""
    return spawn_server(testcase, name).port


def spawn_reconnecting_client(testcase: unittest.TestCase, url: str, *args: str) -> _Lines:
    """Spawn ``python -m tests.eio.reconnect URL [polling|polling-idle]``; read its lines with ``next_line()``. Stopped in
    cleanup."""
    proto = _Lines("eio reconnecting client")
    _spawn(proto, "tests.eio.reconnect", url, *args)
    testcase.addCleanup(proto.stop, 1.0)
    return proto


def spawn_emitter(testcase: unittest.TestCase, url: str, *args: str) -> _Lines:
    """Spawn ``python -m tests.eio.emitter URL [ARGS]``; read its lines with ``next_line()``. Stopped in cleanup."""
    proto = _Lines("eio emitter")
    _spawn(proto, "tests.eio.emitter", url, *args)
    testcase.addCleanup(proto.stop, 1.0)
    return proto


def spawn_node_emitter(testcase: unittest.TestCase, url: str, *args: str) -> _Lines:
    """Spawn ``node tests/interop/socketio_client.js URL [ARGS]`` (the Socket.IO JavaScript client, with the lines of
    ``tests.eio.emitter``); skips the test without node or ``npm ci --prefix tests/interop``. Stopped in cleanup."""
    node = shutil.which("node")
    script = REPO_ROOT / "tests" / "interop" / "socketio_client.js"
    if node is None or not (script.parent / "node_modules" / "socket.io-client").is_dir():
        raise unittest.SkipTest("no node, or socket.io-client not installed (npm ci --prefix tests/interop)")
    proto = _Lines("socket.io-client emitter")
    reactor.spawnProcess(proto, node, [node, str(script), url, *args], env=_env(), path=str(REPO_ROOT))
    testcase.addCleanup(proto.stop, 1.0)
    return proto


def run_client(url: str, count: int) -> defer.Deferred[dict[str, Any]]:
    """Spawn ``python -m tests.eio.client URL COUNT``; fires with its JSON report after it ended."""
    proto = _Child("eio client")
    _spawn(proto, "tests.eio.client", url, str(count))
    guard = reactor.callLater(CLIENT_GUARD, proto.stop, 1.0)

    def parse(_: None) -> dict[str, Any]:
        if guard.active():
            guard.cancel()
        lines = [line for line in proto.stdout.splitlines() if line.strip()]
        if not lines:
            raise RuntimeError(f"eio client printed nothing; stderr: {proto.stderr.decode(errors='replace')}")
        report: dict[str, Any] = json.loads(lines[-1])
        return report

    return proto.when_ended().addCallback(parse)


def spawn_node_many(testcase: unittest.TestCase, url: str, count: int) -> defer.Deferred[list[dict[str, Any]]]:
    """Run ``node tests/interop/socketio_many.js URL COUNT`` (COUNT Socket.IO JavaScript clients, each asking
    ``whoami`` over polling and after its upgrade); fires with its JSON report. Skips without node or
    ``npm ci --prefix tests/interop``."""
    node = shutil.which("node")
    script = REPO_ROOT / "tests" / "interop" / "socketio_many.js"
    if node is None or not (script.parent / "node_modules" / "socket.io-client").is_dir():
        raise unittest.SkipTest("no node, or socket.io-client not installed (npm ci --prefix tests/interop)")
    proto = _Child("socket.io-client many")
    reactor.spawnProcess(proto, node, [node, str(script), url, str(count)], env=_env(), path=str(REPO_ROOT))
    guard = reactor.callLater(CLIENT_GUARD, proto.stop, 1.0)
    testcase.addCleanup(proto.stop, 1.0)

    def parse(_: None) -> list[dict[str, Any]]:
        if guard.active():
            guard.cancel()
        lines = [line for line in proto.stdout.splitlines() if line.strip()]
        if not lines:
            raise RuntimeError(f"node printed nothing; stderr: {proto.stderr.decode(errors='replace')}")
        report: list[dict[str, Any]] = json.loads(lines[-1])
        return report

    return proto.when_ended().addCallback(parse)
