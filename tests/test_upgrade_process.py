"""Live upgrade with real processes: ``twistd rubrisproxy`` from a configuration file, upgraded by ``rubrisproxy ctl
upgrade`` and by ``SIGUSR2`` while curl holds a keep-alive connection and a ``websockets`` client (a library
nobody here wrote) a tunnel-mode WebSocket; and a new process that fails, leaving the old one serving."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys

from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue

from .helpers import ProxyTestCase
from .test_plugin import ROOT, Twistd
from .test_workers import Named, WorkersTestCase, free_port
from .wsecho import EchoBackendFactory, listen_echo_backend

NUMBERED = os.path.join(ROOT, "tests", "interop", "websockets_numbered.py")
CURL = shutil.which("curl")


class Exiting(Twistd):
    """A twistd whose exit is seen as it happens (its output pipes stay open while the new process it started,
    which inherited them, runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.exited: defer.Deferred[int] = defer.Deferred()

    def processExited(self, reason) -> None:  # type: ignore[no-untyped-def]
        if not self.exited.called:
            self.exited.callback(reason.value.exitCode)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class UpgradeProcessTests(ProxyTestCase):
    timeout = 120

    def setUp(self) -> None:
        self.named = Named("o")
        self.origin_port = self.start_web_origin(self.named)
        self.echo = EchoBackendFactory()
        listener = listen_echo_backend(self.echo)
        self.addCleanup(listener.stopListening)
        self.ws_port = listener.getHost().port
        self.web_port, self.ws_proxy_port, self.admin_port = free_port(), free_port(), free_port()
        self.config_path = os.path.abspath(self.mktemp())
        self.write_config()
        self.pids: list[int] = []

    def write_config(self, extra: str = "") -> None:
        with open(self.config_path, "w") as f:
            f.write(f"""
[admin]
listen = ["tcp:{self.admin_port}:interface=127.0.0.1"]

[process]
upgrade-deadline = "20s"

[frontends.web]
listen = ["tcp:{self.web_port}:interface=127.0.0.1"]
backend = "web"

[frontends.ws]
listen = ["tcp:{self.ws_proxy_port}:interface=127.0.0.1"]
backend = "ws"

[backends.web]
servers = [{{ name = "o", address = "127.0.0.1:{self.origin_port}" }}]

[backends.ws]
servers = [{{ name = "e", address = "127.0.0.1:{self.ws_port}" }}]
websocket = {{ mode = "tunnel" }}
{extra}""")

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        process = Exiting()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        reactor.spawnProcess(process, sys.executable,
                             [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                              "--pidfile", self.pidfile, "rubrisproxy", "--config", self.config_path],
                             env=env, path=ROOT)
        self.pids.append(process.transport.pid)
        self.addCleanup(self._kill_all)
        yield process.wait_for(rb"frontend ws listening")
        return process

    @property
    def pidfile(self) -> str:
        return os.path.join(os.path.dirname(self.config_path), "twistd.pid")

    @defer.inlineCallbacks
    def _kill_all(self):  # type: ignore[no-untyped-def]
        for pid in self.pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        yield task.deferLater(reactor, 0.3, lambda: None)

    def ctl(self, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return getProcessOutputAndValue(
            sys.executable, ["-m", "rubrisproxy.ctl", "ctl", "--admin", f"http://127.0.0.1:{self.admin_port}", *args],
            env={**os.environ, "PYTHONPATH": ROOT})

    def curl_keep_alive(self, count: int) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """``count`` requests, two a second, on one connection if curl may keep it (it says each request's new
        connections)."""
        assert CURL is not None
        url = f"http://127.0.0.1:{self.web_port}/"
        return getProcessOutputAndValue(CURL, ["-sS", "--rate", "4/s", "-w", "%{http_code} %{num_connects}\\n",
                                               *(["-o", "/dev/null"] * count), *([url] * count)])

    def websocket(self, seconds: float) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return getProcessOutputAndValue(sys.executable, [NUMBERED, f"ws://127.0.0.1:{self.ws_proxy_port}/",
                                                         str(seconds)], env=dict(os.environ))

    @defer.inlineCallbacks
    def upgrade_while_clients_run(self, trigger):  # type: ignore[no-untyped-def]
        if CURL is None:
            raise self.skipTest("curl is not installed") if not os.environ.get("CI") else AssertionError("no curl")
        old = yield self.start()
        old_pid = old.transport.pid
        curl = self.curl_keep_alive(40)  # 10s: the new process takes a few seconds to start
        ws = self.websocket(10)
        yield self.poll(lambda: self.named.seen and self.echo.open, "curl's connection and the WebSocket through it",
                        ticks=3000)  # two processes starting: a guard of 30 s and more
        new_pid = yield trigger(old)
        self.pids.append(new_pid)
        self.assertNotEqual(new_pid, old_pid)
        out, err, code = yield curl
        self.assertEqual(code, 0, err)
        lines = out.decode().split()
        self.assertEqual(lines[0::2], ["200"] * 40, out)
        self.assertEqual(sum(map(int, lines[1::2])), 1, out)  # one TCP connection for all of them
        out, err, code = yield ws
        result = json.loads(out)
        self.assertEqual((code, result["errors"]), (0, []), (out, err))
        self.assertGreater(result["sent"], 100)
        exit_code = yield old.exited
        self.assertEqual(exit_code, 0)
        self.assertFalse(_alive(old_pid))
        self.assertTrue(_alive(new_pid))
        with open(self.pidfile) as f:
            self.assertEqual(int(f.read()), new_pid)
        out, err, code = yield self.ctl("upgrade", "--status")
        self.assertEqual(code, 0, err)
        self.assertIn(f"process {old_pid}: moved 1 http, 1 tunnel; kept 0; closed 0", out.decode())
        return new_pid

    @defer.inlineCallbacks
    def test_ctl_upgrade_keeps_curl_and_a_websocket_client(self):  # type: ignore[no-untyped-def]
        """``ctl upgrade`` answers with the new pid once it listens; curl's keep-alive connection and the
        tunnel-mode WebSocket carry on in the new process, nothing lost, duplicated or reordered; the old exits
        and the pidfile names the new one."""

        @defer.inlineCallbacks
        def trigger(old):  # type: ignore[no-untyped-def]
            out, err, code = yield self.ctl("upgrade")
            self.assertEqual(code, 0, err)
            match = re.search(rb"process (\d+) serves", out)
            assert match is not None, out
            return int(match.group(1))

        yield self.upgrade_while_clients_run(trigger)

    @defer.inlineCallbacks
    def test_sigusr2_upgrades(self):  # type: ignore[no-untyped-def]
        @defer.inlineCallbacks
        def trigger(old):  # type: ignore[no-untyped-def]
            os.kill(old.transport.pid, signal.SIGUSR2)
            match = yield old.wait_for(rb"upgrade: process (\d+) took the listeners")
            return int(match.group(1))

        yield self.upgrade_while_clients_run(trigger)

    @defer.inlineCallbacks
    def test_a_new_process_that_fails_leaves_the_old_serving(self):  # type: ignore[no-untyped-def]
        """The file made invalid before the upgrade: ``ctl upgrade`` fails saying why (the key, as the new process
        said it, whatever the old one's stderr is), non-zero; the old process keeps its listeners, its pidfile and
        its connections."""
        old = yield self.start()
        self.write_config(extra="[nonsense]\n")
        out, err, code = yield self.ctl("upgrade")
        self.assertEqual(code, 1, out)
        self.assertIn(b"502: the new process exited before taking over", err)
        self.assertIn(b"rubrisproxy: configuration error: nonsense", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        out, err, code = yield getProcessOutputAndValue(CURL or "curl", ["-sS", f"http://127.0.0.1:{self.web_port}/"])
        self.assertEqual((code, out), (0, b"o"), err)
        with open(self.pidfile) as f:
            self.assertEqual(int(f.read()), old.transport.pid)
        out, err, code = yield self.ctl("upgrade", "--status")
        self.assertIn(b"last failure: the new process exited", out)
        yield old.wait_for(rb"nonsense")  # the new process said why, where the old one logs


class WorkersUpgradeTests(WorkersTestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_each_worker_is_replaced_in_turn_keeping_a_keep_alive_connection(self):  # type: ignore[no-untyped-def]
        """With two workers, ``ctl upgrade`` replaces each in turn by one from the code installed now, the old
        handing its SO_REUSEPORT listeners and its connections over: curl's keep-alive connection carries on,
        every request answered, and the supervisor keeps its pid."""
        if CURL is None:
            raise self.skipTest("curl is not installed") if not os.environ.get("CI") else AssertionError("no curl")
        named = Named("o")
        process = yield self.start_workers({"o": self.start_web_origin(named)})
        before = set(self.pids)
        url = f"http://127.0.0.1:{self.proxy_port}/"
        curl = getProcessOutputAndValue(CURL, ["-sS", "--rate", "4/s", "-w", "%{http_code} %{num_connects}\\n",
                                               *(["-o", "/dev/null"] * 48), *([url] * 48)])
        yield self.poll(lambda: named.seen, "curl's connection through a worker", ticks=3000)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "rubrisproxy.ctl", "ctl", "--admin", f"http://127.0.0.1:{self.admin_port}", "upgrade"],
            env={**os.environ, "PYTHONPATH": ROOT})
        self.assertEqual(code, 0, err)
        self.assertIn(f"upgraded: supervisor {process.transport.pid} stays; worker 0: pid".encode(), out)
        workers = yield self.workers()
        after = {w["pid"] for w in workers["workers"]}
        self.pids += list(after)
        self.assertFalse(before & after, (before, after))
        self.assertEqual([w["state"] for w in workers["workers"]], ["serving", "serving"])
        out, err, code = yield curl
        self.assertEqual(code, 0, err)
        lines = out.decode().split()
        self.assertEqual(lines[0::2], ["200"] * 48, out)
        self.assertEqual(sum(map(int, lines[1::2])), 1, out)  # one TCP connection throughout
        yield process.wait_for(rb"upgrade: worker 1 replaced")
        yield process.wait_for(rb"upgrade: moved 1 http")  # the connection moved (to one worker's replacement)
        code, body = yield self.admin("upgrade")
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["previous"]["connections"]["moved"], {"http": 1})  # summed over workers
