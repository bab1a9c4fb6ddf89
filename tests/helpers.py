"""Real-socket fixtures for tests: origins, a proxy, and a raw HTTP client, all on 127.0.0.1."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httptools
from twisted.application.service import MultiService
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest
from twisted.web import resource, server

from rubrisproxy.accesslog import AccessLog, AccessRecord, ConnectionRecord
from rubrisproxy.builder import ProxyParts
from rubrisproxy.config import (
    BackendConfig,
    CommandLine,
    FrontendConfig,
    Limits,
    PoolSettings,
    ProxyConfig,
    ServerConfig,
    Timeouts,
    WebSocketConfig,
    load_config,
)
from rubrisproxy.frontend import Frontend, PeerSettings, connection_factory
from rubrisproxy.origin import ConnectionPool, OriginConnector
from rubrisproxy.service import build_service
from rubrisproxy.settings import LiveSettings
from rubrisproxy.websocket import ResumeBudget

GUARD = 10.0  # seconds: a guard against a hung test, never a wait


class MemoryAccessLog(AccessLog):
    """Keeps records for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[AccessRecord] = []
        self.connections: list[ConnectionRecord] = []

    def write(self, record: AccessRecord) -> None:
        self.records += 1
        self.entries.append(record)

    def write_connection(self, record: ConnectionRecord) -> None:
        self.connections.append(record)


def build_frontend(
    clock: Any, backend: BackendConfig | None = None, *, timeouts: Timeouts | None = None, limits: Limits | None = None,
    pool: PoolSettings | None = None, connector: Any = None, access_log: AccessLog | None = None,
) -> Frontend:
    """Frontend ``web`` (not listening) sending to ``backend``, on ``clock``, built as the proxy builds one: its
    configuration applied to an empty proxy. ``connector`` replaces the proxy's (a fake that connects at once)."""
    backend = backend or BackendConfig(name="app")
    config = ProxyConfig(
        frontends=(FrontendConfig(name="web", listen=(), backend=backend.name),), backends={backend.name: backend},
        timeouts=timeouts or Timeouts(), limits=limits or Limits(), pool=pool or PoolSettings(),
    )
    settings = LiveSettings()
    connection_pool = ConnectionPool(connector if connector is not None else OriginConnector(clock, settings), clock,
                                     config.pool, settings)
    parts = ProxyParts(clock, MultiService(), settings, connection_pool,
                       access_log if access_log is not None else MemoryAccessLog(),
                       ResumeBudget(settings))
    parts.apply(config)
    return parts.frontends["web"].frontend


class RawClient(Protocol):
    """Sends bytes, collects what comes back, and says when a condition on it holds."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = defer.Deferred()
        self._waiters: list[tuple[Callable[[bytes], bool], defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: object = None) -> None:
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.callback(self.received)
        self.closed.callback(self.received)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def until(self, condition: Callable[[bytes], bool]) -> defer.Deferred[bytes]:
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiters.append((condition, d))
        self._check()
        return d.addTimeout(GUARD, reactor)

    def responses(self, count: int) -> defer.Deferred[list[Response]]:
        """Wait for ``count`` complete responses (or the close) and parse them."""
        return self.until(lambda data: len(parse_responses(data)) >= count).addCallback(parse_responses)

    def _check(self) -> None:
        for item in list(self._waiters):
            condition, d = item
            if condition(self.received):
                self._waiters.remove(item)
                d.callback(self.received)


class Response:
    """A parsed response as a test sees it."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[-1] if values else None

    def header_names(self) -> set[bytes]:
        return {n.lower() for n, _ in self.headers}


class _ResponseCollector:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.current.complete = True
        self.responses.append(self.current)
        self.current = Response()


def parse_responses(data: bytes, head_request: bool = False) -> list[Response]:
    """Complete responses in ``data`` (1xx interim responses included)."""
    collector = _ResponseCollector()
    collector.parser = parser = httptools.HttpResponseParser(collector)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    return collector.responses


