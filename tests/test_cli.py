"""The command line, run for real: a bad configuration is one line naming the key (no usage text, no
traceback), ``rubrisproxy check`` and ``--version``, and SIGHUP on a proxy started without a file."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from rubrisproxy import __version__
from rubrisproxy.ctl import check

from .helpers import ProxyTestCase
from .test_plugin import ROOT, TWISTD, run_twistd
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

CHILD_GUARD = 30.0  # seconds for a child Python process to end: a guard (past 10 s on a loaded 2-core machine)
SERVERS = b'[backends.app]\nservers = ["127.0.0.1:9"]\n'
LISTEN = b'[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'

#: What an error about the file itself names: the file.
FILE = "{file}"
#: Hostile files, byte for byte, and the key each one's error must name.
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "duration-word": (b'[timeouts]\nserver = "forever"\n', "timeouts.server"),
    "listen-not-a-port": (SERVERS + b'[frontends.web]\nlisten = ["tcp:notaport"]\n', "frontends.web.listen"),
    "listen-unknown-type": (SERVERS + b'[frontends.web]\nlisten = ["tcpx:1"]\n', "frontends.web.listen"),
    "listen-port-too-big": (SERVERS + b'[frontends.web]\nlisten = ["tcp:70000"]\n', "frontends.web.listen"),
    "ssl-key-missing": (SERVERS + b'[frontends.web]\nlisten = ["ssl:0:interface=127.0.0.1:privateKey=/nonexistent/'
                                  b'key.pem:certKey=/nonexistent/cert.pem"]\n', "frontends.web.listen[0].certKey"),
    "admin-not-a-port": (SERVERS + b'[admin]\nlisten = ["tcp:nine:interface=127.0.0.1"]\n', "admin.listen"),
    "access-log-no-directory": (SERVERS + LISTEN + b'[access-log]\npath = "/nonexistent/dir/access.log"\n',
                                "access-log.path"),
    "access-log-a-directory": (SERVERS + LISTEN + b'[access-log]\npath = "/"\n', "access-log.path"),
    "not-utf-8": (b'[timeouts]\nclient = "\xff\xfe30s"\n', FILE),
    "nested-arrays": (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", FILE),
    "nested-tables": (b"a = " + b"{b = " * 5000 + b"1" + b"}" * 5000 + b"\n", FILE),
    "integer-too-long": (b"[limits]\nmax-headers = " + b"9" * 5000 + b"\n", FILE),
    "nan": (b"[timeouts]\nclient = nan\n", "timeouts.client"),
    "inf": (b"[timeouts]\nserver = inf\n", "timeouts.server"),
    "1e300": (b"[timeouts]\ntunnel = 1e300\n", "timeouts.tunnel"),
    "duration-string-huge": (b'[shutdown]\ngrace = "99999999999999999999d"\n', "shutdown.grace"),
    "size-huge": (b"[limits]\nmax-body-size = 9223372036854775807\n", "limits.max-body-size"),
    "size-string-huge": (b'[websocket]\nmax-message-size = "99999999999999999999t"\n', "websocket.max-message-size"),
    "head-size-huge": (b'[limits]\nmax-header-size = "2g"\n', "limits.max-header-size"),
    "count-huge": (b"[backends.app]\nservers = [{ address = \"127.0.0.1:9\", maxconn = 9223372036854775807 }]\n",
                   "backends.app.servers[0].maxconn"),
    "server-port-0": (b'[backends.app]\nservers = ["127.0.0.1:0"]\n', "backends.app.servers[0]"),
    "regex-nested": (SERVERS + b'[[frontends.web.routes]]\npath-regex = "' + b"(" * 3000 + b")" * 3000
                     + b'"\nbackend = "app"\n', "frontends.web.routes[0].path-regex"),
}
#: Those also given to twistd itself (each is a second or so of CPU): one of each way a load can fail.
TWISTD_FILES = ("listen-not-a-port", "ssl-key-missing", "access-log-a-directory", "not-utf-8", "nested-arrays", "1e300")


class Command(protocol.ProcessProtocol):
    """A child process; its stdout and stderr kept apart."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.done = False
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        self.done = True
        if not self.ended.called:  # else it timed out
            self.ended.callback(reason.value.exitCode)


