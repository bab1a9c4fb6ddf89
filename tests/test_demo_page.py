"""The demo page in a real headless Chromium: its WebSocket stays open while the origin serving it is stopped."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from rubrisproxy.config import CommandLine, load_config
from rubrisproxy.service import build_service

from .browser import DevTools, start_devtools
from .helpers import ProxyTestCase

GUARD = 15.0  # seconds a page may take to show something


class DemoPageTests(ProxyTestCase):
    def setUp(self) -> None:
        config = load_config(CommandLine(
            listen=["tcp:0:interface=127.0.0.1"], admin=["tcp:0:interface=127.0.0.1"], access_log="off",
        ))
        self.assertTrue(config.demo)
        service = self.service = build_service(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)  # runs last: after Chromium is gone
        self.proxy_port = service.getServiceNamed("frontend:default").ports[0].getHost().port
        self.admin_port = service.getServiceNamed("admin").ports[0].getHost().port

    def test_websocket_stays_open_while_its_origin_stops(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop_and_move())

    async def _stop_and_move(self) -> None:
        browser = await start_devtools(self)
        await browser.open_page(f"http://127.0.0.1:{self.proxy_port}/")
        await browser.command("Emulation.setDeviceMetricsOverride", width=1000, height=1150, deviceScaleFactor=1,
                              mobile=False)
        first = await self.until(browser, "window.demo && demo.echoed >= 2 && demo.serving", "echoes")
        self.assertIn(first, ("a", "b"))
        stats = await self.until(browser, "document.getElementById('stats').href.startsWith('http') && "
                                          "document.getElementById('stats').href", "the stats link")
        self.assertEqual(stats, f"http://127.0.0.1:{self.admin_port}/")
        self.assertEqual(await browser.evaluate("document.getElementById('socket-state').textContent"), "open")
        await self.screenshot(browser, "before")

        await browser.evaluate("document.getElementById('stop').click()")
        other = await self.until(
            browser, f"demo.serving !== {json.dumps(first)} && demo.moves.length === 1 && demo.serving", "the move")
        self.assertEqual({first, other}, {"a", "b"})
        echoed = await browser.evaluate("demo.echoed")
        await self.until(browser, f"demo.echoed >= {echoed + 3}", "echoes from the other origin")
        state = await browser.evaluate(
            "({closes: demo.closes, ready: demo.socket.readyState, move: demo.moves[0], shown: "
            "document.getElementById('socket-state').textContent, moves: document.getElementById('moves').textContent,"
            " serving: document.getElementById('serving').textContent})")
        self.assertEqual(state["closes"], 0)
        self.assertEqual(state["ready"], 1)  # WebSocket.OPEN: the page's WebSocket never closed
        self.assertEqual(state["shown"], "open")
        self.assertEqual(state["serving"], other)
        self.assertEqual((state["move"]["from"], state["move"]["to"]), (first, other))
        self.assertEqual(state["move"]["resume"], "1")  # the proxy's session moved once
        self.assertIsInstance(state["move"]["gap"], int)
        self.assertIn("did not close", state["moves"])
        origins = {o.name: o for o in self.service.getServiceNamed("demo").origins}
        self.assertEqual(origins[first].state.value, "down")
        self.assertEqual(origins[other].state.value, "up")
        await self.screenshot(browser, "after")

    async def screenshot(self, browser: DevTools, name: str) -> None:
        shot = await browser.command("Page.captureScreenshot", format="png")
        path = Path(self.mktemp()).with_name(f"demo-{name}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    async def until(self, browser: DevTools, expression: str, what: str) -> object:
        """Poll the page until ``expression`` is truthy (bounded); its value."""
        value = await browser.until(expression, GUARD)
        if not value:
            state = await browser.evaluate("JSON.stringify({...window.demo, socket: null})")
            page = await browser.evaluate("location.href + document.readyState + document.body.innerHTML.slice(0, 300)")
            self.fail(f"the page never showed {what}: {json.dumps(value)}; page state: {state} {page}")
        return value
