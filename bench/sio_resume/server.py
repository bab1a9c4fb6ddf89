"""A python-socketio server for bench/sio_resume.py: ``python server.py NAME PORT``.

aiohttp (no eventlet), Socket.IO at /socket.io/ on 127.0.0.1:PORT; every ``tick`` event is
acknowledged with NAME (so the client knows who served it); prints ``READY`` once listening and
exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import socketio
from aiohttp import web


async def serve(name: str, port: int) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False)

    @sio.event
    async def tick(sid: str, data: object = None) -> str:
        return name

    app = web.Application()
    sio.attach(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
