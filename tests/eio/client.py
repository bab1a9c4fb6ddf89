"""A real python-socketio client for tests: ``python -m tests.eio.client URL COUNT``.

Connects with the default transports (long polling first, then the WebSocket upgrade),
waits for the upgrade, calls ``whoami`` COUNT times and prints one JSON line::

    {"connected": bool, "transport": str, "names": [...], "sid": str|null, "error": str|null,
     "sio_sid": str|null, "polling_servers": [...], "websocket_server": str|null, "requests": [...]}

``sid`` is the Engine.IO session id (the ``sid=`` of the query strings), ``sio_sid`` the
Socket.IO namespace one; ``polling_servers`` holds the ``X-Eio-Server`` header of each
polling response, ``websocket_server`` that of the WebSocket handshake response, and
``requests`` each polling request as ``METHOD path?query``.
Always exits 0, within about 20 s (a watchdog prints what it has and exits).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import socketio

DEADLINE = 20.0  # seconds for the whole run
UPGRADE_WAIT = 5.0
CALL_TIMEOUT = 5.0
SERVER_HEADER = "X-Eio-Server"  # set by tests.eio.server on every response


class Report:
    """The one JSON line, printed once, whoever finishes first."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {
            "connected": False,
            "transport": "",
            "names": [],
            "sid": None,
            "error": None,
            "sio_sid": None,
            "polling_servers": [],
            "websocket_server": None,
            "requests": [],
        }
        self._lock = threading.Lock()
        self._done = False

    def emit(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            sys.stdout.write(json.dumps(self.data) + "\n")
            sys.stdout.flush()


def recording_session(report: Report) -> requests.Session:
    """A requests session that notes each polling request and which server answered it."""
    session = requests.Session()

    def hook(response: requests.Response, *args: object, **kwargs: object) -> None:
        url = urlsplit(response.request.url or "")
        report.data["requests"].append(f"{response.request.method} {url.path}?{url.query}")
        report.data["polling_servers"].append(response.headers.get(SERVER_HEADER))

    session.hooks["response"].append(hook)
    return session


def run(url: str, count: int, report: Report) -> None:
    client = socketio.Client(
        reconnection=False,
        request_timeout=CALL_TIMEOUT,
        http_session=recording_session(report),
        handle_sigint=False,
    )
    try:
        client.connect(url, wait_timeout=CALL_TIMEOUT)
        report.data["connected"] = client.connected
        report.data["sid"] = client.eio.sid
        report.data["sio_sid"] = client.get_sid()
        deadline = time.monotonic() + UPGRADE_WAIT
        while client.transport() != "websocket" and time.monotonic() < deadline:
            time.sleep(0.05)
        report.data["transport"] = client.transport()
        ws = client.eio.ws
        headers = (ws.getheaders() or {}) if ws is not None else {}
        report.data["websocket_server"] = headers.get(SERVER_HEADER.lower())
        for _ in range(count):
            report.data["names"].append(client.call("whoami", timeout=CALL_TIMEOUT))
    except Exception as exc:  # reported, never raised: the caller reads the JSON
        report.data["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        report.data["transport"] = report.data["transport"] or client.transport() or ""
        try:
            client.disconnect()
        except Exception:
            pass


def main(argv: list[str]) -> int:
    report = Report()
    if len(argv) != 3:
        report.data["error"] = "usage: python -m tests.eio.client URL COUNT"
        report.emit()
        return 0

    def give_up() -> None:
        report.data["error"] = report.data["error"] or f"timed out after {DEADLINE} s"
        report.emit()
        os._exit(0)

    watchdog = threading.Timer(DEADLINE, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        run(argv[1], int(argv[2]), report)
    except Exception as exc:
        report.data["error"] = report.data["error"] or f"{type(exc).__name__}: {exc}"
    watchdog.cancel()
    report.emit()
    sys.stdout.flush()
    os._exit(0)  # no waiting on the client's leftover background threads


if __name__ == "__main__":
    main(sys.argv)
