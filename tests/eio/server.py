"""A real python-socketio server for tests: ``python -m tests.eio.server NAME``.

Listens on 127.0.0.1 on a free port, prints ``PORT <n>`` once listening, answers the
``whoami`` event with NAME through the ack, tags every HTTP response (polling and the
WebSocket handshake) with ``X-Eio-Server: NAME``, and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import socketio
from aiohttp import web

SERVER_HEADER = "X-Eio-Server"


def make_app(name: str) -> web.Application:
    """The aiohttp application serving Socket.IO at the default ``/socket.io/`` path."""
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False)

    @sio.event
    async def whoami(sid: str, data: object = None) -> str:
        return name

    app = web.Application()
    sio.attach(app)

    async def tag(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[SERVER_HEADER] = name

    app.on_response_prepare.append(tag)
    return app


async def serve(name: str) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(name), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.eio.server NAME", file=sys.stderr)
        return 2
    asyncio.run(serve(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
