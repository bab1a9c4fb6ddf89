"""Interoperability: WebSocket clients nobody here wrote, through rubrisproxy in both modes, to the Autobahn echo backend.

The clients live in ``tests/interop/``: a page run by a real headless Chromium, a
Node script on the ``ws`` library, and a Python script on the asyncio ``websockets``
library. Each runs as a child process in its own process group, sends the messages
of ``EXPECTED`` all at once, checks every echo byte for byte, closes with 4001 "done",
and reports one JSON result (Chromium by POSTing it to a tiny web server of the test,
the scripts on stdout). The test then checks that result against ``EXPECTED`` and
what the backend itself saw. A client whose tool is missing is skipped; CI installs
all three (apt ``chromium nodejs npm``, ``npm ci --prefix tests/interop``, pip ``websockets``); without
node_modules, the Node test runs ``npm install`` into tests/interop itself first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server
from twisted.web.http import _GenericHTTPChannelProtocol

from rubrisproxy.config import WebSocketConfig

from .browser import Child, chromium_argv, spawn, wait_exit
from .helpers import ProxyTestCase
from .wsecho import EchoBackendFactory, listen_echo_backend

INTEROP = Path(__file__).resolve().parent / "interop"

EXPECTED: list[tuple[bytes, bool]] = [  # (payload, is binary), as every client sends them, in order
    (b"hello, proxy", False),
    ("gr\u00fc\u00dfe \u2603 \u65e5\u672c\u8a9e \U0001f680 \u00e9t\u00e9".encode(), False),
    (bytes(range(256)), True),
    (bytes((i * 31 + 7) & 0xFF for i in range(100_000)), True),
]
CLOSE = (4001, "done")
APP_CLOSE = (3000, "app finished")  # a client's close with an application's code, to a backend answering 1000

CLIENT_GUARD = 30.0  # seconds for one client's whole run (the clients give up on their own after 20)
INSTALL_GUARD = 120.0  # seconds for `npm install`

def has_websockets() -> bool:
    try:
        return importlib.util.find_spec("websockets.asyncio.client") is not None  # websockets >= 13
    except ImportError:
        return False


class _TrackingSite(server.Site):
    """A Site that remembers its connections, so cleanup can close what a killed browser left behind."""

    def __init__(self, root: resource.Resource) -> None:
        super().__init__(root, logPath="/dev/null")
        self.noisy = False
        self.open: dict[_GenericHTTPChannelProtocol, Deferred[None]] = {}

    def buildProtocol(self, addr: IAddress | None) -> _GenericHTTPChannelProtocol | None:
        channel = super().buildProtocol(addr)
        if channel is not None:
            self.open[channel] = Deferred()
            connection_lost = channel.connectionLost

            def lost(reason: object) -> None:
                connection_lost(reason)
                waiting = self.open.pop(channel, None)
                if waiting is not None:
                    waiting.callback(None)

            channel.connectionLost = lost  # type: ignore[method-assign]
        return channel

    def abort_all(self) -> Deferred[object]:
        """Abort every connection still open; fires once all of them are closed."""
        waits = list(self.open.values())
        for channel in list(self.open):
            transport = getattr(channel, "transport", None)
            if transport is None:
                # Built but never connected (or already let go): nothing to abort, nothing to wait for.
                self.open.pop(channel).callback(None)
            else:
                transport.abortConnection()
        return defer.gatherResults(waits)


class _Page(resource.Resource):
    """One of the interop pages (``name``, in tests/interop), never cached."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return (INTEROP / self.name).read_bytes()


