"""Persistent (keep-alive) connections to origin servers."""

from __future__ import annotations

from collections import defaultdict

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from ..backend import Server
from ..config import PoolSettings
from ..settings import LiveSettings
from ._connection import OriginConnection
from ._connector import OriginConnector


class ConnectionPool:
    """Hands out origin connections, reusing idle keep-alive ones per server.

    Idle connections are kept most-recently-used first, at most
    ``max_idle_per_server`` per server, each closed after ``idle_timeout`` unused
    (``pool_settings``: those it started with; they change at a restart). A released
    connection that is not reusable, or is pinned, is closed instead.
    """

    def __init__(
        self, connector: OriginConnector, clock: IReactorTime, pool_settings: PoolSettings, settings: LiveSettings
    ) -> None:
        self.connector = connector
        self.clock = clock
        self.pool_settings = pool_settings
        self.settings = settings
        self._idle: dict[tuple[object, ...], list[OriginConnection]] = defaultdict(list)
        self.in_use: set[OriginConnection] = set()
        self.connecting = 0
        self.created = 0
        self.reuses = 0
        self.upgraded = 0

    @property
    def server_timeout(self) -> float:
        return self.settings.current.timeouts.server  # read each time: a reload may change it

    @property
    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def take_idle(self, server: Server) -> OriginConnection | None:
        """An idle connection to ``server``, most recently used first, or None."""
        idle = self._idle.get(server.key)
        while idle:
            connection = idle.pop()
            connection.unpark()
            if connection.connected:
                connection.reused = True
                connection.server = server
                self.reuses += 1
                self.in_use.add(connection)
                return connection
        return None

    def connect(self, server: Server) -> defer.Deferred[OriginConnection]:
        """A new connection to ``server``, never an idle one."""
        connection = OriginConnection(server, self, self.clock)
        self.connecting += 1

        def connected(protocol: OriginConnection) -> OriginConnection:
            self.connecting -= 1
            self.created += 1
            self.in_use.add(protocol)
            return protocol

        def failed(reason):
            self.connecting -= 1
            connection.never_connected()
            return reason

        return self.connector.connect(server, connection).addCallbacks(connected, failed)

    def release(self, connection: OriginConnection, reusable: bool) -> None:
        """Take back a connection whose request is finished."""
        self.in_use.discard(connection)
        idle = self._idle[connection.pool_key]
        if not reusable:
            connection.abort()
        elif connection.pinned_to is not None or len(idle) >= self.pool_settings.max_idle_per_server:
            connection.transport.loseConnection()
        else:
            idle.append(connection)
            connection.park(self.pool_settings.idle_timeout)

    def hand_over(self, connection: OriginConnection) -> None:
        """A connection in use becomes something else (a WebSocket): no longer the pool's, still open."""
        self.in_use.discard(connection)
        self.upgraded += 1

    def expire(self, connection: OriginConnection) -> None:
        """An idle connection went unused for ``idle_timeout``."""
        self.forget(connection)
        connection.transport.loseConnection()

    def forget(self, connection: OriginConnection) -> None:
        """A connection closed or is closing: it is no longer the pool's."""
        self.in_use.discard(connection)
        idle = self._idle.get(connection.pool_key)
        if idle and connection in idle:
            idle.remove(connection)
        connection.stop_timer()

    def close_idle(self) -> list[OriginConnection]:
        """Close every idle connection (on shutdown); returns them."""
        closed = [connection for idle in self._idle.values() for connection in idle]
        for connection in closed:
            self.forget(connection)
            connection.transport.loseConnection()
        self._idle.clear()
        return closed
