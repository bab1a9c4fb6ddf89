"""A WebSocket client on the ``websockets`` library that sends numbered messages for a while, driven by
tests/test_upgrade_process.py (a live upgrade happens meanwhile).

Usage: python websockets_numbered.py ws://HOST:PORT/PATH SECONDS

Sends "N" (N = 0, 1, 2...) every 20 ms for SECONDS, checks each echo arrives once and in order, then closes with
1000. Prints one JSON line: sent, echoed, the numbers lost, duplicated or out of order, the largest gap
between two echoes (seconds), and the close code; exits 0 when nothing was lost, duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import connect

EVERY = 0.02


async def run(url: str, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"sent": 0, "echoed": 0, "errors": [], "gap": 0.0}
    async with connect(url, ping_interval=None, open_timeout=10, close_timeout=10) as ws:
        echoed: list[int] = []
        last = time.monotonic()

        async def reader() -> None:
            nonlocal last
            async for message in ws:
                now = time.monotonic()
                result["gap"] = max(result["gap"], now - last)
                last = now
                echoed.append(int(message))

        reading = asyncio.ensure_future(reader())
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await ws.send(str(result["sent"]))
            result["sent"] += 1
            await asyncio.sleep(EVERY)
        for _ in range(200):  # the last echoes
            if len(echoed) >= result["sent"]:
                break
            await asyncio.sleep(0.02)
        await ws.close(1000)
        await asyncio.wait_for(reading, 10)
        result["close"] = ws.close_code
    result["echoed"] = len(echoed)
    if echoed != list(range(result["sent"])):
        result["errors"].append(f"echoes out of order, lost or duplicated: {len(echoed)} of {result['sent']}")
    return result


def main() -> int:
    try:
        result = asyncio.run(run(sys.argv[1], float(sys.argv[2])))
    except Exception as e:  # noqa: BLE001 - reported as the result, for the test to show
        result = {"errors": [f"{type(e).__name__}: {e}"]}
    print(json.dumps(result))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
