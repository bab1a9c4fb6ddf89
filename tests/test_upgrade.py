"""Live upgrade (docs/upgrade.md): an old and a new proxy in this process, over a real hand-over socket (AMP over
UNIX, descriptors passed with SCM_RIGHTS), real client connections on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer

from rubrisproxy._compat import unsent
from rubrisproxy.admin import upgrade_failed
from rubrisproxy.config import CommandLine, ConfigError, load_config
from rubrisproxy.frontend import ConnectionAdopter
from rubrisproxy.lifecycle import IConnectionHandler, RefuseConnection
from rubrisproxy.service import ProxyService, UpgradeSetup, build_service
from rubrisproxy.transfer import Kind, Outcome, UpgradeUnderWay
from rubrisproxy.upgrade import Pidfile, UpgradeFailed, UpgradeState

from .h2client import H2Client
from .helpers import EchoResource, ProxyTestCase, RawClient, get, parse_responses
from .test_tls_origin import tls_listen_endpoint

CONFIG = """
[admin]
listen = ["tcp:0:interface=127.0.0.1"]

[process]
upgrade-deadline = "{deadline}"

[frontends.web]
listen = [{listen}]
backend = "web"

[backends.web]
servers = [{{ name = "w1", address = "127.0.0.1:{origin}" }}]
"""


class HeldResource(resource.Resource):
    """Answers ``/slow`` only when the test says (``release``); anything else at once, as the echo does."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[server.Request] = []
        self.echo = EchoResource()

    def render(self, request: server.Request) -> bytes | int:
        if request.path == b"/slow":
            self.held.append(request)
            return server.NOT_DONE_YET
        return self.echo.render(request)

    def release(self) -> None:
        for request in self.held:
            request.write(b"slow done")
            request.finish()
        self.held.clear()


class InProcess:
    """A "new process" built in this one from the configuration file as it reads now: a spawner for the old
    proxy's upgrader."""

    def __init__(self, case: UpgradeTestCase) -> None:
        self.case = case
        self.service: ProxyService | None = None
        self.exits: list[str] = []
        self.ended: Callable[[str | None], None] | None = None

    def spawn(self, socket_path: str, ended: Callable[[str | None], None]) -> None:
        self.ended = ended
        try:
            config = load_config(CommandLine(config_path=self.case.path, access_log="off"))
        except ConfigError as e:  # as a real new process does: it exits, saying why on its stderr
            reactor.callLater(0, ended, f"it exited with status 1 ({e})")
            return
        self.service = build_service(config, reactor, upgrade=UpgradeSetup(successor_socket=socket_path, exit=self.exit))
        self.case.addCleanup(self._stop)
        self.service.startService()

    def exit(self, why: str) -> None:
        self.exits.append(why)
        reactor.callLater(0, self._exited)

    def _exited(self) -> None:
        self._stop()
        if self.ended is not None:
            self.ended("it exited with status 1")

    def _stop(self) -> Any:
        service, self.service = self.service, None
        if service is not None and service.running:
            return service.stopService()
        return None

    def kill(self) -> None:
        pass


class UpgradeTestCase(ProxyTestCase):
    tunnel_port = 0

    def setUp(self) -> None:
        self.origin = HeldResource()
        self.origin_port = self.start_web_origin(self.origin)
        self.path = self.mktemp()
        self.stopped: list[bool] = []

    def write(self, deadline: str = "30s", listen: str = '"tcp:0:interface=127.0.0.1"') -> None:
        with open(self.path, "w") as f:
            f.write(CONFIG.format(deadline=deadline, listen=listen, origin=self.origin_port))

    def start_old(self, deadline: str = "30s", listen: str = '"tcp:0:interface=127.0.0.1"') -> ProxyService:
        self.write(deadline, listen)
        self.new = InProcess(self)
        self.old = build_service(load_config(CommandLine(config_path=self.path, access_log="off")), reactor,
                                 upgrade=UpgradeSetup(spawner=self.new, stop=self._old_stopped))
        self.old.startService()
        self.addCleanup(self._stop_old)
        self.port = self.old.parts.frontends["web"].ports[0].getHost().port
        self.proxy_port = self.port
        return self.old

    def _old_stopped(self) -> None:
        self.stopped.append(True)
        self.old_stopping = defer.maybeDeferred(self.old.stopService)

    def _stop_old(self) -> Any:
        if self.old.running:
            return self.old.stopService()
        return getattr(self, "old_stopping", None)

    @property
    def new_parts(self) -> Any:
        assert self.new.service is not None
        return self.new.service.parts

    @defer.inlineCallbacks
    def exchange(self, client: RawClient, path: bytes = b"/"):  # type: ignore[no-untyped-def]
        """One request on ``client``'s connection, and its response."""
        before = len(parse_responses(client.received))
        client.send(get(path))
        responses = yield client.responses(before + 1)
        return responses[before]

    def old_frontend(self) -> Any:
        return self.old.parts.frontends["web"].frontend

    def new_frontend(self) -> Any:
        return self.new_parts.frontends["web"].frontend


