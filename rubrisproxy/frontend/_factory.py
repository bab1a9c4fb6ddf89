"""The factory for local client connections, and graceful draining of them."""

from __future__ import annotations

from random import Random

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ServerFactory

from ..config import ConfigError, FrontendConfig, resolve_name
from ._connection import ClientConnection
from ._context import Frontend
from ._proxied import ProxiedConnection


class LocalConnectionFactory(ServerFactory):
    """Builds a :class:`ClientConnection` per accepted local (direct client) connection."""

    noisy = False
    protocol = ClientConnection
    builds_without_address = True  # buildProtocol reads no address: a port need not build one (_compat.lean_accepted)

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    def buildProtocol(self, addr: object) -> ClientConnection:
        connection = self.protocol(self.frontend)
        connection.factory = self
        return connection


class ProxiedConnectionFactory(LocalConnectionFactory):
    """Builds a :class:`ProxiedConnection` per connection from a load balancer or proxy."""

    protocol = ProxiedConnection


def connection_factory(frontend: Frontend, protocol: type[ClientConnection] | None = None) -> LocalConnectionFactory:
    """The factory for ``frontend``'s peers: local clients, or proxies; ``protocol``, a user's subclass of the
    kind of connection the peers make, replaces it."""
    factory = ProxiedConnectionFactory(frontend) if frontend.peers.proxied else LocalConnectionFactory(frontend)
    if protocol is not None:
        factory.protocol = protocol
    return factory


def drain(
    frontend: Frontend, grace: float, spread: float, close_code: int, rng: Random | None = None
) -> defer.Deferred[None]:
    """Stop gracefully: in-flight requests finish and WebSockets are closed, within ``grace`` seconds.

    WebSockets are closed (session mode: with ``close_code``, 1001 going away or 1012
    service restart) at random moments over ``spread`` seconds, so their clients do not
    all reconnect at once. Whatever remains after ``grace`` is cut.
    """
    frontend.draining = True
    clock = frontend.clock
    rng = rng or Random()
    for connection in list(frontend.connections):
        connection.drain()
    pending = _close_websockets(frontend, spread, close_code, rng)
    done: defer.Deferred[None] = defer.Deferred()
    deadline = clock.seconds() + grace

    def finish() -> None:
        for call in pending:
            if call.active():
                call.cancel()
        done.callback(None)

    def check() -> None:
        if not frontend.connections and not frontend.websockets:
            finish()
            return
        if clock.seconds() >= deadline:
            _cut(frontend)
            finish()
            return
        clock.callLater(min(0.05, max(0.0, deadline - clock.seconds())), check)

    check()
    return done


def _close_websockets(frontend: Frontend, spread: float, close_code: int, rng: Random) -> list[IDelayedCall]:
    """Close each WebSocket with ``close_code`` at a random moment within ``spread`` seconds; the calls
    still to come."""
    pending = []
    for relay in list(frontend.websockets):  # also those whose client has gone and whose backend has yet to close
        delay = rng.uniform(0, spread) if spread > 0 else 0.0
        if delay:
            pending.append(frontend.clock.callLater(delay, relay.drain, close_code))
        else:
            relay.drain(close_code)
    return pending


def _cut(frontend: Frontend) -> None:
    """The grace is over: abort whatever is still open."""
    for relay in list(frontend.websockets):
        relay.abort()
    for connection in list(frontend.connections):
        connection.transport.abortConnection()


def protocol_class(config: FrontendConfig) -> type[ClientConnection] | None:
    """A frontend's own protocol class, if it names one: a subclass of the connection its peers make."""
    if config.protocol is None:
        return None
    key = f"frontends.{config.name}.protocol"
    cls = resolve_name(key, config.protocol)
    base = ProxiedConnection if config.peers == "proxied" else ClientConnection
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(key, f"{config.protocol} is not a subclass of rubrisproxy.frontend.{base.__name__}")
    return cls
