"""Child processes for tests, each in its own process group, and a headless Chromium driven over DevTools."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IProcessTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from .helpers import ProxyTestCase

STOP_GUARD = 10.0  # seconds for a killed process group to be reaped
DEVTOOLS_GUARD = 20.0  # seconds for Chromium to open its DevTools endpoint

# Runs in the child before the real program: a process group of its own, so cleanup can kill all of it.
_NEW_GROUP = "import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


def find_chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Child(protocol.ProcessProtocol):
    """A child process in its own process group: collects its output and says when it has ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.out = b""
        self.err = b""
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.has_ended = False
        self._waiters: list[Deferred[Child]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.exit_signal = getattr(reason.value, "signal", None)
        self.has_ended = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    def ended(self) -> Deferred[Child]:
        """A new Deferred that fires with this child once it has exited and its pipes are closed."""
        if self.has_ended:
            return defer.succeed(self)
        d: Deferred[Child] = Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        return d

    def describe(self) -> str:
        """What the child said, for a failure message."""
        return (
            f"{self.name}: exit code {self.exit_code}, signal {self.exit_signal}\n"
            f"stdout: {self.out[-3000:].decode(errors='replace')}\nstderr: {self.err[-3000:].decode(errors='replace')}"
        )

    def kill(self) -> None:
        """SIGKILL the whole process group (and the process itself, should it not have made its group yet)."""
        transport = cast(IProcessTransport, self.transport)
        pid = transport.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self.has_ended:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self) -> None:
        """Kill what is left of the group and wait until the process is reaped (bounded)."""
        if not self.has_ended:
            self.kill()
            await self.ended().addTimeout(STOP_GUARD, reactor)
        else:
            self.kill()  # helpers (Chromium's, npm's) that outlived their parent


def spawn(case: ProxyTestCase, name: str, argv: list[str], env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Child:
    """Start ``argv`` in a new process group; the test's cleanup kills the group and reaps it."""
    child = Child(name)
    wrapped = [sys.executable, "-c", _NEW_GROUP, *argv]
    reactor.spawnProcess(child, sys.executable, wrapped, env=env if env is not None else dict(os.environ),
                         path=str(cwd) if cwd else None)
    case.addCleanup(lambda: Deferred.fromCoroutine(child.stop()))
    return child


async def wait_exit(case: ProxyTestCase, child: Child, guard: float) -> Child:
    """Wait for ``child`` to exit on its own, failing the test clearly after ``guard`` seconds."""
    try:
        return await child.ended().addTimeout(guard, reactor)
    except defer.TimeoutError:
        case.fail(f"{child.name} did not finish within {guard:.0f} s\n{child.describe()}")
        raise  # not reached




def chromium_argv(case: ProxyTestCase, *extra: str) -> tuple[list[str], dict[str, str]]:
    """Headless Chromium's command line and environment, with a fresh profile; skips without Chromium."""
    binary = find_chromium()
    if binary is None:
        raise SkipTest("no Chromium binary (apt-get install chromium)")
    home = Path(case.mktemp()).resolve()
    (home / "profile").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"))
    argv = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
        f"--user-data-dir={home / 'profile'}", *extra,
    ]
    return argv, env


class DevTools(WebSocketClientProtocol):
    """The Chrome DevTools Protocol over Autobahn: one page, commands answered by id."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[DevTools] = Deferred()
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._next = 0
        self.session: str | None = None

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        waiting = self._pending.pop(message.get("id", -1), None)
        if waiting is None:
            return  # an event
        if "error" in message:
            waiting.errback(Exception(f"DevTools: {message['error']}"))
        else:
            waiting.callback(message.get("result", {}))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(Exception(f"DevTools connection closed: {reason}"))

    def command(self, method: str, **params: Any) -> Deferred[dict[str, Any]]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        waiting: Deferred[dict[str, Any]] = Deferred()
        self._pending[self._next] = waiting
        self.sendMessage(json.dumps(message).encode())
        return waiting.addTimeout(DEVTOOLS_GUARD, reactor)

    async def open_page(self, url: str) -> None:
        """A new tab on ``url``; later commands go to it."""
        target = await self.command("Target.createTarget", url=url)
        attached = await self.command("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        self.session = attached["sessionId"]

    async def evaluate(self, expression: str) -> Any:
        """The value of a script expression in the page (promises awaited)."""
        answer = await self.command("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise Exception(f"page script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def until(self, expression: str, guard: float) -> Any:
        """Evaluate ``expression`` every 50 ms until it is truthy or ``guard`` seconds have passed; its last value."""
        value = None
        for _ in range(int(guard / 0.05)):
            value = await self.evaluate(expression)
            if value:
                break
            await deferLater(0.05)
        return value


async def start_devtools(case: ProxyTestCase, *flags: str) -> DevTools:
    """A headless Chromium (with more ``flags``), and a DevTools connection to it; both end with the test."""
    argv, env = chromium_argv(case, "--remote-debugging-port=0", *flags, "about:blank")
    browser = spawn(case, "chromium", argv, env=env)
    found = None
    for _ in range(int(DEVTOOLS_GUARD / 0.05)):
        found = re.search(rb"DevTools listening on (ws://[^\s]+)", browser.err)
        if found or browser.has_ended:
            break
        await deferLater(0.05)
    if found is None:
        case.fail(f"Chromium opened no DevTools endpoint\n{browser.describe()}")
    url = found.group(1).decode()
    host, port = re.match(r"ws://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    factory = WebSocketClientFactory(url)
    factory.setProtocolOptions(maxMessagePayloadSize=64 << 20, autoPingInterval=0)
    factory.noisy = False
    client = DevTools()
    client.factory = factory
    await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), client)
    case.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
    await client.opened.addTimeout(DEVTOOLS_GUARD, reactor)
    return client


def deferLater(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