class HTTPMoveTests(UpgradeTestCase):
    @defer.inlineCallbacks
    def test_idle_keep_alive_connection_moves(self):  # type: ignore[no-untyped-def]
        """An idle keep-alive connection is carried: its next request, on the same TCP connection, is answered by
        the new proxy, which logs its whole life; the old one exits, its counts reported to the new one."""
        self.start_old()
        client = yield self.connect()
        first = yield self.exchange(client)
        self.assertEqual(first.status, 200)
        old_connection, = self.old_frontend().connections
        opened_at, bytes_in = old_connection.opened_at, old_connection.bytes_in
        answer = yield self.old.upgrader.start()
        self.assertEqual(answer["pid"], os.getpid())
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        self.assertEqual(self.old.upgrader.tally.counts, {(Kind.HTTP, Outcome.MOVED): 1})
        second = yield self.exchange(client)
        self.assertEqual(second.status, 200)
        frontend = self.new_frontend()
        self.assertEqual(frontend.requests, 1)
        connection, = frontend.connections
        self.assertEqual((connection.requests, connection.responses), (2, 2))  # its whole life
        self.assertEqual(connection.opened_at, opened_at)
        self.assertEqual(connection.bytes_in, 2 * bytes_in)
        port = self.new_parts.frontends["web"].ports[0]
        self.assertTrue(port.connected)  # adopted, and not shut down when the old one let go of its copy
        self.assertEqual(port.getHost().port, self.port)  # the same socket
        assert self.new.service is not None
        upgrader = self.new.service.upgrader
        self.assertEqual(upgrader.previous["connections"]["moved"], {"http": 1})
        self.assertEqual(dict(upgrader.counts()), {(Kind.HTTP, Outcome.MOVED): 1})

    @defer.inlineCallbacks
    def test_request_in_flight_finishes_then_moves(self):  # type: ignore[no-untyped-def]
        """A request in flight is answered by the old proxy; its connection moves right after, and the next
        request on it is the new proxy's."""
        self.start_old()
        client = yield self.connect()
        client.send(get(b"/slow"))
        yield self.poll(lambda: self.origin.held, "the request reaches the origin")
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.old.upgrader.state is UpgradeState.HANDING_OVER, "handing over")
        self.assertEqual(len(self.old_frontend().connections), 1)  # it waits for its answer
        self.origin.release()
        first, = yield client.responses(1)
        self.assertEqual(first.body, b"slow done")
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        second = yield self.exchange(client)
        self.assertEqual(second.status, 200)
        self.assertEqual(self.new_frontend().requests, 1)
        self.assertEqual(self.old_frontend().requests, 1)

    @defer.inlineCallbacks
    def test_pipelined_requests_answered_in_order_across_the_switch(self):  # type: ignore[no-untyped-def]
        """Requests pipelined behind one in flight (read, parsed, held) are answered in order by the old proxy,
        and a request after them by the new one, on one connection."""
        self.start_old()
        client = yield self.connect()
        client.send(get(b"/slow") + get(b"/a") + get(b"/b"))
        yield self.poll(lambda: self.origin.held, "the request reaches the origin")
        yield self.old.upgrader.start()
        self.origin.release()
        responses = yield client.responses(3)
        self.assertEqual([r.status for r in responses], [200, 200, 200])
        self.assertEqual(responses[0].body, b"slow done")
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        last = yield self.exchange(client, b"/c")
        self.assertEqual(last.status, 200)
        self.assertEqual((self.old_frontend().requests, self.new_frontend().requests), (3, 1))

    @defer.inlineCallbacks
    def test_connections_made_during_the_switch_are_served(self):  # type: ignore[no-untyped-def]
        """The listening socket itself moves: connections made before, during and after the switch are all
        accepted (by one process or the other), none refused."""
        self.start_old()
        clients = []
        for _ in range(3):
            clients.append((yield self.connect()))
        started = self.old.upgrader.start()
        for _ in range(3):
            clients.append((yield self.connect()))
        yield started
        for _ in range(3):
            clients.append((yield self.connect()))
        for client in clients:
            response = yield self.exchange(client)
            self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_refused_record_version_stays_in_the_old_process(self):  # type: ignore[no-untyped-def]
        """A new process that cannot read the record's version refuses it: the old process keeps serving the
        connection (counted kept), until its client closes it; then the old one exits."""
        self.patch(ConnectionAdopter, "versions", frozenset({99}))
        self.start_old()
        client = yield self.connect()
        yield self.exchange(client)
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.old.upgrader.tally, "the connection's outcome")
        self.assertEqual(self.old.upgrader.tally.counts, {(Kind.HTTP, Outcome.KEPT): 1})
        again = yield self.exchange(client)
        self.assertEqual(again.status, 200)
        self.assertEqual(self.old_frontend().requests, 2)
        self.assertFalse(self.stopped)
        client.transport.loseConnection()
        yield self.poll(lambda: self.stopped, "the old proxy exits once its last connection ended")
        self.assertEqual(self.new_frontend().requests, 0)


