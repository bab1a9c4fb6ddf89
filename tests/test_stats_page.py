"""The admin stats page in a real headless Chromium: its numbers match the API, and its drain button works."""

from __future__ import annotations

import base64
import itertools
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall

from .browser import deferLater, start_devtools
from .helpers import RawClient, get
from .test_admin import AdminCase
from .test_metrics import MetricsCase
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

CELL = 'document.querySelector(\'table[data-backend="default"] tr[data-server="{server}"] td.{column}\')'
GUARD = 10.0  # seconds a page may take to show something
MARKUP = "<img src=x onerror=window.pwned=1>"


class StatsPageTests(AdminCase):
    def test_page_matches_the_api_and_drains_a_server(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._page())

    async def _page(self) -> None:
        client = connect_client(self.proxy_port, "/")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        await client.opened
        client.sendMessage(b"hello")
        await client.wait_messages(1)
        (first,) = [f"s{i + 1}" for i, echo in enumerate(self.echoes) if echo.open]
        browser = await start_devtools(self)
        await browser.open_page(f"http://127.0.0.1:{self.admin_port}/")
        cell = CELL.format(server=first, column="sessions")
        shown = await self.until(browser, f"{cell} && {cell}.textContent", "the page shows the servers")
        code, backend = await self.call(b"GET", "/backends/default")
        api = {s["name"]: s for s in backend["servers"]}
        self.assertEqual(shown, str(api[first]["sessions"]))
        self.assertEqual(shown, "1")
        for column in ("active", "total", "weight"):
            value = await browser.evaluate(f"{CELL.format(server=first, column=column)}.textContent")
            self.assertEqual(value, str(api[first][column]), column)
        frontend = await browser.evaluate(
            "document.querySelector('#frontends tr[data-frontend=\"default\"] td.websockets').textContent"
        )
        self.assertEqual(frontend, "1")
        await browser.evaluate(
            f'document.querySelector(\'table[data-backend="default"] tr[data-server="{first}"] '
            f'button[data-action="drain"]\').click()'
        )
        state = CELL.format(server=first, column="state")
        await self.until(browser, f"{state}.textContent === 'drain'", "the page shows the drain")
        code, backend = await self.call(b"GET", "/backends/default")
        self.assertEqual({s["name"]: s["state"] for s in backend["servers"]}[first], "drain")
        await self.until(browser, f"{CELL.format(server=first, column='sessions')}.textContent === '0'",
                         "the session has moved")
        shot = await browser.command("Page.captureScreenshot", format="png")
        path = Path(self.mktemp()).with_suffix(".png")
        path.write_bytes(base64.b64decode(shot["data"]))
        self.assertGreater(path.stat().st_size, 1000)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        client.sendClose(1000)
        await client.closed

    async def until(self, browser, expression: str, what: str) -> object:  # type: ignore[no-untyped-def]
        """Poll the page until ``expression`` is truthy (bounded); its value."""
        value = await browser.until(expression, GUARD)
        if not value:
            self.fail(f"the page never showed {what}: {json.dumps(value)}")
        return value


