"""The factory for local client connections, and graceful draining of them."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory

from ._connection import ClientConnection
from ._context import Frontend


class LocalConnectionFactory(ServerFactory):
    """Builds a :class:`ClientConnection` per accepted local (direct client) connection."""

    noisy = False

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def buildProtocol(self, addr: object) -> ClientConnection:
        connection = ClientConnection(self.frontend)
        connection.factory = self
        return connection


def drain(frontend: Frontend, grace: float) -> defer.Deferred[None]:
    """Let in-flight requests finish within ``grace`` seconds, then cut what remains."""
    frontend.draining = True
    for connection in list(frontend.connections):
        connection.drain()
    for relay in list(frontend.websockets):
        relay.drain()  # also those whose client has gone and whose backend has yet to close
    done: defer.Deferred[None] = defer.Deferred()
    clock = frontend.clock
    deadline = clock.seconds() + grace

    def check() -> None:
        if not frontend.connections and not frontend.websockets:
            done.callback(None)
            return
        if clock.seconds() >= deadline:
            for relay in list(frontend.websockets):
                relay.abort()
            for connection in list(frontend.connections):
                connection.transport.abortConnection()
            done.callback(None)
            return
        clock.callLater(min(0.05, max(0.0, deadline - clock.seconds())), check)

    check()
    return done
