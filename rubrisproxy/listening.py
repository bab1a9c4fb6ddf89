"""Listeners: endpoint strings listened on with a factory, TLS over them, and a frontend's drain on stop."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ._compat import lean_accepted, let_go_port
from .accepting import back_off_when_exhausted
from .config import HTTP1_ALPN, FrontendConfig, ListenerTLSConfig, ProxyConfig
from .frontend import ClientConnection, Frontend, connection_factory, drain
from .reuseport import ReusePortReactor
from .tls import Listener, ServerTLS, build_contexts, listeners

#: Listen backlog for TCP and TLS listeners that do not set one: Twisted's default (50) drops
#: connections when many clients arrive at once, as they do after a deploy.
DEFAULT_BACKLOG = 1024


class ListenFailed(Exception):
    """A listener could not listen on one of its endpoints."""

    def __init__(self, label: str, description: str, why: str) -> None:
        super().__init__(f"{label} cannot listen on {description}: {why}")


def listen_error(failure: Failure) -> str:
    """Why an endpoint could not listen: the system's words (``Address already in use``) when bind or listen
    failed, rather than Twisted's line, which names the address the endpoint already names."""
    error = failure.value
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError) and error.socketError.strerror:
        return error.socketError.strerror
    return failure.getErrorMessage()


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=DEFAULT_BACKLOG`` added to a TCP or TLS endpoint that sets none."""
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


@dataclass(frozen=True)
class ListenSettings:
    """Where a listener listens: endpoint strings and the TLS over them; ``key`` is where they are configured
    (``frontends.NAME``, ``admin``), for messages.

    With ``tls``, every endpoint but ``ssl:`` ones serves TLS with those settings; an
    ``ssl:`` endpoint serves TLS with the files it names.
    """

    endpoints: tuple[str, ...]
    tls: ListenerTLSConfig | None = None
    key: str = "listen"
    reuse_port: bool = False  # TCP sockets bound with SO_REUSEPORT: each worker process binds its own
    alpn: tuple[str, ...] | None = None  # what its ssl: strings offer by ALPN (None: the default protocols)


@dataclass(frozen=True)
class Shutdown:
    """How a frontend stops: WebSockets closed with ``close_code`` at random moments over ``spread`` seconds,
    whatever is left cut after ``grace`` seconds."""

    grace: float
    spread: float
    close_code: int

    @classmethod
    def of(cls, config: ProxyConfig) -> Shutdown:
        return cls(config.shutdown_grace, config.shutdown_spread, config.shutdown_close_code)


@dataclass
class Inherited:
    """Listening sockets handed over by the process a live upgrade replaces (docs/upgrade.md): by where they
    are configured and their endpoint string, each socket's descriptor and address family."""

    sockets: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def take(self, key: str, description: str) -> tuple[int, int] | None:
        """The socket ``key`` listened on at ``description``, if it was handed over (then it is the caller's)."""
        return self.sockets.pop((key, description), None)

    def close_rest(self) -> None:
        """Close the sockets nothing took (listeners the new configuration no longer has)."""
        for fd, _ in self.sockets.values():
            os.close(fd)
        self.sockets.clear()


