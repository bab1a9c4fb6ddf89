"""Request-parsing cost: rubrisproxy's llhttp-based parser against twisted.web.http's.

Feeds the same keep-alive requests, one read each, to both and reports microseconds per request.
twisted.web.http parses in pure Python (line by line, then a Request object per request); llhttp is C.

    python bench/parser_compare.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.testing import StringTransport
from twisted.web import http

from rubrisproxy.http import RequestParser

REQUESTS = {
    "small GET": b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "browser GET": (
        b"GET /app/page?id=42&sort=desc HTTP/1.1\r\nHost: example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
        b"Cookie: session=abcdef0123456789; theme=dark\r\nConnection: keep-alive\r\n\r\n"
    ),
    "POST 1 KiB": b"POST /api HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024,
}


class _Discard:
    def request_head(self, head: object) -> None:
        pass

    def request_body(self, data: bytes) -> None:
        pass

    def request_end(self) -> None:
        pass


class _NullRequest(http.Request):
    """A twisted.web request that is parsed fully and answered with nothing."""

    def process(self) -> None:
        self.finish()


def time_rubrisproxy(data: bytes, count: int) -> float:
    parser = RequestParser(_Discard())
    start = time.perf_counter()
    for _ in range(count):
        parser.feed(data)
    return (time.perf_counter() - start) / count * 1e6


def time_twisted(data: bytes, count: int) -> float:
    channel = http.HTTPChannel()
    channel.requestFactory = _NullRequest
    transport = StringTransport()
    channel.makeConnection(transport)
    start = time.perf_counter()
    for _ in range(count):
        channel.dataReceived(data)
        transport.clear()
    elapsed = time.perf_counter() - start
    channel.connectionLost(None)
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100000)
    args = parser.parse_args()
    print(f"{'request':14} {'rubrisproxy (llhttp)':>22} {'twisted.web.http':>18} {'ratio':>7}")
    for name, data in REQUESTS.items():
        ours = time_rubrisproxy(data, args.requests)
        theirs = time_twisted(data, args.requests // 10)
        print(f"{name:14} {ours:19.2f} us {theirs:15.2f} us {theirs / ours:6.1f}x")


if __name__ == "__main__":
    main()
