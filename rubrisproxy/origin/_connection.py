"""One HTTP/1.1 connection to an origin server, carrying one request at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplements

from .._compat import direct_write, end_as_closed, unsent
from ..deadline import Deadline
from ..flow import ProducerSlot, ReadGate, tune_transport, writes_directly
from ..http import Headers, HTTPError, ResponseHandler, ResponseParser
from ..lifecycle import ConnectionEnd

if TYPE_CHECKING:
    from ..backend import Server
    from ._pool import ConnectionPool


class OriginUser(ResponseHandler, TypingProtocol):
    """The side that borrowed a connection: receives its response and its failures."""

    def origin_failed(self, error: HTTPError) -> None: ...

    def origin_lost(self, reason: Failure) -> None: ...

    def origin_timed_out(self) -> None: ...

    def origin_backpressure(self, paused: bool) -> None: ...

    #: A response head held back to leave with the first body bytes.
    pending_head: bytes | None

    def flush_head(self) -> None: ...


class OriginRelay(TypingProtocol):
    """An origin connection's events, once a WebSocket owns it (see :meth:`OriginConnection.take_over`)."""

    def origin_data(self, data: bytes) -> None: ...

    def origin_fin(self) -> None:
        """The origin half-closed (TCP FIN)."""

    def origin_lost(self, reason: Failure) -> None: ...


class PinnedClient(TypingProtocol):
    """The client connection a pinned connection belongs to (see ``OriginConnection.pinned_to``)."""

    def end(self, reason: ConnectionEnd) -> None: ...


class TunnelUser(TypingProtocol):
    """What waits for a parent proxy's answer to CONNECT."""

    def tunnel_answered(self, connection: OriginConnection, status: int, rest: bytes, headers: Headers) -> None:
        """``headers``: the answer's (read only for an answer other than 200)."""


#: The parser of every connection taken over by a WebSocket: HTTP is over on it, and nothing reads it.
_HTTP_OVER = ResponseParser()
_HTTP_OVER.close()


