"""A python-socketio client that emits with acks, for failover tests: ``python -m tests.eio.emitter URL [upgrade]``.

Connects over the WebSocket transport only (with ``upgrade``: long polling first, then the upgrade, which
python-socketio makes before it joins its namespaces), to the namespaces ``/`` and ``/chat`` with the auth payload
``{"token": "secret-1"}``, and emits ``tick`` every 100 ms, alternating namespaces, each with an ack
callback (``tests.eio.server`` acks with its name). Prints one line per event, flushed::

    ON <server>               connected to both namespaces; the first ack came from <server>
    MOVED <server>            the first ack from another server
    DISCONNECTED <namespace>  the client saw a disconnect (what a seamless move must not cause)
    DONE <json>               {"emitted": n, "acked": n, "unacked": [seq, ...], "servers": {...},
                               "sid": eio sid at the start, "sid_after": at the end, "sids": {ns: [start, end]}}
    ERROR <text>

It stops emitting 1.5 s after MOVED (or after DEADLINE - 5 s without one), then prints DONE once every emit has
its ack, or once those still missing are all older than the move (in flight to a server that was lost: never
acked) and no ack came for LATE_ACKS; at most SETTLE after it stopped. Always exits 0, within about 35 s.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import socketio

DEADLINE = 25.0
AFTER_MOVE = 1.5  # seconds of emitting on the new server
LATE_ACKS = 2.0  # seconds without an ack after which the missing ones, older than the move, count as lost
SETTLE = 8.0  # seconds at most for the acks after the emits stopped: a guard (a loaded machine answers late)
GUARD = 15.0  # seconds at most to join the namespaces and for the first ack: guards, never waits
NAMESPACES = ["/", "/chat"]
AUTH = {"token": "secret-1"}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Emitter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.emitted = 0
        self.acked: set[int] = set()
        self.servers: dict[str, int] = {}
        self.first: str | None = None
        self.moved_at: float | None = None
        self.moved_seq: int | None = None  # the first emit made after the move was seen
        self.last_ack = time.monotonic()
        self.first_ack = threading.Event()

    def acked_by(self, seq: int, server: str) -> None:
        with self.lock:
            self.acked.add(seq)
            self.last_ack = time.monotonic()
            self.servers[server] = self.servers.get(server, 0) + 1
            if self.first is None:
                self.first = server
                self.first_ack.set()
            elif server != self.first and self.moved_at is None:
                self.moved_at = time.monotonic()
                self.moved_seq = self.emitted
                say(f"MOVED {server}")

    def settled(self) -> bool:
        """Every emit acked, or the missing acks all of emits older than the move and none came for LATE_ACKS."""
        with self.lock:
            missing = [n for n in range(self.emitted) if n not in self.acked]
            return not missing or (self.moved_seq is not None and missing[-1] < self.moved_seq
                                   and time.monotonic() - self.last_ack > LATE_ACKS)


def run(url: str, upgrade: bool) -> None:
    client = socketio.Client(reconnection=False, handle_sigint=False)
    emitter = Emitter()
    for namespace in NAMESPACES:
        client.on("disconnect", lambda *args, ns=namespace: say(f"DISCONNECTED {ns}"), namespace=namespace)
    transports = ["polling", "websocket"] if upgrade else ["websocket"]
    client.connect(url, transports=transports, namespaces=NAMESPACES, auth=AUTH, wait_timeout=GUARD)
    sid = client.eio.sid
    sids = {ns: [client.get_sid(ns)] for ns in NAMESPACES}
    started = time.monotonic()
    seq = 0
    while time.monotonic() - started < DEADLINE - LATE_ACKS - 3:
        namespace = NAMESPACES[seq % 2]
        client.emit("tick", seq, namespace=namespace,
                    callback=lambda server, seq=seq: emitter.acked_by(seq, server))
        emitter.emitted = seq = seq + 1
        if seq == 1:
            emitter.first_ack.wait(GUARD)
            say(f"ON {emitter.first}")
        moved = emitter.moved_at
        if moved is not None and time.monotonic() - moved > AFTER_MOVE:
            break
        time.sleep(0.1)
    stopped = time.monotonic()
    while not emitter.settled() and time.monotonic() - stopped < SETTLE:
        time.sleep(0.05)
    with emitter.lock:
        unacked = [n for n in range(emitter.emitted) if n not in emitter.acked]
        report = {
            "emitted": emitter.emitted, "acked": len(emitter.acked), "unacked": unacked, "servers": emitter.servers,
            "sid": sid, "sid_after": client.eio.sid, "connected": client.connected, "transport": client.transport(),
            "sids": {ns: [*sids[ns], client.get_sid(ns)] for ns in NAMESPACES},
        }
    say("DONE " + json.dumps(report))
    client.disconnect()


def main(argv: list[str]) -> int:
    def give_up() -> None:
        say(f"ERROR timed out after {DEADLINE} s")
        os._exit(0)

    watchdog = threading.Timer(DEADLINE + SETTLE + 2, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        run(argv[1], argv[2:] == ["upgrade"])
    except Exception as exc:
        say(f"ERROR {type(exc).__name__}: {exc}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
