"""A real python-socketio client that reconnects, for tests:
``python -m tests.eio.reconnect URL [polling|polling-idle]``.

Connects with the default transports (long polling, then the WebSocket upgrade), or with long
polling only when given ``polling`` (it then also emits ``whoami`` every 100 ms while connected,
so its POSTs meet the server's loss too) or ``polling-idle`` (it then only sits in its long poll),
with reconnection on, and prints one line per event, flushed as it happens::

    ON <server>             connected (and upgraded); <server> answered ``whoami``
    DISCONNECTED <reason>   the client noticed its connection was gone
    BACK <server> <transport>  reconnected; <server> answered ``whoami``
    ERROR <text>            something failed (the process then exits)

Always exits 0, within about 20 s (a watchdog prints ``ERROR timed out`` and exits).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import socketio

DEADLINE = 20.0
CALL_TIMEOUT = 5.0
UPGRADE_WAIT = 5.0
EMIT_EVERY = 0.1


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def upgraded(client: socketio.Client, polling: bool) -> str:
    deadline = time.monotonic() + UPGRADE_WAIT
    while not polling and client.transport() != "websocket" and time.monotonic() < deadline:
        time.sleep(0.02)
    return client.transport()


def emitting(client: socketio.Client, connected: threading.Event) -> None:
    """Emit ``whoami`` (with an ack) every 100 ms while connected, for as long as the process runs."""
    while True:
        if connected.is_set():
            try:
                client.emit("whoami", callback=lambda *_: None)
            except Exception:  # a client between sessions refuses emits: the next round tries again
                pass
        time.sleep(EMIT_EVERY)


def run(url: str, mode: str) -> None:
    polling = mode.startswith("polling")
    client = socketio.Client(
        reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.5, randomization_factor=0,
        request_timeout=CALL_TIMEOUT, handle_sigint=False,
    )
    connected = threading.Event()

    @client.event
    def connect() -> None:
        connected.set()

    @client.event
    def disconnect(reason: object = None) -> None:
        connected.clear()
        say(f"DISCONNECTED {reason}")

    client.connect(url, wait_timeout=CALL_TIMEOUT, transports=["polling"] if polling else None)
    upgraded(client, polling)
    say(f"ON {client.call('whoami', timeout=CALL_TIMEOUT)}")
    if mode == "polling":
        threading.Thread(target=emitting, args=(client, connected), daemon=True).start()
    while connected.is_set():
        time.sleep(0.01)
    if not connected.wait(DEADLINE):
        say("ERROR never reconnected")
        return
    transport = upgraded(client, polling)
    say(f"BACK {client.call('whoami', timeout=CALL_TIMEOUT)} {transport}")
    client.disconnect()


def main(argv: list[str]) -> int:
    def give_up() -> None:
        say(f"ERROR timed out after {DEADLINE} s")
        os._exit(0)

    watchdog = threading.Timer(DEADLINE, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        run(argv[1], argv[2] if len(argv) > 2 else "")
    except Exception as exc:
        say(f"ERROR {type(exc).__name__}: {exc}")
    watchdog.cancel()
    os._exit(0)  # no waiting on the client's leftover background threads


if __name__ == "__main__":
    main(sys.argv)