class ListeningService(service.Service):
    """Listens where ``listen`` says with ``factory``; a port that cannot be bound raises :class:`ListenFailed`
    (or, when not ``required``, is a warning: the service carries on without it)."""

    log = Logger()
    inherited: Inherited | None = None  # in a live upgrade's new process: sockets to adopt rather than bind

    def __init__(self, reactor: Any, label: str, factory: Any, listen: ListenSettings, required: bool = True) -> None:
        self.reactor = reactor
        self.label = label
        self.factory = factory
        self._endpoint_reactor = ReusePortReactor(reactor) if listen.reuse_port else reactor
        self.endpoints = listen.endpoints  # these two change on a reload
        self.tls = listen.tls
        self.alpn = listen.alpn
        self.key = listen.key
        self.required = required
        self.ports: list[IListeningPort] = []
        self._ports_by: dict[str, IListeningPort] = {}  # by endpoint description
        self._parsed: dict[str, Listener] | None = None  # each endpoint, parsed once (until endpoints or tls change)
        self._shared_tls: ServerTLS | None = None  # the TLS of the endpoints under ``tls``, once one listens
        self._tls_by: dict[str, ServerTLS] = {}  # the TLS of each ssl: endpoint, by description
        self._listening_started = False
        self.setName(label.replace(" ", ":"))

    def privilegedStartService(self) -> None:
        # Bind before twistd drops privileges, as strports does.
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if not self._listening_started:
            self._listen()
        super().startService()

    def listen_on(self, endpoints: tuple[str, ...]) -> None:
        """Listen on ``endpoints`` from now on: new ones are opened, then dropped ones closed (their connections
        stay). If a new one cannot be bound, the ones just opened are closed again and nothing else changes."""
        previous, self.endpoints = self.endpoints, endpoints
        self._parsed = None
        added = [e for e in endpoints if e not in previous]
        if self.running:
            try:
                self._listen(added)
            except ListenFailed:
                for description in added:
                    self._close(description)
                self.endpoints, self._parsed = previous, None
                raise
        for description in previous:
            if description not in endpoints:
                self._close(description)

    def _close(self, description: str) -> None:
        self._tls_by.pop(description, None)
        port = self._ports_by.pop(description, None)
        if port is not None:
            self.ports.remove(port)
            port.stopListening()

    def use_factory(self, factory: Any) -> None:
        """Build new connections with ``factory`` from now on, on every endpoint; accepted ones stay as they are."""
        old, self.factory = self.factory, factory
        for port in self.ports:
            owner: Any = port  # what holds our factory: the port, or a factory wrapping it (TLS, PROXY)
            attribute = "factory"
            while owner is not None and getattr(owner, attribute, None) is not old:
                owner, attribute = getattr(owner, attribute, None), "wrappedFactory"
            if owner is None:
                self.log.warn("{label}: a listener keeps building connections as before", label=self.label)
            else:
                setattr(owner, attribute, factory)

    def _listen(self, endpoints: tuple[str, ...] | list[str] | None = None) -> None:
        self._listening_started = True
        for description in self.endpoints if endpoints is None else endpoints:
            failures: list[Any] = []
            try:
                plain, factory = self._factory_for(description)
                inherited = self.inherited.take(self.key, description) if self.inherited is not None else None
                if inherited is not None:
                    self._adopt(description, factory, *inherited)
                    continue
                endpoint = serverFromString(self._endpoint_reactor, with_backlog(plain))
            except Exception as e:  # noqa: BLE001 - checked at load, but a file an ssl: string or tls table names may have gone
                self._cannot_listen(description, str(e))
                continue
            d = endpoint.listen(factory)
            d.addCallbacks(self._listening, failures.append, callbackArgs=(description,))
            if failures:
                self._cannot_listen(description, listen_error(failures[0]))
                continue
            d.addErrback(self._listen_failed, description)  # endpoints that answer later

    def _adopt(self, description: str, factory: Any, fd: int, family: int) -> None:
        """Listen on the socket the replaced process handed over (its accept queue kept), not a new one."""
        try:
            port = self.reactor.adoptStreamPort(fd, family, factory)
        finally:
            os.close(fd)  # the reactor made its own copy
        self._listening(port, description)

    def handed_over(self) -> list[tuple[str, str, int, int]]:
        """Its listening sockets, for a live upgrade: where each is configured, its endpoint string, its
        descriptor and its address family."""
        ports: dict[str, Any] = self._ports_by  # tcp.Port and unix.Port: their socket and its descriptor
        return [(self.key, description, port.fileno(), port.socket.family) for description, port in ports.items()]

    def release(self) -> None:
        """Stop accepting, closing only this process's copies of the sockets: the process that adopted them
        accepts from their queues from now on."""
        ports, self.ports = self.ports, []
        self._ports_by.clear()
        for port in ports:
            let_go_port(port)

    def _cannot_listen(self, description: str, why: str) -> None:
        if self.required:
            raise ListenFailed(self.label, description, why)
        self.unavailable(description, why)

    def unavailable(self, description: str, why: str) -> None:
        """A listener that is not required could not listen on ``description``: said, and carried on."""
        self.log.warn("{label} cannot listen on {description}: {why}; carrying on without it",
                      label=self.label, description=description, why=why)

    def _listener(self, description: str) -> Listener:
        if self._parsed is None:
            self._parsed = dict(zip(self.endpoints, listeners(self.key, self.endpoints, self.tls, self.alpn),
                                    strict=True))
        return self._parsed[description]

    def _factory_for(self, description: str) -> tuple[str, Any]:
        """The plain endpoint to listen on for ``description``, and the factory: ours, or TLS wrapping it."""
        each = self._listener(description)
        if each.tls is None:
            return each.endpoint, self.factory
        if each.tls is not self.tls:  # an ssl: string's own
            server_tls = self._tls_by[description] = ServerTLS(each.contexts())
        elif self._shared_tls is None:
            server_tls = self._shared_tls = ServerTLS(each.contexts())
        else:
            server_tls = self._shared_tls
        return each.endpoint, TLSMemoryBIOFactory(server_tls, False, self.factory)

    def reread_tls(self, tls: ListenerTLSConfig | None) -> Callable[[], str | None]:
        """Read the certificates of the TLS endpoints anew, ``tls`` being the new settings of those without their own;
        returns what puts them in use for new connections (and says so). Raises :class:`ConfigError`, changing
        nothing."""
        if (tls is None) != (self.tls is None):
            return lambda: f"{self.label}: turning TLS on or off takes effect at the next restart"
        shared = build_contexts(f"{self.key}.tls", tls) if tls is not None and self._shared_tls is not None else None
        own = {description: self._listener(description).contexts() for description in self._tls_by
               if description in self.endpoints}

        def use() -> str | None:
            self.tls, self._parsed = tls, None
            if self._shared_tls is not None and shared is not None:
                self._shared_tls.use(shared)
            for description, contexts in own.items():
                self._tls_by[description].use(contexts)
            return f"{self.label}: certificates re-read" if shared is not None or own else None

        return use

    def _listening(self, port: IListeningPort, description: str) -> None:
        self.ports.append(port)
        self._ports_by[description] = port
        back_off_when_exhausted(port, self.reactor, f"{self.label} on {description}")
        lean_accepted(port)  # what it accepts: Twisted's TCP connection without its per-connection formatting
        self.said_listening(port, description)

    def said_listening(self, port: IListeningPort, description: str) -> None:
        """Log that ``port`` listens on ``description``."""
        self.log.info("{label} listening on {description} ({address})", label=self.label, description=description,
                      address=bound_address(port))

    def addresses(self) -> list[dict[str, str]]:
        """Each endpoint listened on, with the address it is bound to (a TCP port 0 shows the port chosen)."""
        return [{"endpoint": description, "address": bound_address(port)}
                for description, port in self._ports_by.items()]

    def _listen_failed(self, failure: Any, description: str) -> None:
        if not self.required:
            self.unavailable(description, listen_error(failure))
            return
        self.log.critical(
            "{label} cannot listen on {description}: {why}",
            label=self.label, description=description, why=listen_error(failure),
        )
        if self.reactor.running:
            self.reactor.stop()

    def stop_listening(self) -> defer.Deferred[Any]:
        ports, self.ports = self.ports, []
        self._ports_by.clear()
        self._tls_by.clear()
        self._shared_tls = None
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])

    def stopService(self):
        super().stopService()
        return self.stop_listening()


