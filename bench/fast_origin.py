"""A minimal keep-alive origin for benchmarks whose subject is the proxy: every request (a GET without a body) is
answered with the same small response, read and written with asyncio and no HTTP library, so the origin costs far
less per request than the proxy it serves.

    python bench/fast_origin.py PORT
"""

from __future__ import annotations

import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"
CLOSING = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, world\n"


class Origin(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        count = self.pending.count(b"\r\n\r\n")
        if count:
            if b"connection: close" in self.pending.lower():  # a relay passing a client's close on
                self.transport.write(CLOSING)
                self.transport.close()
                return
            self.pending = self.pending[self.pending.rindex(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * count)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Origin, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