class EchoResource(resource.Resource):
    """An origin resource that reports what it received, and can answer in several ways."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        path = request.path
        if path.startswith(b"/status/"):
            request.setResponseCode(int(path.split(b"/")[2]))
            return b"" if request.code in (204, 304) else b"status body"
        if path == b"/echo":
            return request.content.read()  # type: ignore[union-attr,no-any-return]
        if path == b"/headers":
            lines = [b"%s: %s" % (k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs]
            return b"\n".join(lines)
        if path.startswith(b"/big/"):
            size = int(path.split(b"/")[2])
            request.setHeader(b"content-length", b"%d" % size)
            return b"b" * size
        return b"path=" + request.uri


def reference(obj: object) -> Callable[[], object | None]:
    """A weak reference to ``obj``, or, for an object that takes none (an instance of a class compiled native by
    mypyc), what stands for one: ``obj`` while it lives, else None. That holds only its id and type, and finds it
    among the objects the collector tracks (a compiled object with attributes is tracked)."""
    try:
        return weakref.ref(obj)
    except TypeError:
        identity, cls = id(obj), type(obj)
        return lambda: next((o for o in gc.get_objects() if id(o) == identity and type(o) is cls), None)


def our_cyclic_garbage(*packages: str) -> list[str]:
    """The rubrisproxy classes (or those of ``packages``) among what only the cyclic collector would free now (the
    collector being off)."""
    prefixes = packages or ("rubrisproxy",)
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted({f"{type(o).__module__}.{type(o).__qualname__}" if packages else type(o).__qualname__
                       for o in gc.garbage if type(o).__module__.startswith(prefixes)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


class ProxyTestCase(unittest.TestCase):
    """Starts origins and a proxy on loopback; everything is torn down after the test."""

    timeout = 60  # seconds: a hung test fails instead of stalling the suite

    timeouts = Timeouts(client=5, http_request=5, http_keep_alive=5, connect=2, server=5)
    limits = Limits()

    def start_web_origin(self, root: resource.Resource | None = None) -> int:
        site = server.Site(root or EchoResource(), logPath="/dev/null")
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.web_sites = getattr(self, "web_sites", []) + [site]
        return port.getHost().port  # type: ignore[no-any-return]

    def start_raw_origin(self, protocol: Callable[[], Protocol]) -> int:
        factory = Factory.forProtocol(protocol)
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    def start_from_config(self, text: str) -> Any:
        """Write ``text`` as a configuration file and start the proxy it describes (access log off); its
        service, stopped with the test."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        service = build_service(load_config(CommandLine(config_path=path, access_log="off")), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def start_proxy(
        self,
        *origin_ports: int,
        retries: int = 3,
        pool: PoolSettings | None = None,
        websocket: WebSocketConfig | None = None,
        maxconn: int = 0,
        peers: PeerSettings | None = None,
        **overrides: object,
    ) -> Frontend:
        timeouts = replace(self.timeouts, **{k: v for k, v in overrides.items() if hasattr(self.timeouts, k)})
        limits = replace(self.limits, **{k: v for k, v in overrides.items() if hasattr(self.limits, k)})
        servers = tuple(
            ServerConfig(name=f"s{i + 1}", host="127.0.0.1", port=p, maxconn=maxconn) for i, p in enumerate(origin_ports)
        )
        config = BackendConfig(name="app", servers=servers, retries=retries, websocket=websocket or WebSocketConfig())
        self.access_log = MemoryAccessLog()
        frontend = build_frontend(reactor, config, timeouts=timeouts, limits=limits, pool=pool, access_log=self.access_log)
        if peers is not None:
            frontend.peers = peers
        factory = connection_factory(frontend)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.proxy_port = port.getHost().port
        self.addCleanup(self._stop_proxy, port, frontend)
        return frontend

    def _stop_proxy(self, port, frontend: Frontend):  # type: ignore[no-untyped-def]
        for relay in list(frontend.websockets):
            relay.abort()
        for connection in list(frontend.connections):
            connection.transport.abortConnection()
        for connection in frontend.pool.close_idle():
            connection.transport.abortConnection()  # a TLS close would wait for the peer
        for connection in list(frontend.pool.in_use):
            connection.abort()
        return port.stopListening()

    def collector_off(self) -> None:
        """Collect what is garbage now, then leave cycles to :func:`our_cyclic_garbage` until the test ends."""
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    def connect(self):  # type: ignore[no-untyped-def]
        return self.connect_as(RawClient())

    @defer.inlineCallbacks
    def connect_as(self, client):  # type: ignore[no-untyped-def]
        """Connect ``client`` (a :class:`RawClient`) to the proxy."""
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        return client

    @defer.inlineCallbacks
    def request(self, data: bytes, count: int = 1):  # type: ignore[no-untyped-def]
        """Open a connection, send ``data``, return the first ``count`` responses."""
        client = yield self.connect()
        client.send(data)
        responses = yield client.responses(count)
        return responses

    @defer.inlineCallbacks
    def settle(self, frontend: Frontend):  # type: ignore[no-untyped-def]
        """Let the reactor finish closing what the test's last step began."""
        yield self.poll(
            lambda: not frontend.connections and not frontend.pool.in_use and not frontend.websockets,
            "everything closed",
        )

    @defer.inlineCallbacks
    def poll(self, condition: Callable[[], object], what: str, ticks: int = 500):  # type: ignore[no-untyped-def]
        """Let the reactor run, a tick at a time, until ``condition()`` holds (fail after ``ticks``)."""
        for _ in range(ticks):
            yield _tick()
            if condition():
                return
        self.fail(f"never happened: {what}")

@defer.inlineCallbacks
def run_reactor_for(ticks: int):  # type: ignore[no-untyped-def]
    """Let the reactor run ``ticks`` short turns (a bounded wait, for "nothing more happens" checks)."""
    for _ in range(ticks):
        yield _tick()


def _tick() -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


def get(path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n"
