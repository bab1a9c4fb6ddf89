"""A real ``redis-server`` for tests: on loopback, a free port, its own temporary directory, no persistence;
killed in the test's cleanup. Skips the test when Debian's redis-server is absent, unless in CI (``CI`` set),
where its absence fails."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

START_GUARD = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process (restartable on the same port)."""

    def __init__(self, binary: str, directory: str) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        """Start it; fires once it accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(int(START_GUARD / 0.02)):
            try:
                connection = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), Protocol())
            except Exception:  # noqa: BLE001 - not listening yet
                yield task.deferLater(reactor, 0.02)
                continue
            connection.transport.loseConnection()
            return
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def kill(self) -> None:
        """SIGKILL it and reap it (what it held is lost: it keeps nothing on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def command(self, *args: str) -> str:
        """``redis-cli`` against it (blocking: for short checks)."""
        cli = shutil.which("redis-cli") or "redis-cli"
        return subprocess.run([cli, "-p", str(self.port), *args], capture_output=True, check=True,
                              timeout=10).stdout.decode()


@defer.inlineCallbacks
def start_redis(case: unittest.TestCase):  # type: ignore[no-untyped-def]
    """A running redis-server, killed in ``case``'s cleanup."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if binary is None:
        if os.environ.get("CI"):
            raise AssertionError("redis-server is missing in CI (.ci/run installs it: apt-get install redis-server)")
        raise unittest.SkipTest("no redis-server (apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="rubris-redis-")
    server = RedisServer(binary, directory)
    case.addCleanup(shutil.rmtree, directory, True)
    case.addCleanup(server.kill)
    yield server.start()
    return server