def run(test: unittest.TestCase, *argv: str) -> defer.Deferred[Command]:
    """Run ``python *argv`` from the worktree root (its source tree imported); fire with it once it has ended."""
    command = Command()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    transport = reactor.spawnProcess(command, sys.executable, [sys.executable, *argv], env=env, path=ROOT)
    test.addCleanup(lambda: command.done or transport.signalProcess("KILL"))
    command.ended.addTimeout(CHILD_GUARD, reactor)
    return command.ended.addCallback(lambda code: (setattr(command, "code", code), command)[1])


def twistd(test: unittest.TestCase, *args: str) -> defer.Deferred[Command]:
    return run(test, *TWISTD, "rubrisproxy", *args)


class ConfigErrorTests(unittest.TestCase):
    """``twistd rubrisproxy`` with a bad configuration: one line naming the key, a non-zero exit, nothing else."""

    def write(self, name: str, content: bytes) -> str:
        path = os.path.join(os.path.abspath(self.mktemp()), name + ".toml")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(content)
        return path

    def assertOneLine(self, command: Command, key: str, prefix: str = "rubrisproxy: configuration error: ") -> str:
        self.assertNotEqual(command.code, 0)
        self.assertEqual(command.out, b"")
        lines = command.err.decode("utf-8", "replace").splitlines()
        self.assertEqual(len(lines), 1, command.err)
        self.assertTrue(lines[0].startswith(f"{prefix}{key}: "), lines[0])
        self.assertNotIn("Traceback", lines[0])
        self.assertNotIn(b"Usage:", command.err)
        return lines[0][len(prefix):]

    def check(self, path: str) -> tuple[int, str, str]:
        """``rubrisproxy check PATH``, in this process: its exit status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = check(path)
        return code, out.getvalue(), err.getvalue()

    def test_check_names_the_key_of_every_bad_file(self) -> None:
        for name, (content, key) in BAD_FILES.items():
            path = self.write(name, content)
            key = key.format(file=path)
            code, out, err = self.check(path)
            self.assertEqual((code, out), (1, ""), name)
            self.assertTrue(err.startswith(f"rubrisproxy check: configuration error: {key}: "), err)
            self.assertEqual(len(err.splitlines()), 1, err)

    def test_check_warns_of_a_server_name_that_does_not_resolve(self) -> None:
        """The file is valid (the proxy starts, and marks the server down until the name resolves): a warning, not an
        error. ``.invalid`` never resolves (RFC 2606)."""
        path = self.write("typo", b'[frontends.web]\nlisten = ["tcp:8080"]\nbackend = "app"\n[backends.app]\n'
                                  b'servers = ["no-such-host.invalid:9001", "127.0.0.1:9002", "localhost:9003"]\n')
        code, out, err = self.check(path)
        self.assertEqual((code, out), (0, f"{path}: valid\n"))
        (line,) = err.splitlines()
        self.assertTrue(line.startswith("rubrisproxy check: warning: backends.app.servers: s1 (no-such-host.invalid:9001)"
                                        " does not resolve: "), line)

    @defer.inlineCallbacks
    def test_twistd_says_what_check_says_in_one_line(self):  # type: ignore[no-untyped-def]
        paths = {name: self.write(name, BAD_FILES[name][0]) for name in TWISTD_FILES}
        limit = defer.DeferredSemaphore(2)  # two processes at a time: the machine is shared
        runs = {name: limit.run(twistd, self, "--config", path) for name, path in paths.items()}
        for name in TWISTD_FILES:
            line = self.assertOneLine((yield runs[name]), BAD_FILES[name][1].format(file=paths[name]))
            self.assertEqual(self.check(paths[name])[2], f"rubrisproxy check: configuration error: {line}\n", name)

    @defer.inlineCallbacks
    def test_bad_flags_are_one_line_too(self):  # type: ignore[no-untyped-def]
        missing = os.path.join(os.path.abspath(self.mktemp()), "access.log")
        cases = ((["--listen", "tcp:notaport"], "--listen"),
                 (["--admin", "tcpx:9000"], "--admin"),
                 (["--timeout", "client"], "--timeout"),  # once a usage error, with the usage text
                 (["--access-log", missing, "--backend", "127.0.0.1:9"], "--access-log"))
        limit = defer.DeferredSemaphore(2)
        runs = [limit.run(twistd, self, *args) for args, _ in cases]
        for (_, key), command in zip(cases, runs, strict=True):
            self.assertOneLine((yield command), key)

    @defer.inlineCallbacks
    def test_check_validates_without_starting_anything(self):  # type: ignore[no-untyped-def]
        taken = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        log = os.path.join(os.path.dirname(self.write("unused", b"")), "access.log")
        good = self.write("good", b'[frontends.web]\nlisten = ["tcp:%d:interface=127.0.0.1"]\nbackend = "app"\n'
                                  b'[backends.app]\nservers = ["127.0.0.1:9"]\n[access-log]\npath = "%s"\n'
                                  % (taken.getHost().port, log.encode()))
        command = yield run(self, "-m", "rubrisproxy.ctl", "check", good)
        self.assertEqual((command.code, command.out.decode(), command.err), (0, f"{good}: valid\n", b""))
        self.assertFalse(os.path.exists(log), "check opened the access log")
        bad = self.write("bad", BAD_FILES["listen-unknown-type"][0])
        command = yield run(self, "-m", "rubrisproxy.ctl", "check", bad)
        self.assertOneLine(command, "frontends.web.listen", prefix="rubrisproxy check: configuration error: ")
        missing = os.path.join(os.path.dirname(bad), "missing.toml")
        command = yield run(self, "-m", "rubrisproxy.ctl", "check", missing)
        line = self.assertOneLine(command, missing, prefix="rubrisproxy check: configuration error: ")
        self.assertEqual(line, f"{missing}: cannot read: No such file or directory")
        self.assertEqual(command.code, 1)

    @defer.inlineCallbacks
    def test_version(self):  # type: ignore[no-untyped-def]
        command = yield run(self, "-m", "rubrisproxy.ctl", "--version")
        self.assertEqual((command.code, command.out.decode(), command.err), (0, f"rubrisproxy {__version__}\n", b""))

    @defer.inlineCallbacks
    def test_rubrisproxy_ctl_imports_only_the_standard_library(self):  # type: ignore[no-untyped-def]
        """``rubrisproxy-ctl``, what a health check runs every few seconds, loads none of the proxy's runtime."""
        code = ("import sys, rubrisproxy.adminctl; "
                "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'autobahn', 'OpenSSL', 'h2', "
                "'httptools', 'zope', 'prometheus_client'}), sorted(m for m in sys.modules if m.startswith('rubrisproxy')))")
        command = yield run(self, "-c", code)
        self.assertEqual(command.out.decode().strip(), "[] ['rubrisproxy', 'rubrisproxy.adminctl']")
        command = yield run(self, "-m", "rubrisproxy.adminctl", "--admin", "http://127.0.0.1:1", "health")
        self.assertEqual(command.code, 1)
        self.assertTrue(command.err.decode().startswith("rubrisproxy ctl: cannot reach the admin API at"), command.err)


class HangupTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_sighup_without_a_file_is_logged_and_nothing_is_dropped(self):  # type: ignore[no-untyped-def]
        echo = EchoBackendFactory()
        backend = listen_echo_backend(echo)
        self.addCleanup(backend.stopListening)
        process = run_twistd("--listen", "tcp:0:interface=127.0.0.1", "--backend", f"127.0.0.1:{backend.getHost().port}")
        self.addCleanup(lambda: process.ended.called or os.kill(process.transport.pid, signal.SIGKILL))
        match = yield process.wait_for(rb"listening on \S+ \(127\.0\.0\.1:(\d+)\)")
        port = int(match.group(1))
        client = connect_client(port, "/")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        process.transport.signalProcess("HUP")
        yield process.wait_for(rb"SIGHUP: nothing to reload, the proxy was started without --config")
        client.sendMessage(b"still here")
        messages = yield client.wait_messages(1)
        self.assertEqual(messages[0][0], b"still here")
        self.assertFalse(process.ended.called)
        late = connect_client(port, "/")  # and it still accepts
        self.addCleanup(lambda: late.transport.abortConnection() if late.transport.connected else None)
        yield late.opened
        process.transport.signalProcess("TERM")
        yield process.ended
        self.assertEqual(process.signal, signal.SIGTERM)
