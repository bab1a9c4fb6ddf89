"""A real python-socketio server for tests: ``python -m tests.eio.server NAME``.

Listens on 127.0.0.1 on a free port, prints ``PORT <n>`` once listening, answers the
``whoami`` event with NAME through the ack, tags every HTTP response (polling and the
WebSocket handshake) with ``X-Eio-Server: NAME``, and exits cleanly on SIGTERM/SIGINT.

In the namespaces ``/`` and ``/chat`` it prints ``CONNECT <namespace> <auth as JSON> <X-Rubris-Session>``
for each connection (the auth payload its connect handler saw, the proxy's session header) and
answers the ``tick`` event with NAME through the ack. ``EIO_PING_INTERVAL`` (seconds, in the environment)
(whole seconds) sets its Engine.IO ping interval and timeout (python-socketio's defaults: 25 s and 20 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import socketio
from aiohttp import web

SERVER_HEADER = "X-Eio-Server"


NAMESPACES = ("/", "/chat")


def _connect_handler(namespace: str):  # type: ignore[no-untyped-def]
    async def connect(sid: str, environ: dict[str, object], auth: object = None) -> None:
        session = environ.get("HTTP_X_RUBRIS_SESSION", "-")
        print(f"CONNECT {namespace} {json.dumps(auth, separators=(',', ':'))} {session}", flush=True)

    return connect


def _tick_handler(name: str):  # type: ignore[no-untyped-def]
    async def tick(sid: str, data: object = None) -> str:
        return name

    return tick


def make_app(name: str) -> web.Application:
    """The aiohttp application serving Socket.IO at the default ``/socket.io/`` path."""
    heartbeat: dict[str, int] = {}
    if os.environ.get("EIO_PING_INTERVAL"):
        heartbeat["ping_interval"] = heartbeat["ping_timeout"] = int(os.environ["EIO_PING_INTERVAL"])
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False,
                               **heartbeat)

    @sio.event
    async def whoami(sid: str, data: object = None) -> str:
        return name

    for namespace in NAMESPACES:
        sio.on("connect", _connect_handler(namespace), namespace=namespace)
        sio.on("tick", _tick_handler(name), namespace=namespace)

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
