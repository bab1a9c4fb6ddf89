"""The client-facing HTTP/1.1 protocol of a local connection (the TCP peer is the client)."""

from __future__ import annotations

import sys
from enum import Enum
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, ISSLTransport, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides

from ..deadline import Deadline
from ..flow import ProducerSlot, ReadGate, direct_write, tune_transport, writes_directly
from ..http import FORWARDING, HTTPError, RequestHead, RequestParser, error_response
from ..lifecycle import Termination
from ._context import Frontend
from ._exchange import Exchange

if TYPE_CHECKING:
    from ..origin import OriginConnection
    from ..websocket import Relay

PIPELINE = "pipeline"
UPGRADE = "upgrade"
#: A local client's own forwarding headers are not trusted, and Expect is answered here.
LOCAL_CLIENT_DROPS = FORWARDING | frozenset((b"expect",))


def forwarding_template(address: str, secure: bool) -> bytes:
    """The forwarding header lines for one client, with two ``%s`` left for the Host value."""
    ip = address.encode().replace(b"%", b"%%")
    proto = b"https" if secure else b"http"
    node = b'"[%s]"' % ip if b":" in ip else ip
    return (
        b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %%s\r\n"
        b'Forwarded: for=%s;proto=%s;host="%%s"\r\n' % (ip, proto, node, proto)
    )


class _Wait(Enum):
    """Which timeout the connection's one timer is running."""

    REQUEST = "http-request"
    KEEP_ALIVE = "http-keep-alive"
    CLIENT = "client"


