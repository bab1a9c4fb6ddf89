"""RESP2, the Redis protocol, as much as the cluster uses: commands written as arrays of bulk strings, replies
read incrementally, and the ``message`` pushes of a subscribed connection."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import ITCPTransport, ITransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

#: A reply: bytes (simple and bulk strings), an int, None (a null), a list of replies, or a RedisError.
Reply = object
#: A connection is closed when one reply outgrows this (the cluster's replies are a page of keys at most).
MAX_REPLY = 16 << 20


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


def encode(*args: bytes) -> bytes:
    """A command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse(buffer: bytes, at: int) -> tuple[Reply, int]:
    """The reply starting at ``at``, and where the next begins; raises _Incomplete, or ValueError if it is not
    RESP."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise _Incomplete
    kind, line, after = buffer[at:at + 1], buffer[at + 1:end], end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        return _bulk(buffer, int(line), after)
    if kind == b"*":
        return _array(buffer, int(line), after)
    raise ValueError(f"not a RESP reply: {buffer[at:at + 16]!r}")


def _bulk(buffer: bytes, size: int, at: int) -> tuple[Reply, int]:
    if size < 0:
        return None, at
    if len(buffer) < at + size + 2:
        raise _Incomplete
    return buffer[at:at + size], at + size + 2


def _array(buffer: bytes, count: int, at: int) -> tuple[Reply, int]:
    if count < 0:
        return None, at
    items = []
    for _ in range(count):
        item, at = parse(buffer, at)
        items.append(item)
    return items, at


class RedisConnection(Protocol):
    """One connection to Redis: commands pipelined, each reply handed to its command's callback (or dropped),
    in order. On a subscribed connection, ``message`` pushes go to ``on_message(channel, payload)``."""

    def __init__(self, on_message: Callable[[bytes, bytes], None] | None = None) -> None:
        self._on_message = on_message
        self._buffer = b""
        self._waiting: deque[Callable[[Reply], None] | None] = deque()
        self.on_lost: Callable[[RedisConnection, Failure], None] | None = None

    def makeConnection(self, transport: ITransport) -> None:
        self._out = transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)  # small commands, sent as they come
        super().makeConnection(transport)

    @property
    def pending(self) -> int:
        """Commands sent and not answered yet."""
        return len(self._waiting)

    def command(self, *args: bytes, callback: Callable[[Reply], None] | None = None) -> None:
        """Send a command; ``callback`` gets its reply."""
        self._waiting.append(callback)
        self._out.write(encode(*args))

    def commands(self, *commands: tuple[bytes, ...]) -> None:
        """Send commands in one write, their replies dropped."""
        self._waiting.extend(None for _ in commands)
        self._out.write(b"".join(encode(*args) for args in commands))

    def close(self) -> None:
        self._out.loseConnection()

    def abort(self) -> None:
        """Close at once, whatever is unsent (the peer does not read)."""
        if ITCPTransport.providedBy(self._out):
            self._out.abortConnection()
        else:
            self._out.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while at < len(buffer):
            try:
                reply, at = parse(buffer, at)
            except _Incomplete:
                break
            except ValueError:
                self._out.loseConnection()
                return
            self._reply(reply)
        self._buffer = buffer[at:]
        if len(self._buffer) > MAX_REPLY:
            self._out.loseConnection()

    def _reply(self, reply: Reply) -> None:
        if (self._on_message is not None and isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"
                and isinstance(reply[1], bytes) and isinstance(reply[2], bytes)):
            self._on_message(reply[1], reply[2])
            return
        callback = self._waiting.popleft() if self._waiting else None
        if callback is not None:
            callback(reply)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008 - Twisted's default
        self._waiting.clear()
        if self.on_lost is not None:
            self.on_lost(self, reason)
