"""Persistent (keep-alive) connections to origin servers."""

from __future__ import annotations

from collections import defaultdict

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..backend import Server
from ..config import PoolSettings
from ._connection import OriginConnection
from ._connector import OriginConnector


class ConnectionPool:
    """Hands out origin connections, reusing idle keep-alive ones per server.

    Idle connections are kept most-recently-used first, at most
    ``max_idle_per_server`` per server, each closed after ``idle_timeout``.
    A released connection that is not reusable, or pinned, is closed instead.
    """

    log = Logger()

    def __init__(self, connector: OriginConnector, clock: IReactorTime, settings: PoolSettings, server_timeout: float) -> None:
        self.connector = connector
        self.clock = clock
        self.settings = settings
        self.server_timeout = server_timeout
        self._idle: dict[tuple[str, int, bool], list[OriginConnection]] = defaultdict(list)
        self._idle_timers: dict[OriginConnection, IDelayedCall] = {}
        self.in_use: set[OriginConnection] = set()
        self.connecting = 0
        self.created = 0
        self.reuses = 0

    @property
    def idle_count(self) -> int:
        return len(self._idle_timers)

    def acquire(self, server: Server) -> defer.Deferred[OriginConnection]:
        """An idle connection to ``server`` (``reused`` set) or a new one."""
        idle = self._idle.get(server.key)
        while idle:
            connection = idle.pop()
            self._idle_timers.pop(connection).cancel()
            if connection.connected:
                connection.reused = True
                connection.server = server
                self.reuses += 1
                self.in_use.add(connection)
                return defer.succeed(connection)
        return self.connect(server)

    def connect(self, server: Server) -> defer.Deferred[OriginConnection]:
        """A new connection to ``server``, never an idle one."""
        connection = OriginConnection(server, self, self.clock, self.server_timeout)
        self.connecting += 1

        def connected(protocol: OriginConnection) -> OriginConnection:
            self.connecting -= 1
            self.created += 1
            self.in_use.add(protocol)
            return protocol

        def failed(reason):  # type: ignore[no-untyped-def]
            self.connecting -= 1
            return reason

        return self.connector.connect(server, connection).addCallbacks(connected, failed)

    def release(self, connection: OriginConnection, reusable: bool) -> None:
        """Take back a connection whose request is finished."""
        self.in_use.discard(connection)
        idle = self._idle[connection.server.key]
        if not reusable or connection.pinned_to is not None or len(idle) >= self.settings.max_idle_per_server:
            if reusable:
                connection.transport.loseConnection()
            else:
                connection.abort()
            return
        idle.append(connection)
        self._idle_timers[connection] = self.clock.callLater(
            self.settings.idle_timeout, self._expire, connection
        )

    def forget(self, connection: OriginConnection) -> None:
        """A connection closed on its own (idle close by the server, say)."""
        self.in_use.discard(connection)
        timer = self._idle_timers.pop(connection, None)
        if timer is not None:
            if timer.active():
                timer.cancel()
            idle = self._idle.get(connection.server.key)
            if idle and connection in idle:
                idle.remove(connection)

    def close_idle(self) -> None:
        """Close every idle connection (on shutdown)."""
        for idle in list(self._idle.values()):
            for connection in list(idle):
                self.forget(connection)
                connection.transport.loseConnection()
        self._idle.clear()

    def _expire(self, connection: OriginConnection) -> None:
        del self._idle_timers[connection]
        self._idle[connection.server.key].remove(connection)
        connection.transport.loseConnection()