class ClientConnection(Protocol):
    """Parses requests, runs them one at a time as :class:`Exchange` objects, answers in order.

    Requests pipelined behind the current one are parsed and held (reading pauses
    until their turn), so responses go out in request order and memory stays bounded
    by one socket read.
    """

    transport: ITCPTransport  # set by makeConnection before any other event

    log = Logger()

    # Slots keep a long-lived (WebSocket) connection small; Protocol's own attributes stay in its dict.
    __slots__ = (
        "frontend", "current", "_queued", "_receiving", "_deadline", "_waiting", "_close_timer", "_held_error",
        "closing", "lost", "requests", "bytes_in", "bytes_out", "client_address", "secure", "ready_at", "relay",
        "_upgrading", "_after_upgrade", "_direct", "pinned", "transport", "connected", "factory", "__provides__", "_forwarding", "gate", "download", "parser",
    )

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self.current: Exchange | None = None
        # Pipelined requests, oldest first: rarely any, so a list is made only for the first.
        self._queued: list[Exchange] | tuple[()] = ()
        self._receiving: Exchange | None = None
        self._deadline = Deadline(frontend.clock, self._timed_out)
        self._waiting: _Wait | None = None
        self._close_timer: IDelayedCall | None = None
        self._held_error: HTTPError | None = None
        self.closing = False
        self.lost = False
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.client_address = ""
        self.secure = False
        self.ready_at = 0.0
        self.relay: Relay | None = None  # what the connection became after an upgrade
        self._upgrading = False
        self._after_upgrade = b""
        self.pinned: OriginConnection | None = None  # the server connection connection-oriented auth bound to it

    # Connection events

    def connectionMade(self) -> None:
        frontend = self.frontend
        frontend.connections.add(self)
        frontend.accepted += 1
        peer = self.transport.getPeer()
        self.client_address = sys.intern(getattr(peer, "host", str(peer)))  # one copy per address, not per connection
        self.secure = ISSLTransport.providedBy(self.transport)
        tune_transport(self.transport)
        self._direct = writes_directly(self.transport)
        self._forwarding = forwarding_template(self.client_address, self.secure)
        self.gate = ReadGate(self.transport)
        self.download = ProducerSlot(self.transport)  # an origin's gate, while a response body flows
        limits = frontend.limits
        self.parser = RequestParser(
            self,
            max_request_line=limits.max_request_line,
            max_header_size=limits.max_header_size,
            max_headers=limits.max_headers,
            max_body_size=limits.max_body_size,
            drop=LOCAL_CLIENT_DROPS,
        )
        self.ready_at = frontend.clock.seconds()
        self._wait(_Wait.REQUEST)

    def dataReceived(self, data: bytes) -> None:
        relay = self.relay
        if relay is not None:
            relay.client_data(data)
            return
        if self.closing and self.current is None:
            return
        self.bytes_in += len(data)
        waiting = self._waiting
        if waiting is _Wait.KEEP_ALIVE:
            self._waiting = None  # http-request applies below if the head stays incomplete
            self._deadline.clear()
        elif waiting is _Wait.CLIENT:
            self._deadline.set(self.frontend.timeouts.client)
        try:
            self.parser.feed(data)
        except HTTPError as error:
            self._refuse(error)
            return
        if self._waiting is None and self.current is None and self.parser.in_message:
            self._wait(_Wait.REQUEST)

    def readConnectionLost(self) -> None:
        """The client half-closed an upgraded connection (see :meth:`take_over`)."""
        self.relay.client_fin()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our half-close of an upgraded connection is done."""

    def unpin(self) -> None:
        """Close the server connection this client is pinned to, if any, keeping the client."""
        pinned, self.pinned = self.pinned, None
        if pinned is not None:
            pinned.pinned_to = None
            pinned.abort()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        if self.pinned is not None:
            self.pinned.transport.loseConnection()  # a pinned server connection serves no one else
        if self.parser is not None:
            self.parser.close()
        if self.relay is not None:
            self.frontend.connections.discard(self)
            self.relay.client_lost(reason)
            return
        self._waiting = None
        self._deadline.stop()
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self.frontend.connections.discard(self)
        exchanges = ([self.current] if self.current else []) + list(self._queued)
        self._queued = ()
        for exchange in exchanges:
            exchange.client_lost()

    # RequestParser events

    def request_head(self, head: RequestHead) -> None:
        self.requests += 1
        if head.upgrade:
            # Nothing after an upgrade request is read until the upgrade is refused or done.
            self._upgrading = True
            self.gate.pause(UPGRADE)
        self.frontend.requests += 1
        if self._waiting is _Wait.REQUEST:
            self._wait(None)
        now = self.frontend.clock.seconds()
        exchange = Exchange(self, head, now, now - self.ready_at)
        self._receiving = exchange
        if self.current is None:
            self.current = exchange
            if head.has_body:
                self._wait(_Wait.CLIENT)
            exchange.start()
        else:
            if self._queued:
                self._queued.append(exchange)  # type: ignore[union-attr]
            else:
                self._queued = [exchange]
            self.gate.pause(PIPELINE)

    def request_body(self, data: bytes) -> None:
        if self._receiving is not None:
            self._receiving.client_body(data)

    def request_end(self) -> None:
        exchange, self._receiving = self._receiving, None
        if self._waiting is _Wait.CLIENT and exchange is self.current:
            self._wait(None)
        if exchange is not None:
            exchange.client_end()

    def request_upgraded(self, rest: bytes) -> None:
        if self._upgrading:
            self._after_upgrade += rest  # at most the one read that carried the request
        elif rest:
            self.parser.feed(rest)

    # What an exchange calls

    def take_over(self, relay: Relay) -> bytes:
        """Hand the connection to ``relay`` (a WebSocket); returns the bytes the client sent after its request.

        From here on the relay gets every read, half-close and loss of the
        connection; the HTTP timers stop.
        """
        self.relay = relay
        self.parser.close()  # HTTP is over on this connection: free what it used
        self.parser = None  # type: ignore[assignment]
        self._forwarding = b""
        self._wait(None)
        self._deadline.stop()
        self._deadline = None  # type: ignore[assignment]
        self.ready_at = 0.0
        alsoProvides(self, IHalfCloseableProtocol)
        rest, self._after_upgrade = self._after_upgrade, b""
        self._upgrading = False
        self.gate.resume(UPGRADE)
        return rest


    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self._direct:
            direct_write(self.transport, data)  # type: ignore[arg-type]
        else:
            self.transport.write(data)

    def forwarding_headers(self, host: bytes) -> bytes:
        """X-Forwarded-* and Forwarded lines describing this client, for a request to ``host``."""
        return self._forwarding % (host, host)

    def client_stalled(self, stalled: bool) -> None:
        """The client stopped (or resumed) reading the response: run ``timeout client`` meanwhile."""
        if stalled:
            self._wait(_Wait.CLIENT)
        elif self._waiting is _Wait.CLIENT:
            self._wait(None)

    def exchange_done(self, exchange: Exchange, keep_alive: bool, now: float) -> None:
        """``exchange`` has answered; start the next request or end the connection."""
        if exchange is not self.current or self.lost:
            return
        self.current = None
        if self._upgrading:
            self._upgrading = False  # refused: the connection stays HTTP
            self.gate.resume(UPGRADE)
            if self._after_upgrade:
                keep_alive = False  # the client did not wait for the answer: nothing it sent can be trusted
                self._after_upgrade = b""
        if self._waiting is _Wait.CLIENT:
            self._wait(None)
        self.ready_at = now
        if self._held_error is not None:
            self._answer_error(self._held_error)
            return
        if not keep_alive or self.closing:
            self.close()
            return
        if self._queued:
            self.current = self._queued.pop(0)  # type: ignore[union-attr]
            if not self._queued:
                self.gate.resume(PIPELINE)
            if self.current is self._receiving and self.current.head.has_body:
                self._wait(_Wait.CLIENT)
            self.current.start()
        elif self.parser.in_message:
            self._wait(_Wait.REQUEST)
        else:
            self._wait(_Wait.KEEP_ALIVE)

    def drain(self) -> None:
        """Finish the request in progress, if any, then close (graceful shutdown)."""
        self.closing = True
        if self.relay is None and self.current is None:
            self.close()  # a WebSocket is closed by the frontend's drain, at its own moment

    def close(self) -> None:
        """Close after what was written is sent; a client that will not read it is cut after ``timeout client``."""
        self.closing = True
        self._queued = ()
        self.transport.loseConnection()
        self._wait(None)
        if self._close_timer is None:
            self._close_timer = self.frontend.clock.callLater(self.frontend.timeouts.client, self.transport.abortConnection)

    # Errors and timeouts

    def _refuse(self, error: HTTPError) -> None:
        receiving = self._receiving
        if receiving is not None and receiving.head is not None and receiving is self.current:
            self._receiving = None
            receiving.client_failed(error)
            return
        self.gate.pause(PIPELINE)
        if self.current is not None:
            self._held_error = error  # answered in order, after the current response
        else:
            self._answer_error(error)

    def _answer_error(self, error: HTTPError, termination: Termination = Termination.BAD_REQUEST) -> None:
        self.log.info(
            "refused a request from {client}: {status} {detail}",
            client=self.client_address, status=error.status, detail=error.detail,
        )
        self.write(error_response(error.status))
        Exchange.log_refused(self, error.status, termination)
        self.close()

    def _wait(self, waiting: _Wait | None) -> None:
        self._waiting = waiting
        if waiting is None:
            self._deadline.clear()
            return
        timeouts = self.frontend.timeouts
        if waiting is _Wait.KEEP_ALIVE:
            self._deadline.set(timeouts.http_keep_alive)
        elif waiting is _Wait.REQUEST:
            self._deadline.set(timeouts.http_request)
        else:
            self._deadline.set(timeouts.client)

    def _timed_out(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return
        if waiting is _Wait.CLIENT and self.current is not None:
            self.current.client_timed_out()
        elif waiting is _Wait.REQUEST and self.parser.in_message:
            self._answer_error(HTTPError(408, "request head not received in time"), Termination.REQUEST_TIMEOUT)
        else:
            self.close()
