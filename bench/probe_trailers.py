"""What real clients get from each proxy when an origin's chunked response ends in an odd or malformed trailer section.

Runs ``probe_http.py``'s raw origin with its ``trailer: ...`` responses (a 2-byte chunk, then the last chunk and the
trailer section the name says) and, with ``--big``, the same sections after a 1 MB chunk (the response head has gone
out before the trailers come: no proxy can answer 502 any more). In front of it: this checkout's rubrisproxy, each
``--compare DIR``'s, and HAProxy. Per case and proxy: ``curl --raw -sv`` (its exit code, whether the chunked body
ended with its last chunk) and Python's ``http.client`` (the body length read, or the exception), then a second
request on the same ``http.client`` connection (``reused`` or why not).

    python bench/probe_trailers.py [--compare DIR]... [--big] [--only SUBSTRING]...
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from probe_http import RESPONSES, TRAILED, Origin, start_proxies  # noqa: E402

BIG = TRAILED.replace(b"2\r\nok\r\n", b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20)))


def curl(port: int, path: str) -> str:
    """curl's verdict: the status, its exit code and how the raw body ended (its last chunk, trailers relayed after
    it, or neither: cut)."""
    done = subprocess.run(["curl", "--raw", "-sv", "-m", "5", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, check=False)
    status = re.search(rb"< HTTP/1\.1 (\d+)", done.stderr)
    body = done.stdout
    ended = ("0CRLF CRLF" if body.endswith(b"\r\n0\r\n\r\n") else "trailers" if b"\r\n0\r\n" in body[-150_000:]
             else "cut")
    code = status.group(1).decode() if status else "-"
    return f"{code} exit {done.returncode} {ended if code == '200' else ''}"


def python_client(port: int, path: str) -> str:
    """http.client's verdict on the response, then on a second request over the same connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        try:
            verdict = f"{response.status} {len(response.read())} B"
        except http.client.HTTPException as e:
            return f"{response.status} {type(e).__name__}"
        try:
            connection.request("GET", "/next")
            again = connection.getresponse()
            again.read()
            return f"{verdict}, next {again.status}"
        except (OSError, http.client.HTTPException) as e:
            return f"{verdict}, next {type(e).__name__}"
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--compare", action="append", default=[], help="another checkout's rubrisproxy beside")
    parser.add_argument("--big", action="store_true", help="a 1 MB chunk before the last one")
    parser.add_argument("--only", action="append", default=[], help="run only the cases whose name contains this")
    args = parser.parse_args()
    names = [name for name in RESPONSES if name.startswith("trailer: ")
             and (not args.only or any(part in name for part in args.only))]
    if args.big:
        for name in names:
            RESPONSES[name] = BIG + RESPONSES[name][len(TRAILED):]
    origin = Origin()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proxies = start_proxies(tmp, origin, args.haproxy, processes)
            for index, root in enumerate(args.compare):
                os.mkdir(other := os.path.join(tmp, str(index)))
                label, port = start_proxies(other, origin, "", processes, os.path.abspath(root))[0]
                proxies.insert(1 + index, (f"{label} {os.path.basename(os.path.abspath(root))}", port))
            width = max(len(name) for name in names)
            for name in names:
                path = "/r/" + name.replace(" ", "%20")
                for index, (label, port) in enumerate(proxies):
                    print(f"{name[9:] if index == 0 else '':{width - 9}}  {label:18s} curl {curl(port, path):26s}"
                          f" http.client {python_client(port, path)}")
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