class StayingTests(UpgradeTestCase):
    @defer.inlineCallbacks
    def tls_client(self):  # type: ignore[no-untyped-def]
        client = RawClient()
        options = ssl.optionsForClientTLS("127.0.0.1", trustRoot=ssl.Certificate.loadPEM(self.ca_pem))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        yield connectProtocol(wrapClientTLS(options, endpoint), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        return client

    @defer.inlineCallbacks
    def test_tls_connection_is_kept_then_closed_at_the_deadline(self):  # type: ignore[no-untyped-def]
        """A TLS connection (its state in this process's memory) stays in the old process, which serves it;
        at the deadline what is left is closed as a graceful stop closes it, counted closed."""
        self.ca_pem, endpoint = tls_listen_endpoint(self)
        self.start_old(deadline="1s", listen=json.dumps(endpoint))
        client = yield self.tls_client()
        yield self.exchange(client)
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.old.upgrader.tally, "the connection's outcome")
        again = yield self.exchange(client)
        self.assertEqual(again.status, 200)
        self.assertEqual(self.old_frontend().requests, 2)
        self.assertEqual(self.old.upgrader.tally.reasons, {(Kind.HTTP, "tls"): 1})
        yield self.poll(lambda: self.stopped, "the deadline passes", ticks=400)
        yield client.closed
        self.assertEqual(self.old.upgrader.tally.counts,
                         {(Kind.HTTP, Outcome.KEPT): 1, (Kind.HTTP, Outcome.CLOSED): 1})


class FailureTests(UpgradeTestCase):
    @defer.inlineCallbacks
    def test_new_process_with_a_bad_configuration_leaves_the_old_serving(self):  # type: ignore[no-untyped-def]
        """A new process that exits (here: the file no longer validates) fails the upgrade, saying why; the old
        process keeps its listeners and connections, and may be upgraded again."""
        self.start_old()
        client = yield self.connect()
        with open(self.path, "a") as f:
            f.write("\n[nonsense]\n")
        failure = yield self.assertFailure(self.old.upgrader.start(), UpgradeFailed)
        self.assertIn("exited", str(failure))
        self.assertEqual(self.old.upgrader.state, UpgradeState.IDLE)
        self.assertIn("nonsense", self.old.upgrader.status()["last_failure"])
        response = yield self.exchange(client)
        self.assertEqual(response.status, 200)
        fresh = yield self.connect()
        response = yield self.exchange(fresh)
        self.assertEqual(response.status, 200)
        self.write()
        yield self.old.upgrader.start()

    @defer.inlineCallbacks
    def test_new_process_that_cannot_listen_leaves_the_old_serving(self):  # type: ignore[no-untyped-def]
        """A new process that cannot bind a listener it adds says so and exits: the old keeps everything."""
        self.start_old()
        taken = reactor.listenTCP(0, server.Site(EchoResource()), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        self.write(listen=f'"tcp:0:interface=127.0.0.1", "tcp:{taken.getHost().port}:interface=127.0.0.1"')
        failure = yield self.assertFailure(self.old.upgrader.start(), UpgradeFailed)
        self.assertIn("cannot listen", str(failure))
        self.assertEqual(len(self.new.exits), 1)
        client = yield self.connect()
        response = yield self.exchange(client)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(self.old.parts.frontends["web"].ports), 1)

    @defer.inlineCallbacks
    def test_one_upgrade_at_a_time(self):  # type: ignore[no-untyped-def]
        self.start_old()
        first = self.old.upgrader.start()
        yield self.assertFailure(self.old.upgrader.start(), UpgradeUnderWay)
        yield first
        self.assertEqual(upgrade_failed(Failure(UpgradeUnderWay("an upgrade is under way")))[0], 409)  # the API's
        self.assertEqual(upgrade_failed(Failure(UpgradeFailed("it exited")))[0], 502)


