"""Shared state through Redis: a ``sharing.StateTransport`` for several proxy nodes.

Each change is written where a node that (re)connects finds it (a server's admin state in one hash; a stick or
sid entry in a key that expires with it) and published on one channel every node subscribes to. Two
connections: one for commands, one subscribed. Nothing waits on Redis: changes are written as they come
(pipelined, their replies counted and dropped); while Redis is away they wait in a bounded queue, oldest dropped
first. When Redis is back (both connections up again) the node resynchronises: it reads the admin states
(the later of each pair wins, and its own later ones are written back), sends what waited, then reads the
entries other nodes wrote meanwhile (keeping those it has no entry for). An outage is logged once when it
begins and once when it ends.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..config import RedisAddress
from ..sharing import Change, Kind, StateReceiver
from ._guard import guarded
from ._link import Link, LinkState, endpoint_for
from ._resp import RedisConnection, RedisError, Reply

#: Changes kept while Redis is away (the oldest dropped beyond), and commands sent but not yet answered
#: beyond which new changes are dropped (Redis too slow): each bounds what an outage or a stall can hold.
MAX_QUEUED, MAX_PENDING = 10_000, 10_000
#: A resync reads at most this many entries, a page of this many at a time.
MAX_RESYNC_ENTRIES, RESYNC_PAGE = 200_000, 500
#: Lookups in flight at once (more are not asked: the request goes on as if the answer were "none"), and how long
#: one may take before it is taken as "none".
MAX_LOOKUPS, LOOKUP_TIMEOUT = 64, 0.25
#: The longest stick key or sid a change may carry (a longer one from Redis is ignored).
MAX_KEY = 4096
PREFIX = b"rubrisproxy:"


class RedisTransport:
    """Changes carried between nodes through the Redis at ``address`` (``sharing.StateTransport``)."""

    log = Logger()

    def __init__(self, reactor: IReactorTime, address: RedisAddress, node: str) -> None:
        self.address = address
        self.node = node
        self._reactor = reactor
        self._channel = PREFIX + b"%d:changes" % address.db  # channels span databases: the name carries it
        self._servers = PREFIX + b"servers"
        self._entries = PREFIX + b"e:"
        self._receiver: StateReceiver | None = None
        self._queue: deque[Change] = deque()
        self._ready: RedisConnection | None = None  # the command connection, once resynchronised
        self._subscribed: RedisConnection | None = None  # the subscriber connection, once its SUBSCRIBE is answered
        self._reached = False  # Redis has been reached once (its first time is logged)
        self._down_since: float | None = None  # when the outage logged began
        self.published = self.received = self.dropped = self.lookups = 0
        self._asking = 0  # lookups in flight
        endpoint = endpoint_for(reactor, address)
        self._commands = Link(reactor, endpoint, self._commands_up, self._link_down)
        self._subscriber = Link(reactor, endpoint, self._subscriber_up, self._subscriber_down, self._message)

    def attach(self, receiver: StateReceiver) -> None:
        self._receiver = receiver

    def start(self) -> None:
        self._commands.start()
        self._subscriber.start()

    def stop(self) -> None:
        self._ready = None
        self._commands.stop()
        self._subscriber.stop()

    @property
    def connected(self) -> bool:
        return self._ready is not None

    def describe(self) -> dict[str, Any]:
        """What the admin API shows of the cluster."""
        return {"redis": str(self.address), "node": self.node, "connected": self.connected,
                "published": self.published, "received": self.received, "dropped": self.dropped,
                "lookups": self.lookups,
                "queued": len(self._queue)}

    def publish(self, change: Change) -> None:
        connection = self._ready
        if connection is None:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(change)
        elif connection.pending >= MAX_PENDING:
            self.dropped += 1
        else:
            self._send(connection, change)

    def lookup(self, kind: Kind, backend: str, key: bytes, answer: Callable[[Change | None], None]) -> bool:
        connection = self._ready
        if connection is None or self._asking >= MAX_LOOKUPS or kind is Kind.SERVER or kind is Kind.CLIENT:
            return False
        self._asking += 1
        self.lookups += 1

        def done(reply: Reply) -> None:
            self._asking -= 1
            decoded = decode_change(reply) if isinstance(reply, bytes) else None
            answer(decoded[1] if decoded is not None and decoded[1].kind is kind else None)

        connection.command(b"GET", self._entry_key(Change(kind, backend, key, "")),
                           callback=guarded(self._reactor, LOOKUP_TIMEOUT, done, None))
        return True

    def _send(self, connection: RedisConnection, change: Change) -> None:
        payload = encode_change(self.node, change)
        published = (b"PUBLISH", self._channel, payload)
        if change.kind is Kind.CLIENT:  # a session's word is for the proxies that hold it now: not kept
            connection.commands(published)
        elif change.kind is Kind.SERVER:
            connection.commands((b"HSET", self._servers, server_field(change), payload), published)
        else:
            connection.commands(
                (b"SET", self._entry_key(change), payload, b"PX", b"%d" % max(1, int(change.expire * 1000))), published)
        self.published += 1

    def _entry_key(self, change: Change) -> bytes:
        return self._entries + b"%s:%s:%s" % (change.kind.value.encode(), change.backend.encode(), change.key)

    def _commands_up(self, connection: RedisConnection) -> None:
        if self.address.db:
            connection.command(b"SELECT", b"%d" % self.address.db)
        self._resync()

    def _subscriber_up(self, connection: RedisConnection) -> None:
        connection.command(b"SUBSCRIBE", self._channel, callback=lambda reply: self._subscribed_to(connection, reply))

    def _subscribed_to(self, connection: RedisConnection, reply: Reply) -> None:
        if isinstance(reply, RedisError):
            connection.close()  # reconnected, as any failure
            return
        self._subscribed = connection
        self._resync()

    def _subscriber_down(self, why: str) -> None:
        self._subscribed = None
        self._link_down(why)

    def _link_down(self, why: str) -> None:
        self._ready = None
        if self._down_since is None:
            self._down_since = self._reactor.seconds()
            self.log.warn("cluster: node {node}: Redis at {address} is unreachable ({why}); serving from local state,"
                          " reconnecting", node=self.node, address=str(self.address), why=why)

    def _resync(self) -> None:
        """Once both connections are up: the admin states compared, what waited sent, others' entries read."""
        connection = self._commands.connection
        if (connection is None or self._commands.state is not LinkState.UP or self._ready is not None
                or self._subscribed is None):
            return
        connection.command(b"HGETALL", self._servers, callback=lambda reply: self._admin_states(connection, reply))
        while self._queue:
            self._send(connection, self._queue.popleft())
        self._ready = connection
        self._scan(connection, b"0", 0)
        if not self._reached:
            self._reached = True
            self.log.info("cluster: node {node} shares state through Redis at {address}", node=self.node,
                          address=str(self.address))
        if self._down_since is not None:
            self.log.info("cluster: node {node}: Redis at {address} is reachable again after {seconds:.1f}s;"
                          " resynchronised", node=self.node, address=str(self.address),
                          seconds=self._reactor.seconds() - self._down_since)
            self._down_since = None

    def _admin_states(self, connection: RedisConnection, reply: Reply) -> None:
        if self._receiver is None or not isinstance(reply, list):
            return
        found: dict[bytes, Change] = {}
        for payload in reply[1::2]:
            change = decode_change(payload) if isinstance(payload, bytes) else None
            if change is not None and change[1].kind is Kind.SERVER:
                found[server_field(change[1])] = change[1]
                self._receiver.apply(change[1])
        for mine in self._receiver.admin_states():
            theirs = found.get(server_field(mine))
            if (theirs is None or theirs.at < mine.at) and connection is self._ready:
                self._send(connection, mine)

    def _scan(self, connection: RedisConnection, cursor: bytes, seen: int) -> None:
        connection.command(b"SCAN", cursor, b"MATCH", self._entries + b"*", b"COUNT", b"%d" % RESYNC_PAGE,
                           callback=lambda reply: self._scanned(connection, reply, seen))

    def _scanned(self, connection: RedisConnection, reply: Reply, seen: int) -> None:
        if (not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[0], bytes)
                or not isinstance(reply[1], list) or connection is not self._ready):
            return
        cursor, keys = reply
        if keys:
            connection.command(b"MGET", *keys, callback=self._entries_read)
        seen += len(keys)
        if cursor != b"0" and seen < MAX_RESYNC_ENTRIES:
            self._scan(connection, cursor, seen)

    def _entries_read(self, reply: Reply) -> None:
        if self._receiver is None or not isinstance(reply, list):
            return
        for payload in reply:
            change = decode_change(payload) if isinstance(payload, bytes) else None
            if change is not None and change[1].kind in (Kind.STICK, Kind.SID):
                self._receiver.apply(change[1], only_new=True)

    def _message(self, channel: bytes, payload: bytes) -> None:
        decoded = decode_change(payload)
        if decoded is None or decoded[0] == self.node or self._receiver is None:
            return
        self.received += 1
        self._receiver.apply(decoded[1])


