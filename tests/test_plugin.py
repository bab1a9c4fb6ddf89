"""The twistd plugin, run for real: discovery, --help, bad config, demo mode and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import NoReturn

from twisted.application.service import IServiceMaker
from twisted.internet import defer, protocol, reactor
from twisted.plugin import IPlugin, getPlugins
from twisted.python.failure import Failure
from twisted.trial import unittest

from .helpers import GUARD, ProxyTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]


class Twistd(protocol.ProcessProtocol):
    """A twistd child process whose output is watched for lines."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._waiters: list[tuple[re.Pattern[bytes], defer.Deferred[re.Match[bytes]]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for item in list(self._waiters):
            match = item[0].search(self.output)
            if match:
                self._waiters.remove(item)
                item[1].callback(match)

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        self.signal = reason.value.signal
        self.ended.callback(reason.value.exitCode)

    def wait_for(self, pattern: bytes, guard: float = GUARD) -> defer.Deferred[re.Match[bytes]]:
        """The first match of ``pattern`` in the output (fails after ``guard`` seconds: a hung process)."""
        d: defer.Deferred[re.Match[bytes]] = defer.Deferred()
        self._waiters.append((re.compile(pattern), d))
        self.outReceived(b"")
        return d.addTimeout(guard, reactor).addErrback(self._not_seen, pattern, guard)

    def _not_seen(self, failure: Failure, pattern: bytes, guard: float) -> NoReturn:
        failure.trap(defer.TimeoutError)
        tail = self.output[-3000:].decode(errors="replace")
        raise defer.TimeoutError(f"no {pattern!r} in {guard:g} s; the output ends with:\n{tail}")


def run_twistd(*args: str) -> Twistd:
    process = Twistd()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    reactor.spawnProcess(process, sys.executable, [sys.executable, *TWISTD, "rubrisproxy", *args], env=env, path=ROOT)
    return process


class DiscoveryTests(unittest.TestCase):
    def test_plugin_is_a_service_maker(self):
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("rubrisproxy", makers)
        self.assertTrue(IPlugin.providedBy(makers["rubrisproxy"]))


class ProcessTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_help_lists_every_option(self):
        process = run_twistd("--help")
        code = yield process.ended
        self.assertEqual(code, 0)
        for option in (b"--listen", b"--backend", b"--config", b"--demo", b"--timeout", b"--access-log", b"--access-log-format"):
            self.assertIn(option, process.output)

    @defer.inlineCallbacks
    def test_bad_config_exits_non_zero_naming_the_key(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('[timeouts]\nserver = "forever"\n')
        process = run_twistd("--config", path)
        code = yield process.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"timeouts.server", process.output)

    @defer.inlineCallbacks
    def test_port_in_use_exits_non_zero(self):
        taken = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        process = run_twistd("--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", "127.0.0.1:9")
        code = yield process.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"cannot listen on tcp:%d" % port, process.output)

    @defer.inlineCallbacks
    def test_port_in_use_ends_a_daemon_start_with_its_line(self):
        """Without ``-n``, twistd's parent waits for its daemon to say how its start went: it says the listener's
        line and exits non-zero at once, rather than waiting for ever."""
        taken = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        process = Twistd()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        args = [sys.executable, TWISTD[0], TWISTD[1], "--pidfile", os.path.join(workdir, "twistd.pid"),
                "--logfile", os.path.join(workdir, "twistd.log"), "rubrisproxy",
                "--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", "127.0.0.1:9"]
        reactor.spawnProcess(process, sys.executable, args, env=env, path=workdir)
        self.addCleanup(lambda: process.ended.called or os.kill(process.transport.pid, signal.SIGKILL))
        code = yield process.ended.addTimeout(GUARD, reactor)
        self.assertEqual(code, 1)
        self.assertIn(b"frontend default cannot listen on tcp:%d:interface=127.0.0.1: Address already in use" % port,
                      process.output)
        self.assertNotIn(b"Traceback", process.output)
        self.assertFalse(os.path.exists(os.path.join(workdir, "twistd.pid")))

    @defer.inlineCallbacks
    def test_a_log_file_that_cannot_be_opened_is_one_line(self):
        path = os.path.join(os.path.abspath(self.mktemp()), "missing", "twistd.log")
        process = Twistd()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        args = [sys.executable, *TWISTD, "--logfile", path, "rubrisproxy", "--listen", "tcp:0:interface=127.0.0.1",
                "--backend", "127.0.0.1:9"]
        reactor.spawnProcess(process, sys.executable, args, env=env, path=ROOT)
        code = yield process.ended
        self.assertEqual(code, 1)
        self.assertEqual(process.output.strip().decode(),
                         f"rubrisproxy: cannot open the log file {path}: No such file or directory")

    @defer.inlineCallbacks
    def test_demo_serves_and_sigterm_stops_cleanly(self):
        process = run_twistd("--listen", "tcp:0:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1")
        self.addCleanup(lambda: process.ended.called or os.kill(process.transport.pid, signal.SIGKILL))
        yield process.wait_for(rb"no backend configured")
        match = yield process.wait_for(rb"listening on \S+ \(127\.0\.0\.1:(\d+)\)")
        self.proxy_port = int(match.group(1))
        responses = yield self.request(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
        self.assertEqual(responses[0].status, 200)
        self.assertIn(b"rubrisproxy is running", responses[0].body)
        yield process.wait_for(rb'200 .* ok retries=0 "GET / HTTP/1.1"')
        process.transport.signalProcess("TERM")
        yield process.ended
        # twistd re-raises the terminating signal after a clean shutdown.
        self.assertEqual(process.signal, signal.SIGTERM)
        self.assertIn(b"stopped accepting; draining", process.output)
        self.assertIn(b"Server Shut Down", process.output)
