"""A hostile probe of the HTTP/1.x path: malformed and ambiguous requests, malicious origin responses, half-closes.

Starts a raw origin (in this process: it logs the exact bytes of each request it reads and echoes them back; paths
under ``/r/NAME`` make it send the malicious response NAME, ``/early`` makes it answer before reading the body,
``/slow`` after a second), this checkout's rubrisproxy (``twistd -n rubrisproxy``, run from a temporary directory
with ``PYTHONPATH`` set to the checkout, as installed) and, when it is installed, HAProxy (mode http, keep-alive)
in front of it, all on 127.0.0.1. Each case is sent to both proxies on a new connection, each request case followed
by ``GET /next``; a line per case and proxy says what the client got (statuses, closed or not) and what the origin
read (the request lines, in order, per origin connection). ``!`` marks a case where the two proxies' outcomes differ.

    python bench/probe_http.py [--haproxy PATH] [--only SUBSTRING]... [--verbose]

Bounded: every case waits at most a second or two; the whole run takes about two minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from itertools import groupby

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H = b"Host: x\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
C = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
#: A chunked response's head and first chunk, its last chunk and trailer section to follow ("trailer: ..." cases).
TRAILED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
R = lambda path: b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path  # noqa: E731

#: Requests, each followed by NEXT on the same connection.
REQUESTS = {
    "CL.TE": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "TE.CL": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "TE chunked, identity": C.replace(b"chunked", b"chunked, identity") + b"0\r\n\r\n",
    "TE xchunked": C.replace(b"chunked", b"xchunked") + b"0\r\n\r\n",
    "TE space before colon": C.replace(b"Encoding:", b"Encoding :") + b"0\r\n\r\n",
    "TE \\x0b value": C.replace(b"Encoding: ", b"Encoding:\x0b") + b"0\r\n\r\n",
    "TE twice": C.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n") + b"0\r\n\r\n",
    "TE in HTTP/1.0": C.replace(b"1.1", b"1.0") + b"0\r\n\r\n",
    "TE obs-fold": C.replace(b"Encoding: chunked", b"Encoding:\r\n chunked") + b"0\r\n\r\n",
    "CL 1, 1": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nA",
    "CL twice": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nA",
    "CL +1": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nA",
    "CL 0x1": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\nA",
    "chunk size 0x1": C + b"0x1\r\nA\r\n0\r\n\r\n",
    "chunk size -1": C + b"-1\r\nA\r\n0\r\n\r\n",
    "chunk size overflow": C + b"10000000000000001\r\nA\r\n0\r\n\r\n",
    "chunk ext bare LF": C + b"1;a\nA\r\n0\r\n\r\n",
    "chunk no CRLF after data": C + b"1\r\nAXX0\r\n\r\n",
    "trailer naming Content-Length": C + b"1\r\nA\r\n0\r\nContent-Length: 5\r\n\r\n",
    "Connection: content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nGET /",
    "Connection: host": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "Host with userinfo": b"GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n",
    "Host with space inside": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "absolute form, other Host": b"GET http://a.example/p HTTP/1.1\r\nHost: b.example\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "CR in a value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "bare LF line": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n",
    "NUL in the target": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT": b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    "OPTIONS *": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "HTTP/1.2": b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
    "HTTP/3.0": b"GET / HTTP/3.0\r\nHost: x\r\n\r\n",
    "HTTP/1.0 answered with interim responses": b"GET /r/interim%20then%20200 HTTP/1.0\r\n\r\n",
    "Upgrade: foo with a body": b"POST /u HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\nContent-Length: 5\r\n\r\nhello",
    "Upgrade: h2c with a chunked body": (b"POST /u HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                         b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"5\r\nhello\r\n0\r\n\r\n"),
    "WebSocket upgrade with a body": (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                                      b"Content-Length: 5\r\n\r\nhello"),
    "100 KB header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100_000 + b"\r\n\r\n",
    "2000 headers": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 2000 + b"\r\n",
}

#: What the origin answers to GET /r/NAME, each followed by NEXT.
RESPONSES = {
    "CL and TE": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two CLs": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\nabcd",
    "TE gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "TE xchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "TE identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello",
    "status 099": b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nok",
    "status 2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "101 unasked": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nHELLO",
    "204 with CL and a body": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
    "second response in the write": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"),
    "bare CR in a header": b"HTTP/1.1 200 OK\r\nX-A: a\rInjected: 1\r\nContent-Length: 2\r\n\r\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "5000 x 100 Continue": b"HTTP/1.1 100 Continue\r\n\r\n" * 5000 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "interim then 200": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
                         b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "199 with a body": b"HTTP/1.1 199 Odd\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.2 status line": b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "trailer naming CL": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 9\r\n\r\n",
    "trailer naming CL twice": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                                b"Content-Length: 9\r\nContent-Length: 8\r\n\r\n"),
    "trailer with a bad name": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX A: 1\r\n\r\n",
    **{f"trailer: {name}": TRAILED + section for name, section in {
        "none": b"0\r\n\r\n",
        "one": b"0\r\nX-T: 1\r\n\r\n",
        "no colon": b"0\r\nX-T\r\n\r\n",
        "space before colon": b"0\r\nX-T : 1\r\n\r\n",
        "empty name": b"0\r\n: 1\r\n\r\n",
        "obs-fold": b"0\r\nX-T: a\r\n b\r\n\r\n",
        "NUL in value": b"0\r\nX-T: a\x00b\r\n\r\n",
        "NUL in name": b"0\r\nX-\x00T: a\r\n\r\n",
        "bare CR in value": b"0\r\nX-T: a\rb\r\n\r\n",
        "bare LF line": b"0\r\nX-T: a\nX-U: b\r\n\r\n",
        "bare LF end": b"0\r\nX-T: a\n\n",
        "control char in value": b"0\r\nX-T: a\x01b\r\n\r\n",
        "over 64 KiB": b"0\r\n" + b"X-T: %s\r\n" % (b"a" * 1000) * 80 + b"\r\n",
        "one 100 KB line": b"0\r\nX-T: " + b"a" * 100_000 + b"\r\n\r\n",
        "Transfer-Encoding": b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "Content-Length": b"0\r\nContent-Length: 9\r\n\r\n",
        "Content-Length twice": b"0\r\nContent-Length: 9\r\nContent-Length: 8\r\n\r\n",
        "Content-Length x": b"0\r\nContent-Length: x\r\n\r\n",
        "Host": b"0\r\nHost: evil.example\r\n\r\n",
        "Connection: close": b"0\r\nConnection: close\r\n\r\n",
        "after 0;ext=1": b"0;ext=1\r\nX-T: 1\r\n\r\n",
        "0;ext=1, none": b"0;ext=1\r\n\r\n",
        "0;bad ext": b"0;e\x01=1\r\n\r\n",
        "500 of them": b"0\r\n" + b"".join(b"X-T%d: %d\r\n" % (i, i) for i in range(500)) + b"\r\n",
        "a status line": b"0\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    }.items()},
    "negative chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
}

#: Sent, then the write side shut (FIN); no NEXT.
HALF_CLOSES = {
    "request + FIN": R(b"/a"),
    "slow request + 2 pipelined + FIN": R(b"/slow") + R(b"/b") + R(b"/c"),
    "20 pipelined + FIN": b"".join(R(b"/p%d" % i) for i in range(20)),
    "slow request + half a head + FIN": R(b"/slow") + b"GET /b HTTP/1.1\r\nHo",
    "half a body + FIN": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    "whole body, slow + FIN": b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
}


class Origin:
    """A raw HTTP/1.1 origin on a thread: logs each request's bytes by connection, answers as its path says."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.log: list[tuple[int, bytes]] = []
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _read(self, conn: socket.socket, buf: bytes, size: int) -> bytes:
        while len(buf) < size:
            data = conn.recv(65536)
            if not data:
                raise EOFError
            buf += data
        return buf

    def _body(self, conn: socket.socket, buf: bytes, fields: dict[bytes, bytes]) -> tuple[bytes, bytes]:
        """The body its head announces (chunked: as sent, with its framing), and what follows it."""
        if b"chunked" not in fields.get(b"transfer-encoding", b"").lower():
            length = int(fields.get(b"content-length", b"0") or 0)
            buf = self._read(conn, buf, length)
            return buf[:length], buf[length:]
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf = self._read(conn, buf, len(buf) + 1)
            line, _, buf = buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            buf = self._read(conn, buf, size + 2)
            body += line + b"\r\n" + buf[:size + 2]
            buf = buf[size + 2:]
            if size == 0:
                return body, buf

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1] if lines[0].count(b" ") >= 2 else b"/"
                fields = {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines[1:])}
                if target.startswith(b"/early"):  # answered before its body is read, as Node answers a 404
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nearly")
                body, buf = self._body(conn, buf, fields)
                request = head + b"\r\n\r\n" + body
                with self.lock:
                    self.log.append((number, request))
                if target.startswith(b"/r/"):
                    conn.sendall(RESPONSES[target[3:].decode().replace("%20", " ")])
                elif not target.startswith(b"/early"):
                    if target.startswith(b"/slow"):
                        time.sleep(1)
                    answer = b"" if lines[0].startswith(b"HEAD ") else request
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(request), answer))
        except (OSError, EOFError, ValueError, KeyError):
            pass
        finally:
            conn.close()

    def since(self, mark: int) -> list[tuple[int, bytes]]:
        with self.lock:
            return self.log[mark:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if process.poll() is not None:
            sys.exit(f"exited at start: {process.args!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"not listening: {process.args!r}")


def exchange(port: int, data: bytes, half_close: bool, wait: float) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection; what came back within ``wait`` of the last byte, and whether it closed."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(0.1)
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out, last, start = b"", time.monotonic(), time.monotonic()
        while time.monotonic() - last < wait and time.monotonic() - start < 4 * wait:
            try:
                got = s.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return out + b"<reset>", True
            if not got:
                return out, True
            out, last = out + got, time.monotonic()
        return out, False


def collapsed(statuses: list[str]) -> str:
    """``100,100,100,200`` as ``100x3,200``."""
    runs = [(status, len(list(run))) for status, run in groupby(statuses)]
    return ",".join(f"{status}x{count}" if count > 1 else status for status, count in runs) or "-"


def outcome(port: int, origin: Origin, case: tuple[str, bytes, bool], verbose: bool) -> tuple[str, str]:
    """What the client got and what the origin read, for ``case`` (name, bytes, whether to half-close after): the
    line to print, and what two proxies are compared by (the same requests read, whatever connections carried them)."""
    _, data, half_close = case
    mark = len(origin.log)
    out, closed = exchange(port, data, half_close, 1.5 if half_close else 0.6)
    time.sleep(0.1)
    statuses = collapsed([s.decode() for s in re.findall(rb"HTTP/1\.[01] (\d+)", out)])
    seen: dict[int, list[str]] = {}
    for number, request in origin.since(mark):
        seen.setdefault(number, []).append(request.split(b"\r\n", 1)[0].decode("latin-1")[:40])
    origin_side = "; ".join(" | ".join(lines) for lines in seen.values()) or "-"
    client_side = f"client {statuses}{' closed' if closed else ''}"
    line = f"{client_side}  origin read: {origin_side}"
    if verbose:
        line += f"\n{'':14s}client got {out[:300]!r}"
    return line, client_side + repr(sorted(sum(seen.values(), [])))


def start_proxies(tmp: str, origin: Origin, haproxy: str, processes: list[subprocess.Popen[bytes]],
                  root: str = ROOT) -> list[tuple[str, int]]:
    """Start rubrisproxy (``root``'s code) and, if ``haproxy`` exists, HAProxy in front of ``origin``: their (label,
    port)s. Their processes go to ``processes`` as they start, for the caller to terminate."""
    proxies: list[tuple[str, int]] = []
    port = free_port()
    processes.append(subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "rubrisproxy",
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", f"127.0.0.1:{origin.port}"],
        cwd=tmp, env={**os.environ, "PYTHONPATH": root}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_listening(port, processes[-1])
    proxies.append(("rubrisproxy", port))
    if os.path.exists(haproxy):
        port = free_port()
        config = os.path.join(tmp, "haproxy.cfg")
        with open(config, "w") as f:
            f.write("defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n"
                    "    timeout server 30s\n    timeout http-request 10s\n"
                    f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
                    f"backend be\n    server s1 127.0.0.1:{origin.port}\n")
        processes.append(subprocess.Popen([haproxy, "-f", config, "-db"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(port, processes[-1])
        proxies.append(("haproxy", port))
    return proxies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--only", action="append", default=[], help="run only the cases whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="also print the bytes each client got")
    args = parser.parse_args()
    origin = Origin()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proxies = start_proxies(tmp, origin, args.haproxy, processes)
            cases = [(f"request: {name}", data + NEXT, False) for name, data in REQUESTS.items()]
            cases += [(f"response: {name}", R(b"/r/" + name.replace(" ", "%20").encode()) + NEXT, False)
                      for name in RESPONSES]
            cases += [(f"half-close: {name}", data, True) for name, data in HALF_CLOSES.items()]
            width = max(len(name) for name, _, _ in cases)
            for case in cases:
                name = case[0]
                if args.only and not any(part in name for part in args.only):
                    continue
                results = [(label, *outcome(port, origin, case, args.verbose)) for label, port in proxies]
                differ = len({compared for _, _, compared in results}) > 1
                for index, (label, result, _) in enumerate(results):
                    print(f"{'!' if differ and index == 0 else ' '} {name if index == 0 else '':{width}}  "
                          f"{label:11s} {result}")
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
