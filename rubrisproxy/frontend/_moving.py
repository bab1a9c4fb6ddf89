"""A keep-alive client connection carried to a new process in a live upgrade (docs/upgrade.md): its record,
its move at the first moment it is idle, and its rebuilding on the socket the new process adopted."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from mypy_extensions import mypyc_attr, trait
from twisted.internet.protocol import Factory, Protocol

from .._compat import let_go, take_unsent, tcp_buffered
from ..origin import ConnectionPool, OriginConnection
from ..transfer import CARRYING, Carried, Carrier, Kind, Refused
from ._client_parts import ClientParts
from ._phase import HTTP2, MOVING, OPENING, READING, UPGRADING, Phase

if TYPE_CHECKING:
    from ..backend import Server

#: The version of the record :meth:`Moving.move_record` writes and :meth:`Moving.restore` reads.
HTTP_RECORD = 1


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # as ClientConnection
class Moving(ClientParts):
    """The part of :class:`~rubrisproxy.frontend.ClientConnection` that moves it to another process.

    :meth:`move` takes a :class:`~rubrisproxy.transfer.Carrier`: an idle HTTP/1.1 connection goes at
    once; one answering a request goes right after its answer (``Pipeline.exchange_done`` calls
    :meth:`_move_if_idle`); a TLS one (its state is OpenSSL's, in this process's memory) or one pinned
    to a server stays; an HTTP/2 one is sent GOAWAY and stays until its streams end, its client's next
    request going to the new process. The new process rebuilds it with :meth:`restore`.
    """

    def move(self, carrier: Carrier) -> None:
        """Move through ``carrier`` when idle, or stay (said to ``carrier``). A WebSocket's relay moves itself."""
        phase = self._phase
        if phase is HTTP2:
            carrier.keep(Kind.HTTP, "http2")
            self.drain()  # GOAWAY: the streams in progress finish here
        elif phase is OPENING or phase is READING or phase is UPGRADING:  # an upgrade refused goes back to READING
            if self.secure or not tcp_buffered(self.transport):
                carrier.keep(Kind.HTTP, "tls")
            elif self.pinned is not None:
                carrier.keep(Kind.HTTP, "pinned")
            else:
                self._carrier = carrier
                self._move_if_idle()

    def _move_if_idle(self) -> None:
        """Carry the connection now if it is between requests (asked to move): nothing in flight or parsed
        ahead, no request half read."""
        carrier, phase = self._carrier, self._phase
        if carrier is None or (phase is not READING and phase is not OPENING):
            return
        if (self.current is not None or self._queued or self._held_error is not None or self.parser.in_message
                or self.end_reason is not None or not self.may_move()):
            return
        self._carrier = None
        self._to(MOVING)
        self.gate.pause(CARRYING)
        self._wait(None)
        unsent = take_unsent(self.transport)
        record = self.move_record(phase is READING, unsent)
        transport: Any = self.transport  # a TCP connection (tcp_buffered): its socket's descriptor
        carried = Carried(Kind.HTTP, HTTP_RECORD, self.frontend.name, record, (transport.fileno(),))
        carrier.carry(carried).addCallback(self._carried, phase, unsent)

    def may_move(self) -> bool:
        """Whether what it read so far lets it move (a proxied connection's PROXY header must be whole)."""
        return True

    def move_record(self, opened: bool, unsent: bytes) -> dict[str, Any]:
        """What the new process rebuilds it from (version :data:`HTTP_RECORD`)."""
        return {
            "opened": opened, "client": self.client_address, "opened_at": self.opened_at,
            "requests": self.requests, "responses": self.responses, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "unparsed": self._unparsed.decode("latin-1"),
            "unsent": unsent.decode("latin-1"),
        }

    def _carried(self, moved: bool, previous: Phase, unsent: bytes) -> None:
        if not moved:  # refused: it goes on here, as it was
            self._to(previous)
            if unsent:
                self.transport.write(unsent)
            self.gate.resume(CARRYING)
            self._settle()
            return
        self._deadline.stop()
        self.parser.close()
        let_go(self.transport)
        self.moved_away()

    # In the new process

    def restore(self, record: Mapping[str, Any]) -> None:
        """Take up the life a connection had in the old process (``record``, version :data:`HTTP_RECORD`):
        its counts and times, so its end is logged once with all of it; what was left to send to its
        client is sent first, and what it had read but not parsed is parsed."""
        self.restore_counts(record)
        self.restore_peer(record)
        unsent = str(record["unsent"]).encode("latin-1")
        if unsent:
            self.transport.write(unsent)
        if record["opened"]:
            self._to(READING)
            self._settle()  # between requests: the keep-alive timeout, not the first request's
        unparsed = str(record["unparsed"]).encode("latin-1")
        if unparsed:
            self.bytes_in -= len(unparsed)  # counted as they were read, in the old process
            self.dataReceived(unparsed)

    def restore_counts(self, record: Mapping[str, Any]) -> None:
        """Its times and counts as they were in the old process."""
        self._set_opened_at(float(record["opened_at"]))
        self.requests, self.responses = int(record["requests"]), int(record["responses"])
        self.bytes_in, self.bytes_out = int(record["bytes_in"]), int(record["bytes_out"])

    def restore_peer(self, record: Mapping[str, Any]) -> None:
        """Who the client is: a local connection's is its peer, as it was."""


