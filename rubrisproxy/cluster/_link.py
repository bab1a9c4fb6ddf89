"""One connection to Redis kept up: connected, and reconnected with backoff whenever it fails or is lost."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from ..config import RedisAddress
from ._resp import RedisConnection, Reply

#: Reconnection backoff: the first retry after this, doubling up to the longest; connecting gives up after the
#: timeout (a node waits at most MAX_BACKOFF + CONNECT_TIMEOUT to see Redis back).
FIRST_BACKOFF, MAX_BACKOFF, CONNECT_TIMEOUT = 0.25, 8.0, 5.0
#: An open connection is sent a PING this often; one whose last PING is still unanswered at the next is dropped
#: (a Redis that hangs, or a network that drops packets without a reset, is noticed within twice this).
HEARTBEAT = 5.0


class LinkState(enum.Enum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # until connected and answering PING
    UP = "up"
    WAITING = "waiting"  # to reconnect, after a failure or a loss
    STOPPED = "stopped"


def endpoint_for(reactor: object, address: RedisAddress) -> IStreamClientEndpoint:
    """Where ``address`` is reached: TCP (any address the host name resolves to) or a UNIX socket."""
    if address.path:
        return UNIXClientEndpoint(reactor, address.path, timeout=CONNECT_TIMEOUT)
    return HostnameEndpoint(reactor, address.host, address.port, timeout=CONNECT_TIMEOUT)


class Link:
    """A connection to Redis, reconnected for as long as it runs: ``on_up(connection)`` once each connection is
    made, ``on_down(why)`` each time the link stops being up (a connection lost, or an attempt failed). It logs
    nothing itself: the transport decides what an outage is worth saying."""

    def __init__(self, reactor: IReactorTime, endpoint: IStreamClientEndpoint, on_up: Callable[[RedisConnection], None],
                 on_down: Callable[[str], None], on_message: Callable[[bytes, bytes], None] | None = None) -> None:
        self._reactor = reactor
        self._endpoint = endpoint
        self._on_up = on_up
        self._on_down = on_down
        self._on_message = on_message
        self.state = LinkState.IDLE
        self.connection: RedisConnection | None = None
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None  # the next attempt, or the next heartbeat while up
        self._failures = 0
        self._unanswered = False  # the heartbeat's PING has no answer yet
        self.heartbeat = HEARTBEAT

    def start(self) -> None:
        if self.state is LinkState.IDLE:
            self._connect()

    def stop(self) -> None:
        self.state = LinkState.STOPPED
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        if self.connection is not None:
            self.connection.on_lost = None
            self.connection.close()
            self.connection = None

    def _connect(self) -> None:
        self._retry = None
        self.state = LinkState.CONNECTING
        factory = Factory.forProtocol(lambda: RedisConnection(self._on_message))
        factory.noisy = False  # no "Starting factory" line per attempt: the transport says what an outage is
        attempt = self._attempt = self._endpoint.connect(factory)
        attempt.addCallbacks(self._made, self._failed)

    def _made(self, connection: RedisConnection) -> None:
        self._attempt = None
        if self.state is LinkState.STOPPED:
            connection.close()
            return
        self.connection = connection
        connection.on_lost = self._lost
        # Up once it answers as Redis does: a port that is not Redis's (or a socket connected to itself, which a
        # reconnect to a local port nobody listens on can make) is dropped and retried, as is one that does not
        # answer within the heartbeat (a Redis that hangs still has the kernel accept connections).
        self._unanswered = True
        connection.command(b"PING", callback=lambda reply: self._answered(connection, reply))
        self._retry = self._reactor.callLater(self.heartbeat, self._beat)

    def _answered(self, connection: RedisConnection, reply: Reply) -> None:
        if connection is not self.connection or self.state is not LinkState.CONNECTING:
            return
        if reply != b"PONG":
            connection.close()
            return
        self.state, self._failures, self._unanswered = LinkState.UP, 0, False
        self._on_up(connection)

    def _beat(self) -> None:
        connection = self.connection
        if connection is None or self.state not in (LinkState.UP, LinkState.CONNECTING):
            return
        if self._unanswered:
            self.connection = None
            connection.on_lost = None
            connection.abort()
            self._down(f"no answer to PING within {self.heartbeat:g}s")
            return
        self._retry = self._reactor.callLater(self.heartbeat, self._beat)
        if self.state is LinkState.UP:
            self._unanswered = True
            connection.command(b"PING", callback=self._pong)

    def _pong(self, reply: Reply) -> None:
        self._unanswered = False

    def _failed(self, reason: Failure) -> None:
        self._attempt = None
        if self.state is not LinkState.STOPPED:
            self._down(reason.getErrorMessage())

    def _lost(self, connection: RedisConnection, reason: Failure) -> None:
        if connection is self.connection and self.state in (LinkState.UP, LinkState.CONNECTING):
            self.connection = None
            self._down(reason.getErrorMessage())

    def _down(self, why: str) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()  # the heartbeat
        self.state, self._unanswered = LinkState.WAITING, False
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(self._failures, 16)) * random.uniform(0.8, 1.2)
        self._failures += 1
        self._retry = self._reactor.callLater(delay, self._connect)
        self._on_down(why)
