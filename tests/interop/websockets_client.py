"""A WebSocket interop client built on the ``websockets`` library, driven by tests/test_ws_interop.py.

Usage: python websockets_client.py ws://HOST:PORT/PATH [CODE:REASON]

It runs in its own process because ``websockets`` is asyncio-based and the tests
run in Twisted's reactor. Sends the four messages every interop client sends
(see EXPECTED in the test), all at once, checks each echo byte for byte and in
order, then closes with 4001 "done" (or CODE and REASON) and waits for the close handshake and the
TCP close. Prints one JSON result line on stdout; exits 0 when all checked out.
The close code that came back is reported, not judged: the test compares it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Coroutine
from typing import Any

import websockets
from websockets.asyncio.client import connect

GUARD = 20.0  # seconds for the whole exchange

MESSAGES: list[str | bytes] = [
    "hello, proxy",
    "gr\u00fc\u00dfe \u2603 \u65e5\u672c\u8a9e \U0001f680 \u00e9t\u00e9",
    bytes(range(256)),
    bytes((i * 31 + 7) & 0xFF for i in range(100_000)),
]


async def exchange(url: str, result: dict[str, Any], code: int = 4001, reason: str = "done") -> None:
    """Send, check the echoes, close."""
    errors: list[str] = result["errors"]
    async with connect(url, ping_interval=None, max_size=1 << 20, open_timeout=10, close_timeout=10) as ws:
        for message in MESSAGES:
            await ws.send(message)
        for index, sent in enumerate(MESSAGES, 1):
            echo = await ws.recv()
            raw = echo.encode() if isinstance(echo, str) else echo
            result["echoes"].append(
                {"binary": isinstance(echo, bytes), "length": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
            )
            if type(echo) is not type(sent):
                errors.append(f"echo {index}: got {type(echo).__name__}, sent {type(sent).__name__}")
            elif echo != sent:
                errors.append(f"echo {index} differs from what was sent")
        await ws.close(code, reason)  # waits for the close frame back and the TCP close
        rcvd = ws.protocol.close_rcvd
        result["close"] = {
            "code": rcvd.code if rcvd else None,
            "reason": rcvd.reason if rcvd else None,
            "clean": rcvd is not None and ws.protocol.close_rcvd_then_sent is False,
            "state": ws.protocol.state.name,
        }
        if rcvd is None:
            errors.append("no close frame came back")
        if ws.protocol.state.name != "CLOSED":
            errors.append(f"state after close is {ws.protocol.state.name}")


def report(result: dict[str, Any], exchange: Coroutine[Any, Any, None]) -> int:
    """Run ``exchange`` under the guard, print ``result`` as the JSON result line; the exit status."""
    result.update({"client": f"python-websockets {websockets.__version__}", "ok": False})
    try:
        asyncio.run(asyncio.wait_for(exchange, GUARD))
    except Exception as error:  # reported, not raised: the test reads the result line
        result["errors"].append(f"{type(error).__name__}: {error}")
    result["ok"] = not result["errors"]
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def main() -> int:
    """Run the exchange and print the result line."""
    result: dict[str, Any] = {"echoes": [], "errors": [], "close": None}
    code, _, reason = sys.argv[2].partition(":") if len(sys.argv) > 2 else ("4001", "", "done")
    return report(result, exchange(sys.argv[1], result, int(code), reason))


if __name__ == "__main__":
    sys.exit(main())