class _Adopting(Factory):
    """Builds one connection with ``factory`` and keeps it, for the adopter to restore."""

    def __init__(self, factory: Factory) -> None:
        self.factory = factory
        self.built: Protocol | None = None

    def buildProtocol(self, addr: Any) -> Protocol | None:
        built: Any = self.factory.buildProtocol(addr)
        if isinstance(built, Moving):
            built.adopted = True  # before it is made: it was accepted in the old process, it is not refused here
        self.built = built
        return built


class _OriginFactory(Factory):
    """Builds the one origin connection an adopted socket is."""

    def __init__(self, server: Server, pool: ConnectionPool, clock: Any) -> None:
        self.server, self.pool, self.clock = server, pool, clock

    def buildProtocol(self, addr: Any) -> Any:  # an OriginConnection, which Twisted drives as a Protocol
        return OriginConnection(self.server, self.pool, self.clock)


def adopt_origin(reactor: Any, fd: int, server: Server, pool: ConnectionPool) -> OriginConnection:
    """The server's connection of a tunnel or WebSocket carried from another process, adopted on ``fd``: an origin
    connection to ``server`` already handed over to what relays on it (not the pool's)."""
    origin = adopt_socket(reactor, fd, _OriginFactory(server, pool, reactor))
    assert isinstance(origin, OriginConnection)
    pool.hand_over(origin)
    return origin


def adopting_factory(factories: Callable[[str], Factory | None], name: str) -> Factory:
    """Frontend ``name``'s factory, if this process has that frontend and its connections can be adopted; else
    :class:`Refused`."""
    factory = factories(name)
    if factory is None:
        raise Refused(f"no frontend {name!r} in this process")
    protocol = getattr(factory, "protocol", None)
    if not (isinstance(protocol, type) and issubclass(protocol, Moving)):
        raise Refused(f"frontend {name} builds connections that cannot be adopted")
    return factory


def adopt_socket(reactor: Any, fd: int, factory: Factory) -> Protocol:
    """A connection ``factory`` builds on the connected socket ``fd`` (which the reactor copies: ``fd`` stays
    the caller's to close)."""
    probe = socket.socket(fileno=fd)
    family = probe.family
    probe.detach()
    adopting = _Adopting(factory)
    reactor.adoptStreamConnection(fd, family, adopting)
    if adopting.built is None:
        raise Refused("its frontend built no connection")
    return adopting.built


class ConnectionAdopter:
    """The new process's adopter of keep-alive client connections (:class:`~rubrisproxy.transfer.Kind` HTTP):
    each rebuilt by its frontend's factory, as the frontend is configured here, on the adopted socket."""

    kind = Kind.HTTP
    versions: ClassVar[frozenset[int]] = frozenset({HTTP_RECORD})

    def __init__(self, reactor: Any, factories: Callable[[str], Factory | None]) -> None:
        self.reactor = reactor
        self.factories = factories

    def adopt(self, carried: Carried) -> None:
        factory = adopting_factory(self.factories, carried.frontend)
        connection = adopt_socket(self.reactor, carried.sockets[0], factory)
        assert isinstance(connection, Moving)
        connection.restore(carried.record)
