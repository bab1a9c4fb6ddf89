"""A ``websockets`` client that waits for the proxy to close it, driven by tests/test_ws_clean_close.py.

Usage: python websockets_closed.py ws://HOST:PORT/PATH [TRIGGER]

Opens the WebSocket, sends TRIGGER as a text message if given (an echo backend's command, such as ``drop``), then
reads until the connection is closed, and prints one JSON result line: the close frames received and sent (code and
reason), the exception ``websockets`` raised and what caused it (None after a clean closing handshake and TCP close;
``ConnectionResetError`` when the TCP connection was reset). The verdict is the test's.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

GUARD = 20.0  # seconds for the whole exchange


async def run(url: str, trigger: str, result: dict[str, Any]) -> None:
    async with connect(url, ping_interval=None, open_timeout=10, close_timeout=10) as ws:
        if trigger:
            await ws.send(trigger)
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            result["exception"] = type(closed).__name__
            result["received"] = [closed.rcvd.code, closed.rcvd.reason] if closed.rcvd else None
            result["sent"] = [closed.sent.code, closed.sent.reason] if closed.sent else None
            result["cause"] = type(closed.__cause__).__name__ if closed.__cause__ is not None else None


def main() -> None:
    result: dict[str, Any] = {"client": "websockets", "errors": []}
    try:
        asyncio.run(asyncio.wait_for(run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "", result), GUARD))
    except Exception as error:  # noqa: BLE001 - reported, for the test to show
        result["errors"].append(repr(error))
    print(json.dumps(result), flush=True)
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
