"""A ``websockets`` client with its keepalive on, driven by tests/test_ws_keepalive.py.

Usage: python websockets_keepalive.py ws://HOST:PORT/PATH PING_INTERVAL PING_TIMEOUT WAIT

Sends "before" and checks its echo, then stays connected for WAIT seconds while the
library's own keepalive pings (every PING_INTERVAL s, giving up after PING_TIMEOUT s
without a pong, closing with 1011), then sends "after", checks its echo and closes
with 4001 "done". The test moves the session to another server meanwhile. Prints one
JSON result line on stdout; exits 0 when all checked out.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from websockets.asyncio.client import connect
from websockets_client import report  # this directory is the script's: sys.path[0]


async def exchange(url: str, interval: float, timeout: float, wait: float, result: dict[str, Any]) -> None:
    errors: list[str] = result["errors"]
    async with connect(url, ping_interval=interval, ping_timeout=timeout, open_timeout=10, close_timeout=10) as ws:
        for text, pause in (("before", wait), ("after", 0.0)):
            await ws.send(text)
            echo = await ws.recv()
            if echo != text:
                errors.append(f"sent {text!r}, got {echo!r} back")
            await asyncio.sleep(pause)
        result["latency"] = ws.latency  # of the last keepalive pong: > 0 once one came back
        await ws.close(4001, "done")
        rcvd = ws.protocol.close_rcvd
        result["close"] = {"code": rcvd.code if rcvd else None, "reason": rcvd.reason if rcvd else None}


def main() -> int:
    url, interval, timeout, wait = sys.argv[1], *(float(arg) for arg in sys.argv[2:5])
    result: dict[str, Any] = {"errors": [], "close": None, "latency": None}
    return report(result, exchange(url, interval, timeout, wait, result))

if __name__ == "__main__":
    sys.exit(main())
