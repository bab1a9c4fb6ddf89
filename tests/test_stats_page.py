"""The admin stats page in a real headless Chromium: its numbers match the API, and its drain button works."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from twisted.internet.defer import Deferred

from .browser import deferLater, start_devtools
from .test_admin import AdminCase
from .wsecho import connect_client

CELL = 'document.querySelector(\'table[data-backend="default"] tr[data-server="{server}"] td.{column}\')'
GUARD_STEPS = 200  # 10 s in steps of 50 ms


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
        value = None
        for _ in range(GUARD_STEPS):
            value = await browser.evaluate(expression)
            if value:
                return value
            await deferLater(0.05)
        self.fail(f"the page never showed {what}: {json.dumps(value)}")