class _Result(resource.Resource):
    """Where the page POSTs its JSON result; ``result`` fires with it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.result: Deferred[dict[str, Any]] = Deferred()

    def render_POST(self, request: server.Request) -> bytes:
        body = request.content.read() if request.content else b""
        if not self.result.called:
            self.result.callback(json.loads(body))
        return b"thanks"


class _Backend(EchoBackendFactory):
    """The echo backend, answering a close with its code and reason (else with 1000, as Autobahn does by default),
    and keeping its connections."""

    def __init__(self, echo_close: bool = True) -> None:
        super().__init__()
        self.setProtocolOptions(echoCloseCodeReason=echo_close)
        self.built: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        built = super().buildProtocol(addr)
        self.built.append(built)
        return built


def _expected_echoes() -> list[dict[str, Any]]:
    return [
        {"binary": binary, "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        for payload, binary in EXPECTED
    ]


class InteropTests:
    """Each third-party client against the proxy; subclasses set ``mode``."""

    mode = "session"
    client_env: dict[str, str] | None = None  # the script clients' environment (None: this process's)
    browser_flags: tuple[str, ...] = ()  # more Chromium flags

    def start(self, echo_close: bool = True) -> _Backend:
        """The echo backend and a proxy in front of it (pings off: nothing left scheduled)."""
        case = cast(ProxyTestCase, self)
        backend = _Backend(echo_close)
        port = listen_echo_backend(backend)
        case.addCleanup(port.stopListening)
        self.frontend = case.start_proxy(
            cast(IPv4Address, port.getHost()).port,
            websocket=WebSocketConfig(mode=self.mode, client_ping_interval=0, backend_ping_interval=0),
        )
        return backend

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{cast(ProxyTestCase, self).proxy_port}/chat"

    async def check(self, client: str, result: dict[str, Any], backend: _Backend) -> None:
        """The client's own verdict, its echoes, the close, and what the backend and the proxy saw."""
        case = cast(ProxyTestCase, self)
        case.assertEqual(result.get("errors"), [], f"{client} ({self.mode}) reported: {json.dumps(result)[:3000]}")
        case.assertTrue(result.get("ok"), result)
        case.assertEqual(result["echoes"], _expected_echoes())
        case.assertTrue(result["close"]["clean"], result["close"])
        case.assertEqual(backend.received, EXPECTED)
        case.assertEqual([h.path for h in backend.handshakes], ["/chat"])
        await case.poll(lambda: backend.closes, "the backend saw the close")
        case.assertEqual(backend.closes, [(True, *CLOSE)])
        await case.settle(self.frontend)
        case.assertEqual([e.status for e in case.access_log.entries], [101])
        case.assertEqual([e.termination for e in case.access_log.entries], ["client-close"])  # in either mode
        # The backend answered the close with the same code and reason; a client talking to it directly sees them.
        backend_answer = [(p.localCloseCode, (p.localCloseReason or b"").decode()) for p in backend.built]
        case.assertEqual(backend_answer, [CLOSE])
        answered = (result["close"]["code"], result["close"]["reason"])
        case.assertEqual(answered, CLOSE, f"{client} ({self.mode}): the close came back as {answered}, "
                                          f"while the backend answered {backend_answer[0]}")

    async def check_close_in_kind(self, client: str, result: dict[str, Any], backend: _Backend) -> None:
        """The client closed with ``APP_CLOSE`` and the backend answered 1000: a tunnel relays that answer, session
        mode (the client's endpoint) answers with the client's own code and reason (RFC 6455 5.5.1)."""
        case = cast(ProxyTestCase, self)
        case.assertEqual(result.get("errors"), [], f"{client} ({self.mode}) reported: {json.dumps(result)[:3000]}")
        case.assertEqual(result["echoes"], _expected_echoes())
        await case.poll(lambda: backend.closes, "the backend saw the close")
        case.assertEqual(backend.closes, [(True, *APP_CLOSE)])
        answered = (result["close"]["code"], result["close"]["reason"])
        case.assertEqual(answered, APP_CLOSE if self.mode == "session" else (1000, ""))
        await case.settle(self.frontend)
        case.assertEqual([(e.status, e.termination) for e in case.access_log.entries], [(101, "client-close")])

    async def run_script(self, name: str, argv: list[str]) -> dict[str, Any]:
        """Run a client script to its end and return its JSON result line."""
        return await run_client_script(cast(ProxyTestCase, self), name, argv, env=self.client_env)

    async def _chromium(self) -> None:
        case = cast(ProxyTestCase, self)
        backend = self.start()
        argv, env = chromium_argv(case, *self.browser_flags)
        root = resource.Resource()
        root.putChild(b"client.html", _Page("browser_client.html"))
        results = _Result()
        root.putChild(b"result", results)
        site = _TrackingSite(root)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[arg-type]
        case.addCleanup(port.stopListening)
        case.addCleanup(site.abort_all)  # runs after Chromium is killed
        page = f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}/client.html?ws={quote(self.ws_url(), safe='')}"
        argv.append(page)
        browser = spawn(case, "chromium", argv, env=env)
        try:
            waits: list[Deferred[object]] = [cast("Deferred[object]", results.result), cast("Deferred[object]", browser.ended())]
            index, value = await defer.race(waits).addTimeout(CLIENT_GUARD, reactor)
        except defer.TimeoutError:
            case.fail(f"Chromium reported nothing within {CLIENT_GUARD:.0f} s\n{browser.describe()}")
        if index == 1:
            case.fail(f"Chromium exited before reporting\n{browser.describe()}")
        await self.check("chromium", cast(dict[str, Any], value), backend)

    async def _node_ws(self) -> None:
        case = cast(ProxyTestCase, self)
        node = shutil.which("node")
        if node is None:
            raise SkipTest("no node binary (apt-get install nodejs npm)")
        await ensure_node_ws(case)
        backend = self.start()
        result = await self.run_script("node ws", [node, str(INTEROP / "ws_client.js"), self.ws_url()])
        await self.check("node ws", result, backend)

    async def _python_websockets(self) -> None:
        if not has_websockets():
            raise SkipTest("the websockets library (>= 13) is not importable (pip install websockets)")
        backend = self.start()
        argv = [sys.executable, str(INTEROP / "websockets_client.py"), self.ws_url()]
        result = await self.run_script("python websockets", argv)
        await self.check("python websockets", result, backend)

    async def _node_ws_close(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SkipTest("no node binary (apt-get install nodejs npm)")
        await ensure_node_ws(cast(ProxyTestCase, self))
        backend = self.start(echo_close=False)
        close = "%d:%s" % APP_CLOSE
        result = await self.run_script("node ws", [node, str(INTEROP / "ws_client.js"), self.ws_url(), close])
        await self.check_close_in_kind("node ws", result, backend)

    async def _python_websockets_close(self) -> None:
        if not has_websockets():
            raise SkipTest("the websockets library (>= 13) is not importable (pip install websockets)")
        backend = self.start(echo_close=False)
        argv = [sys.executable, str(INTEROP / "websockets_client.py"), self.ws_url(), "%d:%s" % APP_CLOSE]
        result = await self.run_script("python websockets", argv)
        await self.check_close_in_kind("python websockets", result, backend)

    def test_node_ws_close_code(self) -> Deferred[None]:
        """Node's ``ws`` client closing with 3000 and a reason, to a backend answering 1000."""
        return Deferred.fromCoroutine(self._node_ws_close())

    def test_python_websockets_close_code(self) -> Deferred[None]:
        """Python's ``websockets`` closing with 3000 and a reason, to a backend answering 1000."""
        return Deferred.fromCoroutine(self._python_websockets_close())

    def test_chromium(self) -> Deferred[None]:
        """A real headless Chromium page's WebSocket."""
        return Deferred.fromCoroutine(self._chromium())

    def test_node_ws(self) -> Deferred[None]:
        """Node's ``ws`` client."""
        return Deferred.fromCoroutine(self._node_ws())

    def test_python_websockets(self) -> Deferred[None]:
        """Python's asyncio ``websockets`` client."""
        return Deferred.fromCoroutine(self._python_websockets())


async def run_client_script(case: ProxyTestCase, name: str, argv: list[str],
                            env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a client script to its end and return its JSON result line."""
    return await client_result(case, spawn(case, name, argv, env=env))


async def client_result(case: ProxyTestCase, child: Child) -> dict[str, Any]:
    """The JSON result line of a client script, once it has ended (checking its exit code agrees)."""
    name = child.name
    child = await wait_exit(case, child, CLIENT_GUARD)
    lines = child.out.decode(errors="replace").strip().splitlines()
    try:
        result = cast(dict[str, Any], json.loads(lines[-1]))
    except (IndexError, ValueError):
        case.fail(f"{name} printed no result line\n{child.describe()}")
    case.assertEqual(child.exit_code, 0 if not result.get("errors") else 1, child.describe())
    return result


async def ensure_node_ws(case: ProxyTestCase) -> None:
    """Install ``ws`` into tests/interop/node_modules unless it is there (so once per checkout)."""
    if (INTEROP / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SkipTest("ws is not installed in tests/interop and there is no npm (apt-get install npm)")
    argv = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(INTEROP)]
    child = await wait_exit(case, spawn(case, "npm install", argv, cwd=INTEROP), INSTALL_GUARD)
    if child.exit_code != 0:
        case.fail(f"npm install failed\n{child.describe()}")


class TunnelInteropTests(InteropTests, ProxyTestCase):
    mode = "tunnel"


class SessionInteropTests(InteropTests, ProxyTestCase):
    mode = "session"