class FrontendService(ListeningService):
    """Listens on a frontend's endpoints; on stop, stops accepting and drains."""

    def __init__(self, reactor: Any, frontend: Frontend, config: FrontendConfig, shutdown: Shutdown,  # noqa: PLR0913 - what a frontend's listener is made of, from the proxy's config and the frontend's
                 protocol: type[ClientConnection] | None = None, reuse_port: bool = False) -> None:
        super().__init__(reactor, f"frontend {frontend.name}", connection_factory(frontend, protocol),
                         ListenSettings(config.listen, config.tls, f"frontends.{frontend.name}", reuse_port,
                                        None if config.http2.enabled else HTTP1_ALPN))
        self.frontend = frontend
        self.shutdown = shutdown

    @defer.inlineCallbacks
    def stopService(self):
        started = self.running
        service.Service.stopService(self)
        yield self.stop_listening()
        if not started:  # it could not listen: it has accepted nothing
            return
        frontend = self.frontend
        in_flight = sum(1 for c in frontend.connections if c.current is not None and c.relay is None)
        self.log.info(
            "frontend {name} stopped accepting; draining {count} connections ({busy} busy) and closing "
            "{websockets} WebSockets ({code}) over {spread:g}s, for up to {grace:g}s",
            name=frontend.name, count=len(frontend.connections), busy=in_flight, websockets=len(frontend.websockets),
            code=self.shutdown.close_code, spread=self.shutdown.spread, grace=self.shutdown.grace,
        )
        yield drain(frontend, self.shutdown.grace, self.shutdown.spread, self.shutdown.close_code)
        if frontend.clients is not None:
            frontend.clients.stop()
        self.log.info("frontend {name} stopped", name=frontend.name)


def bound_address(port: IListeningPort) -> str:
    """Where ``port`` is bound: ``host:port`` for TCP, the socket's path for a UNIX socket."""
    host: Any = port.getHost()
    if hasattr(host, "port"):
        return f"{host.host}:{host.port}"
    name = getattr(host, "name", host)
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