class LivePageTests(MetricsCase):
    """The page under real traffic: an origin answering 2xx/4xx/5xx, a deny route, a dead server, a request moved
    to another server, and a WebSocket session that moves when its server drains."""

    def document(self, origin: int, dead: int) -> dict[str, Any]:
        document = super().document(origin, dead)
        self.echoes = [EchoBackendFactory() for _ in range(2)]
        ports = []
        for factory in self.echoes:
            listener = listen_echo_backend(factory)
            self.addCleanup(listener.stopListening)
            ports.append(listener.getHost().port)
        document["frontends"]["web"]["routes"].insert(0, {"websocket": True, "backend": "ws"})
        document["frontends"]["web"]["routes"].append({"header": "X-Tag", "value": MARKUP, "deny": 403})
        document["backends"]["ws"] = {
            "servers": [{"name": f"w{i + 1}", "address": f"127.0.0.1:{port}"} for i, port in enumerate(ports)],
            "websocket": {"mode": "session"}, "health": {"check": "none"},
        }
        return document

    def test_the_page_shows_servers_routes_and_sessions_under_traffic(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._live())

    async def _live(self) -> None:
        await self.traffic()
        client = connect_client(self.proxy_port, "/")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        await client.opened
        client.sendMessage(b"hello")
        await client.wait_messages(1)
        load = self.background_load()
        browser = await start_devtools(self)
        await browser.open_page(f"http://127.0.0.1:{self.admin_port}/")
        row = 'document.querySelector(\'table[data-backend="{backend}"] tr[data-server="{server}"]\')'
        a1, d1, p1 = (row.format(backend=b, server=s) for b, s in (("app", "a1"), ("dead", "d1"), ("pair", "p1")))
        await self.until(browser, f"{a1} && {a1}.querySelector('td.check').textContent === 'passed'", "a1's check")
        self.assertEqual(await browser.evaluate(f"{d1}.className"), "down")
        self.assertEqual(await browser.evaluate(f"{d1}.querySelector('td.check').textContent"), "failed")
        self.assertIn("cannot connect", await browser.evaluate(f"{d1}.querySelector('td.check').title"))
        self.assertRegex(await browser.evaluate(f"{a1}.querySelector('td.latency').textContent"), r"^\d+(\.\d+)? ms$")
        self.assertEqual(await browser.evaluate(f"{a1}.querySelector('td.maxconn').textContent"), "50")
        for column in ("retries", "redispatches", "failures"):
            self.assertEqual(await browser.evaluate(f"{p1}.querySelector('td.{column}').textContent"), "1", column)
        frontend = 'document.querySelector(\'#frontends tr[data-frontend="web"] td.{}\').textContent'
        self.assertEqual(await browser.evaluate(frontend.format("listen")), f"127.0.0.1:{self.proxy_port}")
        self.assertRegex(await browser.evaluate(frontend.format("r4xx")), r"^\d+ \(1\)$")  # the deny: the proxy's own
        routes = await browser.evaluate(
            "[...document.querySelectorAll('#routes tbody tr')].map(r => r.cells[2].textContent + ' -> ' "
            "+ r.cells[3].textContent)"
        )
        self.assertEqual(routes, ["websocket -> backend ws", "path-prefix /deny -> deny 403",
                                  "header X-Pair -> backend pair", "path-prefix /dead -> backend dead",
                                  f"header X-Tag = {MARKUP} -> deny 403", "otherwise -> backend app"])
        # What the configuration says is shown as text, never run as markup.
        self.assertEqual(await browser.evaluate("[document.querySelectorAll('img').length, window.pwned]"), [0, None])
        code, listed = await self.admin_json("/sessions")
        (session,) = listed["sessions"]
        shown = f'document.querySelector(\'#sessions tr[data-session="{session["id"]}"] td.server\')'
        self.assertEqual(await self.until(browser, f"{shown} && {shown}.textContent", "the session"), session["server"])
        live = "document.querySelector('#ws-summary span[data-count=\"{}\"] b').textContent"
        self.assertEqual(await browser.evaluate(live.format("live")), "1")
        self.assertIn(f"pid {os.getpid()}", await browser.evaluate("document.getElementById('info').textContent"))
        csv_text = await browser.evaluate("fetch('stats.csv').then(r => r.text())")
        self.assertTrue(csv_text.startswith("# pxname,svname,"))
        await self.until(browser, f"Number({frontend.format('rate')}) > 0", "a request rate")
        await browser.command("Emulation.setDeviceMetricsOverride", width=1700, height=1200, deviceScaleFactor=1,
                              mobile=False)
        await deferLater(1.1)  # a refresh at that size
        shot = await browser.command("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        png = base64.b64decode(shot["data"])
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        Path(self.mktemp()).with_suffix(".png").write_bytes(png)
        if os.environ.get("RUBRISPROXY_SHOTS"):  # where an operator wants to look at it
            Path(os.environ["RUBRISPROXY_SHOTS"], "stats-under-traffic.png").write_bytes(png)
        # A drain moves the session; the page shows it resumed on the other server.
        server = session["server"]
        await browser.evaluate(f"{row.format(backend='ws', server=server)}.querySelector("
                               "'button[data-action=\"drain\"]').click()")
        await self.until(browser, f"{live.format('resumed')} === '1'", "the resume")
        self.assertNotEqual(await browser.evaluate(f"{shown}.textContent"), server)
        load.stop()
        client.sendClose(1000)
        await client.closed

    def background_load(self) -> LoopingCall:
        """Requests every 20 ms on fresh connections (2xx and 4xx by turns) until stopped or the test ends."""
        clients: list[RawClient] = []
        paths = itertools.cycle([b"/status/200", b"/status/200", b"/status/404"])

        def one() -> None:
            client = RawClient()
            clients.append(client)
            connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client).addCallback(
                lambda _: client.send(get(next(paths), b"Connection: close\r\n")))

        load = LoopingCall(one)
        load.start(0.02)

        def stop() -> None:
            if load.running:
                load.stop()
            for client in clients:
                if client.transport is not None and client.transport.connected:
                    client.transport.abortConnection()

        self.addCleanup(stop)
        return load

    async def admin_json(self, path: str) -> tuple[int, Any]:
        response, body = await self.admin(path)
        return response.code, json.loads(body)

    until = StatsPageTests.until
