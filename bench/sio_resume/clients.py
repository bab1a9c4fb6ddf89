"""N python-socketio AsyncClients in one process, for bench/sio_resume.py.

``python clients.py URL N INTERVAL_MS SECONDS [--transports polling,websocket]``

Each client connects (long polling, then the WebSocket upgrade, unless --transports says
otherwise; reconnection on with python-socketio's defaults: 1 s first delay, ±50% jitter, up to
5 s), then emits ``tick`` with an ack every INTERVAL_MS for SECONDS, then waits 3 s for late acks.
Prints ``READY`` once every client is connected and has been acknowledged once, then one JSON
object at the end with, per client: ``server`` (who acked first), ``sent``, ``acked``, ``skipped``
(emits refused because the client was between sessions), ``gap`` (longest time between acks,
or from the last ack to the end of the emitting, seconds), ``disconnects`` and ``connects`` (time.monotonic() stamps, comparable with the parent's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import socketio

LATE_ACKS_S = 3.0


class One:
    """One client and what it saw."""

    def __init__(self, url: str, transports: list[str]) -> None:
        self.url = url
        self.transports = transports
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # keeps HAProxy's cookie
        self.sio = socketio.AsyncClient(http_session=self.http, handle_sigint=False)
        self.sent = self.acked = self.skipped = 0
        self.server: str | None = None
        self.last_ack: float | None = None
        self.longest_gap = 0.0
        self.disconnects: list[float] = []
        self.connects: list[float] = []
        self.first_ack = asyncio.Event()
        self.sio.on("connect", self._connected)
        self.sio.on("disconnect", self._disconnected)

    async def _connected(self) -> None:
        self.connects.append(time.monotonic())

    async def _disconnected(self, reason: object = None) -> None:
        self.disconnects.append(time.monotonic())

    def _ack(self, name: str) -> None:
        now = time.monotonic()
        self.acked += 1
        self.server = self.server or name
        if self.last_ack is not None:
            self.longest_gap = max(self.longest_gap, now - self.last_ack)
        self.last_ack = now
        self.first_ack.set()

    async def start(self) -> None:
        await self.sio.connect(self.url, transports=self.transports, wait_timeout=30)
        await self.emit()

    async def emit(self) -> None:
        try:
            await self.sio.emit("tick", self.sent, callback=self._ack)
            self.sent += 1
        except socketio.exceptions.SocketIOError:
            self.skipped += 1

    async def run(self, interval: float, until: float) -> None:
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() >= until:
                if self.last_ack is not None:  # a client that has not been acknowledged since: its gap so far
                    self.longest_gap = max(self.longest_gap, until - self.last_ack)
                return
            await self.emit()

    def report(self) -> dict[str, Any]:
        return {"server": self.server, "sent": self.sent, "acked": self.acked, "skipped": self.skipped,
                "gap": round(self.longest_gap, 4), "disconnects": self.disconnects, "connects": self.connects}


async def main(args: argparse.Namespace) -> None:
    transports = args.transports.split(",")
    clients = [One(args.url, transports) for _ in range(args.clients)]
    for batch in range(0, len(clients), 20):  # 20 at a time: a relay's accept queue is no part of the test
        await asyncio.gather(*(c.start() for c in clients[batch:batch + 20]))
    await asyncio.wait_for(asyncio.gather(*(c.first_ack.wait() for c in clients)), 30)
    for c in clients:
        c.longest_gap, c.last_ack = 0.0, None  # gaps count from the measured run on
    print("READY", time.monotonic(), flush=True)
    until = time.monotonic() + args.seconds
    await asyncio.gather(*(c.run(args.interval_ms / 1000, until) for c in clients))
    await asyncio.sleep(LATE_ACKS_S)
    print(json.dumps([c.report() for c in clients]), flush=True)
    for c in clients:
        c.sio.reconnection = False
    await asyncio.gather(*(c.sio.disconnect() for c in clients), return_exceptions=True)
    await asyncio.gather(*(c.http.close() for c in clients), return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("clients", type=int)
    parser.add_argument("interval_ms", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--transports", default="polling,websocket")
    asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
