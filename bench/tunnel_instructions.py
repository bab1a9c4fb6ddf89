"""Instructions per echoed WebSocket message through a tunnel-mode rubrisproxy under callgrind: a steady measure.

A raw origin (a child process: it answers the upgrade with a 101, then sends back every byte) behind
``twistd rubrisproxy --websocket tunnel`` run under ``valgrind --tool=callgrind`` (counting only while the load
runs), and one client in this process playing ping-pong with ``--size``-byte masked frames: each message is one read
from the client and one from the origin at the proxy, none coalesced (the path's worst case per byte). The count
divided by the messages is the proxy's user-space instructions per echoed message.

    python bench/tunnel_instructions.py [--messages 20000] [--size 32] [--compare DIR]
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import callgrind_total, python_path_env, twistd_command  # noqa: E402
from http_bench import ROOT, free_port  # noqa: E402

#: The origin: answers an upgrade with a 101, then echoes bytes.
ORIGIN = r"""
import base64, hashlib, socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(64)
print(server.getsockname()[1], flush=True)
def serve(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(4096)
        if not data:  # a health check's connection
            conn.close()
            return
        head += data
    key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(65536)
        if not data:
            conn.close()
            return
        conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def wait_port(port: int, timeout: float = 300.0) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def ping_pong(port: int, messages: int, size: int) -> None:
    """One WebSocket through the proxy: ``messages`` frames sent one at a time, each echo awaited."""
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    client.sendall(b"GET /chat HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += client.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = os.urandom(size)
    frame = (bytes((0x82, 0x80 | size)) if size < 126 else bytes((0x82, 0x80 | 126)) + size.to_bytes(2, "big"))
    frame += b"\x00\x00\x00\x00" + payload  # a zero mask: the payload as it is
    for _ in range(messages):
        client.sendall(frame)
        got = 0
        while got < len(frame):
            got += len(client.recv(65536))
    client.close()


def measure(root: str, origin_port: int, tmp: str, messages: int, size: int) -> float:
    """Instructions per echoed message of the tunnel from checkout ``root``."""
    port = free_port()
    out = os.path.join(tmp, f"callgrind.{abs(hash(root))}")
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p",
               *twistd_command(), "-n", "--pidfile=", "--logfile", os.path.join(tmp, "proxy.log"), "rubrisproxy",
               "--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", f"127.0.0.1:{origin_port}",
               "--access-log", "off", "--websocket", "tunnel"]
    process = subprocess.Popen(command, env=python_path_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        ping_pong(port, 200, size)  # warm up
        subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True)
        ping_pong(port, messages, size)
        subprocess.run(["callgrind_control", "-i", "off", str(process.pid)], check=True, capture_output=True)
    finally:
        process.terminate()
        process.wait(120)
    total = callgrind_total(out)
    return total / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--compare", default="", help="another checkout, measured the same way")
    args = parser.parse_args()
    if not 1 <= args.size <= 0xFFFF or args.messages < 1:
        parser.error("--size 1..65535, --messages at least 1")
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN], stdout=subprocess.PIPE, text=True)
    try:
        assert origin.stdout is not None
        origin_port = int(origin.stdout.readline())
        figures = {}
        with tempfile.TemporaryDirectory() as tmp:
            for tree in [ROOT] + ([os.path.abspath(args.compare)] if args.compare else []):
                figures[tree] = measure(tree, origin_port, tmp, args.messages, args.size)
                print(f"{tree}: {figures[tree] / 1000:.2f} k instructions per echoed {args.size}-byte message",
                      flush=True)
        if args.compare:
            print(f"ratio this / compared: {figures[ROOT] / figures[os.path.abspath(args.compare)]:.3f}x")
    finally:
        origin.kill()
        origin.wait()


if __name__ == "__main__":
    main()
