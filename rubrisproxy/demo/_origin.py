"""One demo origin: a twisted.web site on a loopback port that can be stopped as a crash would stop it."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from ._site import demo_site

#: Seconds a stopped demo origin stays down before it listens again.
RESTART_DELAY = 5.0


class OriginState(enum.Enum):
    """Where a demo origin is in its life."""

    IDLE = "idle"  # not started yet
    UP = "up"  # listening
    DOWN = "down"  # stopped as by a crash; listens again after the restart delay
    SHUT = "shut"  # the proxy is stopping: never listens again


class DemoOrigin:
    """A named demo origin on ``127.0.0.1``: :meth:`start` listens (on a free port, then always that port),
    :meth:`crash` stops listening and drops every connection, and it comes back ``restart_delay`` seconds
    later; :meth:`shut` ends it for good."""

    log = Logger()

    def __init__(
        self, name: str, reactor: Any, restart_delay: float = RESTART_DELAY, stats_url: Callable[[], str | None] = lambda: None,
        clock: Any = None,
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.clock = reactor if clock is None else clock  # times the restart and the WebSocket ticks
        self.restart_delay = restart_delay
        self.stats_url = stats_url
        self.state = OriginState.IDLE
        self.port_number = 0  # 0 until the first listen chose one
        self._port: IListeningPort | None = None
        self._restart: IDelayedCall | None = None
        self._factory = WrappingFactory(demo_site(self))  # keeps the open connections, to drop them
        self._factory.noisy = False

    def start(self) -> int:
        """Listen (again); the port number. Raises CannotListenError."""
        port = self.reactor.listenTCP(self.port_number, self._factory, interface="127.0.0.1")
        self._port = port
        self.port_number = port.getHost().port
        self.state = OriginState.UP
        return self.port_number

    def crash(self, answering: Any = None) -> None:
        """Stop as a crashed server would: no more listening, every connection dropped at once (but
        ``answering``, the transport of the request that asked, which is closed after its answer), and
        listen again after the restart delay."""
        if self.state is not OriginState.UP:
            return
        self.state = OriginState.DOWN
        self._close(answering)
        self.log.info("demo origin {name} stopped; it restarts in {delay:g} s", name=self.name,
                      delay=self.restart_delay)
        self._restart = self.clock.callLater(self.restart_delay, self._come_back)

    def _come_back(self) -> None:
        self._restart = None
        try:
            self.start()
        except CannotListenError as e:
            self.log.warn("demo origin {name} cannot listen again ({why}); trying later", name=self.name, why=e)
            self._restart = self.clock.callLater(self.restart_delay, self._come_back)
            return
        self.log.info("demo origin {name} is back on 127.0.0.1:{port}", name=self.name, port=self.port_number)

    def shut(self) -> defer.Deferred[Any]:
        """Stop for good: no restart, no listening. Open connections stay, for the proxy's drain to close."""
        self.state = OriginState.SHUT
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        self._restart = None
        return self._stop_listening()

    def _stop_listening(self) -> defer.Deferred[Any]:
        port, self._port = self._port, None
        return defer.maybeDeferred(port.stopListening) if port is not None else defer.succeed(None)

    def _close(self, answering: Any) -> None:
        self._stop_listening()
        for wrapper in list(self._factory.protocols):
            if wrapper is answering:
                wrapper.loseConnection()
            else:
                wrapper.transport.abortConnection()

    @property
    def connections(self) -> int:
        """How many connections are open to this origin."""
        return len(self._factory.protocols)
