"""A hostile probe of the workers' shared Engine.IO sids, not a benchmark: made-up sids against ``--workers 2``.

Starts two python-socketio servers (``tests/eio/server.py``) and this checkout's rubrisproxy with two workers in front
of them (``twistd -n rubrisproxy --workers 2``, from a temporary directory with ``PYTHONPATH`` set to the checkout),
all on 127.0.0.1. Eight keep-alive connections then send ``--requests`` polling requests in all, each with a sid
nobody made (a worker asks its sibling about each, within its budget, then balances it; the server answers 400),
while the admin API's ``GET /workers`` is timed every 50 ms. Afterwards 24 Socket.IO JavaScript clients
(``tests/interop/socketio_many.js``, needs node and ``npm ci --prefix tests/interop``) must each keep one server
across polling and their upgrade. Prints the statuses, the slowest admin answer, the workers' states and the
clients' outcome.

    python bench/probe_sids.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNECTIONS = 8
GUARD = 60.0  # seconds: the most any step may take


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(name: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-m", "tests.eio.server", name], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline().split()[1])


def poll_many(port: int, count: int, statuses: dict[int, int]) -> None:
    """``count`` polling requests with made-up sids on one keep-alive connection; their statuses counted."""
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as connection:
        reader = connection.makefile("rb")
        for _ in range(count):
            sid = secrets.token_urlsafe(15)
            connection.sendall(f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: probe\r\n\r\n"
                               .encode())
            status, length = int(reader.readline().split()[1]), 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            statuses[status] = statuses.get(status, 0) + 1


def start_proxy(tmp: str, servers: tuple[int, int]) -> tuple[subprocess.Popen[str], int, int]:
    """This checkout's proxy with two workers in front of ``servers``: its process, its port and its admin port."""
    proxy_port, admin_port = free_port(), free_port()
    config = os.path.join(tmp, "proxy.toml")
    with open(config, "w") as f:
        f.write(f'[frontends.web]\nlisten = ["tcp:{proxy_port}:interface=127.0.0.1"]\nbackend = "app"\n'
                f'[admin]\nlisten = ["tcp:{admin_port}:interface=127.0.0.1"]\n'
                f'[access-log]\npath = "{os.path.join(tmp, "access.log")}"\n'
                f'[[backends.app.servers]]\nname = "s1"\naddress = "127.0.0.1:{servers[0]}"\n'
                f'[[backends.app.servers]]\nname = "s2"\naddress = "127.0.0.1:{servers[1]}"\n')
    log_path = os.path.join(tmp, "proxy.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
             "rubrisproxy", "--config", config, "--workers", "2"],
            cwd=tmp, env=dict(os.environ, PYTHONPATH=ROOT), stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + GUARD
    while "all 2 workers serving" not in open(log_path).read():
        if time.monotonic() > deadline or process.poll() is not None:
            process.terminate()
            sys.exit("the proxy did not start:\n" + open(log_path).read()[-2000:])
        time.sleep(0.1)
    return process, proxy_port, admin_port


def flood(proxy_port: int, admin_port: int, requests: int) -> None:
    """Made-up sids from :data:`CONNECTIONS` connections, the admin API timed meanwhile."""
    statuses: dict[int, int] = {}
    admin_times: list[float] = []
    done = threading.Event()

    def time_admin() -> None:
        while not done.is_set():
            began = time.monotonic()
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/workers", timeout=GUARD).read()
            admin_times.append(time.monotonic() - began)
            done.wait(0.05)

    timer = threading.Thread(target=time_admin)
    timer.start()
    began = time.monotonic()
    floods = [threading.Thread(target=poll_many, args=(proxy_port, requests // CONNECTIONS, statuses))
              for _ in range(CONNECTIONS)]
    for each in floods:
        each.start()
    for each in floods:
        each.join(GUARD)
    took = time.monotonic() - began
    done.set()
    timer.join(GUARD)
    print(f"{sum(statuses.values())} requests with made-up sids in {took:.1f} s: statuses {statuses}; "
          f"GET /workers answered {len(admin_times)} times meanwhile, the slowest in "
          f"{max(admin_times, default=0) * 1000:.0f} ms")
    workers = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/workers", timeout=GUARD).read())
    print("workers:", ", ".join(f"{w['index']} {w['state']} (unresponsive {w.get('unresponsive', 0)})"
                                for w in workers["workers"]))


def clients_after(proxy_port: int) -> None:
    """24 Socket.IO JavaScript clients, each of which must keep one server through polling and its upgrade."""
    node = subprocess.run(["node", os.path.join(ROOT, "tests", "interop", "socketio_many.js"),
                           f"http://127.0.0.1:{proxy_port}", "24"], capture_output=True, text=True, timeout=GUARD)
    if node.returncode != 0 or not node.stdout.strip():
        print("Socket.IO clients not run (node and npm ci --prefix tests/interop):", node.stderr[-300:])
        return
    report = json.loads(node.stdout.splitlines()[-1])
    bad = [c for c in report if c["error"] or c["transport"] != "websocket" or c["polling"] != c["websocket"]]
    print(f"then {len(report)} Socket.IO JavaScript clients: {len(report) - len(bad)} kept one server through"
          f" polling and their upgrade; {bad[:3] if bad else 'none failed'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    options = parser.parse_args()
    started: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            (one, port_one), (two, port_two) = start_server("A"), start_server("B")
            started += [one, two]
            proxy, proxy_port, admin_port = start_proxy(tmp, (port_one, port_two))
            started.append(proxy)
            flood(proxy_port, admin_port, options.requests)
            clients_after(proxy_port)
        finally:
            for process in reversed(started):
                process.terminate()
            for process in started:
                process.wait(timeout=GUARD)


if __name__ == "__main__":
    main()