class PidfileTests(UpgradeTestCase):
    def test_pidfile_hidden_restored_and_handed_over(self) -> None:
        """The pidfile is removed while the new process starts (twistd would refuse to start), written back if
        the upgrade fails, and left to the new process (not removed by the old twistd) once it took over."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
        options = {"pidfile": path}
        pidfile = Pidfile(options)
        pidfile.hide()
        self.assertFalse(os.path.exists(path))
        pidfile.restore()
        with open(path) as f:
            self.assertEqual(f.read().strip(), str(os.getpid()))
        pidfile.hide()
        pidfile.hand_over()
        self.assertEqual(options["pidfile"], "")

    def test_a_pidfile_naming_another_process_is_left_alone(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("1\n")
        Pidfile({"pidfile": path}).hide()
        self.assertTrue(os.path.exists(path))



TUNNEL_CONFIG = """
[frontends.ws]
listen = ["tcp:0:interface=127.0.0.1"]
backend = "ws"

[backends.ws]
servers = [{{ name = "t1", address = "127.0.0.1:{tunnel_origin}" }}]
websocket = {{ mode = "tunnel" }}
"""
#: Bytes each side sends while the other does not read: far more than the sockets' buffers hold.
BIG = 1024 * 1024


def pattern(seed: int, size: int) -> bytes:
    block = bytes((i * seed + 11) & 0xFF for i in range(65536))
    return (block * (size // len(block) + 1))[:size]


class RawUpgradeOrigin(Protocol):
    """Answers a WebSocket upgrade with a 101, then sends ``BIG`` bytes and keeps what it reads."""

    def __init__(self) -> None:
        self.head = b""
        self.received = b""
        self.switched = False

    def connectionMade(self) -> None:
        small_buffers(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self.received += data
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        head, _, rest = self.head.partition(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.switched = True
        self.received = rest
        self.transport.write(pattern(7, BIG))


def small_buffers(transport: Any) -> None:
    """Loopback's socket buffers grow to megabytes: kept small, a peer that stops reading backs the proxy up."""
    transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)