class OriginConnection:
    """An origin connection: sends a request head and body, parses the response.

    Between requests it sits idle in its :class:`ConnectionPool`. ``pinned_to`` marks a
    connection bound to one client connection (connection-oriented auth): it is then
    never returned to the pool.
    """

    transport: ITCPTransport  # set by makeConnection before any other event
    log: ClassVar[Logger] = Logger(namespace=__name__)

    upload: ProducerSlot  # these two set by connectionMade
    _direct: bool

    # Slots keep an idle pooled connection, or one a WebSocket relays on, small where it runs as Python.
    __slots__ = (
        "server", "pool_key", "pool", "clock", "gate", "reused", "pinned_to", "requests", "connected",
        "parser", "_user", "_deadline", "bytes_sent", "relay", "_direct", "upload", "transport", "factory", "_tunnel_user", "_tunnel_head",
        "_delivered",
    )

    def __init__(self, server: Server, pool: ConnectionPool, clock: IReactorTime) -> None:
        self.factory: Any = None  # what Twisted's client endpoint sets on a protocol it connects
        self.server = server
        self.pool_key = server.key  # the settings it was made with, whatever its server's become
        self.pool = pool
        self.clock = clock
        self.gate: ReadGate | None = None
        self.reused = False
        self.pinned_to: PinnedClient | None = None
        self.requests = 0
        self.connected = False
        self.parser = ResponseParser()
        self._user: OriginUser | None = None
        self._deadline = Deadline(clock, self._expired)
        self.bytes_sent = 0
        self.relay: OriginRelay | None = None  # what the connection became after an upgrade
        self._tunnel_user: TunnelUser | None = None  # waiting for a parent proxy's answer to CONNECT
        self._tunnel_head = b""
        self._delivered = 0  # bytes the server had taken when its timeout was last armed

    @property
    def server_timeout(self) -> float:
        return self.pool.server_timeout  # read each time: a reload may change it

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.connectionMade()

    def logPrefix(self) -> str:
        return "OriginConnection"

    def connectionMade(self) -> None:
        self.connected = True
        tune_transport(self.transport)
        self._direct = writes_directly(self.transport)
        self.gate = ReadGate(self.transport, self._backpressure)
        self.upload = ProducerSlot(self.transport)  # the client's gate, while a request body flows

    def send(self, user: OriginUser, method: bytes, head: bytes, upgrade: bool = False, timeout: float = 0.0) -> None:
        """Start a request: ``head`` is the serialized request head.

        ``upgrade`` expects a 101 to answer it; ``timeout`` replaces ``timeout server``
        for the wait for the response head.
        """
        self._user = user
        self.parser.start(user, method, upgrade)
        self.requests += 1
        self.bytes_sent = len(head)
        self._write(head)
        self._delivered = self.bytes_sent - unsent(self.transport)
        self._deadline.set(timeout or self.pool.server_timeout)

    def hand_to(self, user: OriginUser) -> None:
        """Let ``user`` take over the response in progress (and the connection's events) from the one who sent it."""
        self._user = user
        self.parser.redirect(user)

    def send_connect(self, user: TunnelUser, head: bytes) -> None:
        """Ask a parent proxy for a tunnel; ``user.tunnel_answered(...)`` follows its answer's head."""
        self._tunnel_user = user
        self._write(head)
        self._deadline.set(self.server_timeout)

    def _tunnel_answer(self, data: bytes) -> None:
        head = self._tunnel_head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 65536:
                self._end_tunnel_wait(0, b"")
            else:
                self._tunnel_head = head
            return
        lines = head[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = [] if status == 200 else [
            (name.strip(), value.strip()) for name, sep, value in (line.partition(b":") for line in lines[1:]) if sep
        ]
        self._end_tunnel_wait(status, head[end + 4:], headers)

    def _end_tunnel_wait(self, status: int, rest: bytes, headers: Headers | None = None) -> None:
        user, self._tunnel_user, self._tunnel_head = self._tunnel_user, None, b""
        self._deadline.clear()
        assert user is not None  # called only while one waits
        user.tunnel_answered(self, status, rest, headers or [])

    def _write(self, data: bytes) -> None:
        self.server.bytes_in += len(data)  # every byte written to the server, heads included
        if self._direct:
            direct_write(self.transport, data)
        else:
            self.transport.write(data)

    def take_over(self, relay: OriginRelay) -> None:
        """Hand the connection to ``relay`` (a WebSocket): it gets every read, half-close and loss from now on.

        A pinned connection stops being a pin: its loss is the WebSocket's to handle (a tunnel ends, a session
        moves), not a reason to end the client connection, which the WebSocket owns too.
        """
        self.relay = relay
        self._user = None
        self.pinned_to = None
        self.parser.close()  # HTTP is over on this connection: free its parser and timer
        self.parser = _HTTP_OVER
        self._deadline.stop()
        self._deadline.disown()  # its callback to this connection would keep a cycle

    def readConnectionLost(self) -> None:
        """The origin half-closed: passed on by a relay; for HTTP, the connection ends as if no half-close were taken."""
        if self.relay is not None:
            self.relay.origin_fin()
        else:
            end_as_closed(self.transport)

    def writeConnectionLost(self) -> None:
        """Our half-close of an upgraded connection is done."""

    def write(self, data: bytes) -> None:
        """Send request body bytes (already framed)."""
        self.bytes_sent += len(data)
        self._write(data)
        deadline = self._deadline
        if deadline is not None and deadline.armed:  # None: a tunnel owns the connection and its timing
            self._delivered = self.bytes_sent - unsent(self.transport)
            deadline.set(self.server_timeout)

    def park(self, idle_timeout: float) -> None:
        """Sit idle in the pool; the pool is told when ``idle_timeout`` passes unused."""
        self._deadline.set(idle_timeout)

    def unpark(self) -> None:
        self._deadline.clear()

    def stop_timer(self) -> None:
        self._deadline.stop()

    def finish(self) -> bool:
        """The request is over; returns whether the connection may be reused."""
        self._deadline.clear()
        self._user = None
        if self.upload.producer is not None:
            self.upload.detach()
        gate = self.gate
        if gate is not None and gate.paused:
            gate.resumeProducing()
        return bool(self.connected) and self.parser.complete and self.parser.reusable

    def never_connected(self) -> None:
        """Its connection attempt failed: let go of its timer's callback and its parser, cycles through it."""
        self._deadline.disown()
        self.parser.close()

    def abort(self) -> None:
        """Drop the connection now, telling nobody."""
        self._user = None
        self._deadline.stop()
        if self.connected:
            self.upload.detach()
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.server.bytes_out += len(data)  # every byte read from the server, whatever becomes of it
        relay = self.relay
        if relay is not None:
            relay.origin_data(data)
            return
        if self._tunnel_user is not None:
            self._tunnel_answer(data)
            return
        user, parser = self._user, self.parser
        if user is None:
            # Unsolicited bytes from an idle connection: it cannot be trusted any more.
            self._unsolicited()
            self.transport.abortConnection()
            return
        overrun = parser.overrun
        try:
            parser.feed(data)
        except HTTPError as error:
            self.abort()
            user.origin_failed(error)
            return
        if parser.overrun and not overrun:
            self._unsolicited(parser.trailer_error)  # the response was delivered; the connection is not reused
        if user.pending_head is not None:
            user.flush_head()
        if self._user is not None and self._deadline.armed:
            self._deadline.set(self.server_timeout)  # still answering: it made progress

    def _unsolicited(self, trailer_error: str = "") -> None:
        """Warn that the connection is closed for what its server sent past a response's body: ``trailer_error``,
        why the trailer section after its last chunk was refused, or else bytes after the complete response."""
        if trailer_error:
            self.log.warn(
                "{server} ended a chunked body with a bad trailer section ({error}); the response was relayed without"
                " it, and the connection is closed",
                server=self.server, error=trailer_error,
            )
            return
        self.log.warn(
            "{server} sent bytes after its complete response; they were not relayed and its connection is closed",
            server=self.server,
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        pinned_to, self.pinned_to = self.pinned_to, None  # it refers to this connection: a cycle
        if pinned_to is not None:
            pinned_to.end(ConnectionEnd.SERVER_ERROR)  # its client goes too
        if self.gate is not None:
            self.upload.detach()
            self.gate.disown()  # its callback to this connection would keep a cycle
        relay = self.relay
        if relay is not None:
            self.relay = None  # it refers to this connection: a cycle
            relay.origin_lost(reason)
            return
        self._deadline.disown()  # its callback to this connection would keep a cycle
        if self._tunnel_user is not None:
            self._end_tunnel_wait(0, b"")
            return
        user, self._user = self._user, None
        try:
            if user is None:
                self.pool.forget(self)
            elif not self.parser.connection_closed():  # else a response delimited by the close: reported complete
                user.origin_lost(reason)
        finally:
            self.parser.close()

    def _expired(self) -> None:
        if self._tunnel_user is not None:
            self.transport.abortConnection()
            self._end_tunnel_wait(0, b"")
            return
        if self._user is None:
            self.pool.expire(self)  # idle too long in the pool
            return
        delivered = self.bytes_sent - unsent(self.transport)
        if delivered != self._delivered:
            # It is still taking the request body, slowly: inactivity, not time, is what times out.
            self._delivered = delivered
            self._deadline.set(self.server_timeout)
            return
        user = self._user
        self.abort()
        user.origin_timed_out()

    def _backpressure(self, paused: bool) -> None:
        # While the client is too slow to take more, the origin is not the one stalling.
        if self._user is None:
            return
        if paused:
            self._deadline.clear()
        else:
            self._deadline.set(self.server_timeout)
        self._user.origin_backpressure(paused)


classImplements(OriginConnection, IHalfCloseableProtocol)  # up front: the endpoint's wrapper looks only once
