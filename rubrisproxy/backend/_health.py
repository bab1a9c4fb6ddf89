"""Active health checks: TCP connect, HTTP status, or a WebSocket handshake and clean close."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import HealthCheckConfig
from ._server import Server

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: What a check reads of an answer before giving up on it.
MAX_CHECK_RESPONSE = 65536
#: A masked close frame with status 1000, as a client must send it.
_CLOSE_FRAME = bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])


class _Probe(Protocol):
    """One check on one connection; ``result`` fires once with a reason, or None when healthy."""

    transport: ITCPTransport

    def __init__(self, config: HealthCheckConfig, host: str) -> None:
        self.config = config
        self.host = host
        self.result: defer.Deferred[str | None] = defer.Deferred()
        self.buffer = b""
        self.key = b""
        self.closing = False  # our WebSocket close frame is sent
        self.connecting: defer.Deferred[Protocol] | None = None

    def connectionMade(self) -> None:
        check = self.config.check
        if check == "tcp":
            self.finish(None)
        elif check == "http":
            self.transport.write(self._request(b"Connection: close\r\n"))
        else:
            self.key = base64.b64encode(os.urandom(16))
            self.transport.write(self._request(
                b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: " + self.key + b"\r\n"
            ))

    def _request(self, extra: bytes) -> bytes:
        config = self.config
        return b"%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rubrisproxy-health\r\n%s\r\n" % (
            config.method.encode(), config.path.encode(), self.host.encode(), extra,
        )

    def dataReceived(self, data: bytes) -> None:
        if self.result.called:
            return
        self.buffer += data
        if len(self.buffer) > MAX_CHECK_RESPONSE:
            self.finish(f"answer head over {MAX_CHECK_RESPONSE} bytes")
            return
        if self.config.check == "http":
            self._check_status_line()
        elif self.key:
            self._check_upgrade()
        elif self.closing and self.buffer.startswith(b"\x88"):
            self.finish(None)  # the server's close frame: a clean close

    def _check_status_line(self) -> None:
        if b"\r\n" not in self.buffer:
            return
        status = _status(self.buffer)
        low, high = self.config.expect
        self.finish(None if status is not None and low <= status <= high else f"HTTP status {status}")

    def _check_upgrade(self) -> None:
        if b"\r\n\r\n" not in self.buffer:
            return
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = _status(head)
        if status != 101:
            self.finish(f"WebSocket handshake refused with HTTP status {status}")
            return
        accept = base64.b64encode(hashlib.sha1(self.key + WEBSOCKET_GUID).digest())
        if b"sec-websocket-accept: " + accept.lower() not in head.lower():
            self.finish("WebSocket handshake without the right Sec-WebSocket-Accept")
            return
        self.key = b""
        self.closing = True
        self.transport.write(_CLOSE_FRAME)
        if self.buffer.startswith(b"\x88"):
            self.finish(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.connecting = None  # its result is this probe: a cycle, which only the cyclic collector would free
        if self.closing:
            self.finish(None)  # the server closed after the handshake and our close frame
        self.finish("connection closed before the check completed")

    def finish(self, problem: str | None) -> None:
        if not self.result.called:
            self.result.callback(problem)
        if self.connected:
            self.transport.loseConnection()


def _status(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
        return int(parts[1])
    return None


class HealthChecker:
    """Checks each server of a backend every ``interval``; ``rise`` and ``fall`` decide up and down.

    Each change is logged with its reason. Checks are spread over the interval so a
    backend's servers are not all probed at once.
    """

    log = Logger()

    def __init__(
        self,
        backend_name: str,
        servers: Callable[[], list[Server]],
        config: HealthCheckConfig,
        clock: IReactorTime,
        connect: Callable[[Server, Protocol], defer.Deferred[Protocol]],
    ) -> None:
        self.backend_name = backend_name
        self._servers = servers
        self.config = config
        self.clock = clock
        self._connect = connect
        self._timers: dict[Server, IDelayedCall] = {}
        self._probes: set[_Probe] = set()
        self.running = False
        self.completed = 0  # checks judged, all servers together
        self.judged: Callable[[Server], None] | None = None  # told of each server judged (a worker tells the others)

    def start(self) -> None:
        self.running = True
        servers = self._servers()
        for index, server in enumerate(servers):
            self._schedule(server, self.config.interval * index / max(1, len(servers)))

    def watch(self, server: Server) -> None:
        """Check a server added at run time (its first check comes at once)."""
        if server not in self._timers:
            self._schedule(server, 0)

    def stop(self) -> None:
        self.running = False
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for probe in list(self._probes):
            self._abandon(probe, "stopped")

    def check_now(self, server: Server) -> defer.Deferred[str | None]:
        """Run one check on ``server``; fires with the problem found, or None."""
        probe = _Probe(self.config, self.config.host or f"{server.config.host}:{server.config.port}")
        self._probes.add(probe)
        probe.connecting = self._connect(server, probe)

        def failed(reason: Failure) -> None:
            probe.finish(f"cannot connect: {reason.getErrorMessage()}")

        probe.connecting.addErrback(failed)
        timeout = self.clock.callLater(
            self.config.timeout, self._abandon, probe, f"no answer within {self.config.timeout:g}s"
        )

        def done(problem: str | None) -> str | None:
            self._probes.discard(probe)
            if timeout.active():
                timeout.cancel()
            if probe.transport is not None and problem is not None:
                probe.transport.abortConnection()
            return problem

        return probe.result.addCallback(done)

    def _abandon(self, probe: _Probe, problem: str) -> None:
        """End a check now: it fails with ``problem``, and its connection or connection attempt goes."""
        probe.finish(problem)
        if probe.connecting is not None:
            probe.connecting.cancel()  # a no-op once connected

    def _schedule(self, server: Server, delay: float) -> None:
        if self.running:
            self._timers[server] = self.clock.callLater(delay, self._run, server)

    def _run(self, server: Server) -> None:
        self._timers.pop(server, None)
        if server not in self._servers():
            return  # removed from the backend
        self.check_now(server).addCallback(self._judge, server, self.clock.seconds())

    def _judge(self, problem: str | None, server: Server, started: float) -> None:
        if not self.running:
            return  # a check abandoned by stop() (a reload, say) says nothing about the server
        self.completed += 1
        server.check_done(problem, self.clock.seconds() - started)
        config = self.config
        if problem is None:
            server.check_failures = 0
            server.check_successes += 1
            if not server.up and server.check_successes >= config.rise and not server.ejected:
                server.set_up(True)
                self.log.info("server {backend}/{server} is UP: {check} check passed {count} times",
                              backend=self.backend_name, server=server.name, check=config.check,
                              count=server.check_successes)
        else:
            server.check_successes = 0
            server.check_failures += 1
            server.last_check_problem = problem
            if server.up and server.check_failures >= config.fall:
                server.set_up(False)
                self.log.warn("server {backend}/{server} is DOWN: {problem} ({count} failed {check} checks)",
                              backend=self.backend_name, server=server.name, problem=problem,
                              count=server.check_failures, check=config.check)
        if self.judged is not None:
            self.judged(server)
        self._schedule(server, config.interval)
