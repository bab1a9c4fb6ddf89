"""Bounded memory while streaming: a large download to a slow reader and a large upload to a slow origin.

Runs rubrisproxy (twistd, its own process) in front of a local origin, then at once:
  download: the origin sends SIZE bytes; the client reads them at RATE bytes/s;
  upload:   the client sends SIZE bytes as fast as it can; the origin reads at RATE bytes/s.
Samples the proxy's RSS twice a second and prints its baseline and peak.

    python bench/memory_bench.py [--size-mib 1024] [--rate-mib 1]    (the full run takes SIZE/RATE seconds)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import threading
import time

from harness import free_port, python_path_env, twistd_command

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BLOCK = 65536


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise SystemExit("connection closed before the head ended")
        data += chunk
    return data


def paced_recv(conn: socket.socket, total: int, rate: float, already: int = 0) -> int:
    """Receive ``total`` bytes at about ``rate`` bytes/s."""
    received, start = already, time.monotonic()
    while received < total:
        chunk = conn.recv(min(BLOCK, total - received))
        if not chunk:
            break
        received += len(chunk)
        ahead = received / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    return received


def origin(listener: socket.socket, size: int, rate: float, results: dict[str, int]) -> None:
    """Serve every connection: GET /download streams SIZE bytes; POST /upload is read slowly. Connections that
    send no request (the proxy's health checks) are closed."""
    block = b"d" * BLOCK
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_one, args=(conn, size, rate, block, results), daemon=True).start()


def serve_one(conn: socket.socket, size: int, rate: float, block: bytes, results: dict[str, int]) -> None:
    try:
        head = read_head(conn)
    except SystemExit:  # a health check's connection: no request
        conn.close()
        return
    body_start = len(head.split(b"\r\n\r\n", 1)[1])
    if head.startswith(b"GET"):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        while sent < size:
            n = min(BLOCK, size - sent)
            conn.sendall(block[:n])
            sent += n
        results["origin_sent"] = sent
    else:
        results["origin_received"] = paced_recv(conn, size, rate, body_start)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    conn.close()


def download(port: int, size: int, rate: float, results: dict[str, int]) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"GET /download HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = read_head(conn)
    results["downloaded"] = paced_recv(conn, size, rate, len(head.split(b"\r\n\r\n", 1)[1]))
    conn.close()


def upload(port: int, size: int, results: dict[str, int]) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
    block, sent = b"u" * BLOCK, 0
    while sent < size:
        n = min(BLOCK, size - sent)
        conn.sendall(block[:n])
        sent += n
    results["uploaded"] = sent
    results["upload_status"] = int(read_head(conn).split()[1])
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mib", type=float, default=1.0)
    args = parser.parse_args()
    size, rate = args.size_mib << 20, args.rate_mib * (1 << 20)
    results: dict[str, int] = {}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    threading.Thread(target=origin, args=(listener, size, rate, results), daemon=True).start()
    port = free_port()
    proxy = subprocess.Popen(
        [*twistd_command(), "-n", "--pidfile=", "--logfile=/dev/null",
         "rubrisproxy", "--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", f"127.0.0.1:{listener.getsockname()[1]}",
         "--timeout", "server=1h", "--timeout", "client=1h"],
        env=python_path_env(ROOT),
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        baseline = rss_mib(proxy.pid)
        print(f"relaying {args.size_mib} MiB each way at {args.rate_mib} MiB/s through rubrisproxy (pid {proxy.pid}); "
              f"baseline RSS {baseline:.1f} MiB", flush=True)
        clients = [threading.Thread(target=download, args=(port, size, rate, results)),
                   threading.Thread(target=upload, args=(port, size, results))]
        for client in clients:
            client.start()
        peak, started = baseline, time.monotonic()
        while any(client.is_alive() for client in clients):
            peak = max(peak, rss_mib(proxy.pid))
            elapsed = time.monotonic() - started
            if int(elapsed) % 60 == 0:
                print(f"  {elapsed:6.0f}s  RSS {rss_mib(proxy.pid):6.1f} MiB  peak {peak:6.1f} MiB", flush=True)
            time.sleep(0.5)
        print(f"done in {time.monotonic() - started:.0f}s: downloaded {results.get('downloaded', 0)} of {size} bytes, "
              f"origin received {results.get('origin_received', 0)} of {size} uploaded (status {results.get('upload_status')})")
        print(f"proxy RSS: baseline {baseline:.1f} MiB, peak {peak:.1f} MiB (limit 100 MiB): "
              f"{'PASS' if peak < 100 else 'FAIL'}")
    finally:
        proxy.terminate()
        proxy.wait(10)


if __name__ == "__main__":
    main()