def server_field(change: Change) -> bytes:
    """The admin-state hash's field for a SERVER change: ``backend/server``."""
    return change.backend.encode() + b"/" + change.key


def encode_change(node: str, change: Change) -> bytes:
    """A change as JSON, with the node that made it."""
    return json.dumps({"n": node, "k": change.kind.value, "b": change.backend, "key": change.key.decode("latin-1"),
                       "v": change.value, "w": change.weight, "e": change.expire, "t": change.at},
                      separators=(",", ":")).encode()


def decode_change(payload: bytes) -> tuple[str, Change] | None:
    """The node and change a payload carries; None if it is not one (anything else in Redis is ignored)."""
    try:
        data = json.loads(payload)
        node, kind, backend, key, value = data["n"], Kind(data["k"]), data["b"], data["key"], data["v"]
        weight, expire, at = data["w"], data["e"], data["t"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not (isinstance(node, str) and isinstance(backend, str) and isinstance(key, str) and len(key) <= MAX_KEY
            and isinstance(value, str) and isinstance(weight, int) and isinstance(expire, (int, float))
            and isinstance(at, (int, float)) and math.isfinite(expire) and math.isfinite(at)):
        return None  # json reads NaN and Infinity: a change stamped Infinity would win over every later one
    try:
        raw = key.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return node, Change(kind, backend, raw, value, weight, float(expire), float(at))


__all__ = ["RedisError", "RedisTransport", "decode_change", "encode_change"]