UPGRADE_REQUEST = (b"GET /t HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


class TunnelMoveTests(UpgradeTestCase):
    def write(self, deadline: str = "30s", listen: str = '"tcp:0:interface=127.0.0.1"') -> None:
        super().write(deadline, listen)
        with open(self.path, "a") as f:
            f.write(TUNNEL_CONFIG.format(tunnel_origin=self.tunnel_port))

    @defer.inlineCallbacks
    def test_tunnel_with_bytes_in_flight_both_ways_moves_whole(self):  # type: ignore[no-untyped-def]
        """A tunnel whose both sides are backed up (neither peer reads) moves with the bytes the old proxy's
        transports still held: every byte arrives once, in order, both ways; the new proxy relays it from then
        on and logs it once when it ends."""
        origins: list[RawUpgradeOrigin] = []

        def origin() -> RawUpgradeOrigin:
            origins.append(RawUpgradeOrigin())
            return origins[-1]

        self.tunnel_port = self.start_raw_origin(origin)
        self.start_old()
        self.proxy_port = self.old.parts.frontends["ws"].ports[0].getHost().port
        client = yield self.connect()
        small_buffers(client.transport)
        client.send(UPGRADE_REQUEST)
        yield client.until(lambda data: b"\r\n\r\n" in data)
        head, _, _ = client.received.partition(b"\r\n\r\n")
        self.assertIn(b" 101 ", head)
        start = len(head) + 4
        server = next(origin for origin in origins if origin.switched)  # not a health check's
        client.transport.pauseProducing()
        server.transport.pauseProducing()
        old_frontend = self.old.parts.frontends["ws"].frontend
        tunnel, = old_frontend.websockets
        connection, = old_frontend.connections
        small_buffers(connection.transport)  # the proxy's sockets too: its transports hold what the kernel will not
        small_buffers(tunnel._origin.transport)
        chunk = pattern(3, 1 << 18)
        sent = 0

        def backed_up_both_ways() -> bool:
            nonlocal sent
            if not unsent(tunnel._origin.transport) and sent < 64 * len(chunk):
                client.transport.write(chunk)  # loopback's buffers are large: more until the proxy holds some
                sent += len(chunk)
            return bool(unsent(connection.transport) and unsent(tunnel._origin.transport))

        yield self.poll(backed_up_both_ways, "bytes held back both ways in the old proxy", ticks=3000)
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.old.upgrader.tally, "the tunnel's outcome")
        self.assertEqual(self.old.upgrader.tally.counts, {(Kind.TUNNEL, Outcome.MOVED): 1})
        client.transport.resumeProducing()
        server.transport.resumeProducing()
        yield self.poll(lambda: len(client.received) - start >= BIG and len(server.received) >= sent,
                        "every byte relayed", ticks=3000)
        self.assertTrue(client.received[start:] == pattern(7, BIG), "the client got the server's bytes as sent")
        self.assertTrue(server.received == chunk * (sent // len(chunk)), "the server got the client's bytes as sent")
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        new_frontend = self.new_parts.frontends["ws"].frontend
        self.assertEqual(len(new_frontend.websockets), 1)
        client.send(b"after")
        yield self.poll(lambda: server.received.endswith(b"after"), "relayed by the new proxy")
        server.transport.write(b"back")
        yield client.until(lambda data: data.endswith(b"back"))
        client.transport.loseConnection()
        yield self.poll(lambda: not new_frontend.websockets, "the tunnel ends")
        self.assertEqual(sum(new_frontend.terminations.values()), 1)  # logged once, in the new process
        self.assertEqual(sum(old_frontend.terminations.values()), 0)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class ConnectTunnelTests(UpgradeTestCase):
    def write(self, deadline: str = "30s", listen: str = '"tcp:0:interface=127.0.0.1"') -> None:
        super().write(deadline, listen)
        with open(self.path, "a") as f:
            f.write(f'[frontends.out]\nmode = "forward"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                    f'[frontends.out.forward]\nconnect-ports = [{self.tunnel_port}]\nallow-hosts = ["127.0.0.1"]\n')

    @defer.inlineCallbacks
    def test_connect_tunnel_moves(self):  # type: ignore[no-untyped-def]
        """A forward proxy's CONNECT tunnel moves: the same two connections relay on in the new process."""
        self.tunnel_port = self.start_raw_origin(Echo)
        self.start_old()
        self.proxy_port = self.old.parts.frontends["out"].ports[0].getHost().port
        client = yield self.connect()
        client.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (self.tunnel_port, self.tunnel_port))
        yield client.until(lambda data: b"\r\n\r\n" in data)
        self.assertIn(b" 200 ", client.received)
        client.send(b"before")
        yield client.until(lambda data: data.endswith(b"before"))
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        self.assertEqual(self.old.upgrader.tally.counts, {(Kind.TUNNEL, Outcome.MOVED): 1})
        client.send(b"after")
        yield client.until(lambda data: data.endswith(b"after"))
        frontend = self.new_parts.frontends["out"].frontend
        self.assertEqual(len(frontend.websockets), 1)
        client.transport.loseConnection()
        yield self.poll(lambda: not frontend.websockets, "the tunnel ends")
        self.assertEqual(sum(frontend.terminations.values()), 1)


class HTTP2Tests(UpgradeTestCase):
    @defer.inlineCallbacks
    def test_http2_connection_is_sent_goaway_and_kept(self):  # type: ignore[no-untyped-def]
        """An HTTP/2 connection cannot move (its streams share it): it is sent GOAWAY, its stream in flight
        finishes in the old process, and the client's next connection is the new process's."""
        self.start_old()
        client = H2Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        slow = client.request(b"/slow")
        yield self.poll(lambda: self.origin.held, "the request reaches the origin")
        yield self.old.upgrader.start()
        yield self.poll(lambda: client.goaway is not None, "GOAWAY")
        self.assertEqual(self.old.upgrader.tally.reasons, {(Kind.HTTP, "http2"): 1})
        self.origin.release()
        # h2 reads nothing after a GOAWAY (it closes its side): what follows is read as bytes.
        yield self.poll(lambda: b"slow done" in client.received, "the stream in flight finishes")
        self.assertEqual(client.goaway.last_stream_id, slow)
        yield self.poll(lambda: self.stopped, "the old proxy exits once it has ended")
        again = yield self.connect()
        response = yield self.exchange(again)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.new_frontend().requests, 1)


class ProxiedTests(UpgradeTestCase):
    def write(self, deadline: str = "30s", listen: str = '"tcp:0:interface=127.0.0.1"') -> None:
        super().write(deadline, listen)
        with open(self.path) as f:
            text = f.read()
        with open(self.path, "w") as f:
            f.write(text.replace('backend = "web"\n', 'backend = "web"\npeers = "proxied"\n'
                                 'trusted-proxies = ["127.0.0.1"]\nproxy-protocol = "v1"\n', 1))

    @defer.inlineCallbacks
    def test_the_client_a_proxy_header_named_moves_with_the_connection(self):  # type: ignore[no-untyped-def]
        """A proxied connection's client, learned from its PROXY header before the upgrade, is still its client
        in the new process: the origin is told the same address."""
        self.start_old()
        client = yield self.connect()
        client.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
        before = yield self.exchange(client, b"/headers")
        self.assertIn(b"X-Forwarded-For: 203.0.113.7", before.body)
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        self.assertEqual(self.old.upgrader.tally.counts, {(Kind.HTTP, Outcome.MOVED): 1})
        after = yield self.exchange(client, b"/headers")
        self.assertIn(b"X-Forwarded-For: 203.0.113.7", after.body)
        connection, = self.new_frontend().connections
        self.assertEqual((connection.source, connection.peer), ("203.0.113.7", "127.0.0.1"))


class ConfigTests(UpgradeTestCase):
    def test_the_deadline_is_checked_naming_its_key(self) -> None:
        self.write(deadline="forever")
        with self.assertRaises(ConfigError) as raised:
            load_config(CommandLine(config_path=self.path))
        self.assertIn("process.upgrade-deadline", str(raised.exception))
        self.write(deadline="90s")
        self.assertEqual(load_config(CommandLine(config_path=self.path)).process.upgrade_deadline, 90.0)


@implementer(IConnectionHandler)
class RefuseEveryone:
    """A connection handler that refuses every connection."""

    def connection_opened(self, connection: Any) -> None:
        raise RefuseConnection("no one")

    def connection_ended(self, connection: Any, reason: Any) -> None:
        pass


class AdoptedAreNotRefusedTests(UpgradeTestCase):
    @defer.inlineCallbacks
    def test_a_handler_or_rate_limit_of_the_new_process_does_not_reset_a_moved_connection(self):  # type: ignore[no-untyped-def]
        """The new process's handlers hear of an adopted connection, but it was accepted in the old process: a
        refusal there (or a connection rate limit already spent) would reset the socket both processes share."""
        self.start_old()
        clients = []
        for _ in range(2):
            client = yield self.connect()
            yield self.exchange(client)
            clients.append(client)
        refusing = CONFIG.format(deadline="30s", listen='"tcp:0:interface=127.0.0.1"', origin=self.origin_port)
        refusing = refusing.replace('backend = "web"\n', 'backend = "web"\nhandlers = ["tests.test_upgrade.RefuseEveryone"]\n'
                                    'http-request = [{ action = "rate-limit", key = "src", connections = 1 }]\n', 1)
        with open(self.path, "w") as f:  # what the new process reads as it starts
            f.write(refusing)
        yield self.old.upgrader.start()
        yield self.poll(lambda: self.stopped, "the old proxy exits")
        self.assertEqual(self.old.upgrader.tally.counts, {(Kind.HTTP, Outcome.MOVED): 2})
        for client in clients:
            again = yield self.exchange(client)
            self.assertEqual(again.status, 200)
        self.assertEqual(len(self.new_frontend().connections), 2)
        fresh = yield self.connect()  # one the new process accepts itself is refused, as configured
        yield fresh.closed  # refused: closed without an answer
