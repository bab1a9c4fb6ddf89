"""The client-facing HTTP/1.1 protocol of a local connection (the TCP peer is the client)."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from mypy_extensions import mypyc_attr
from twisted.internet.interfaces import IHalfCloseableProtocol, ILoggingContext, IProtocol, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplements, implementedBy

from .._compat import close_sent, direct_write, plain_peer_host, unsent
from ..config import WebSocketConfig
from ..deadline import Deadline
from ..flow import ProducerSlot, ReadGate, WriteWatch, tune_transport, writes_directly
from ..http import CLIENT_CLAIMS, FORWARDING, HTTPError, RequestHead, RequestParser, spellings
from ..lifecycle import ConnectionEnd
from ._context import Frontend
from ._ending import ConnectionEnding
from ._exchange import Exchange
from ._forward_exchange import ForwardExchange
from ._handover import Handover
from ._lingering import Linger, Lingering
from ._moving import Moving
from ._peers import forwarded_node, forwarded_quote
from ._phase import CLOSING, FOLLOWS, HTTP2, LINGERING, LOST, OPENING, READING, UPGRADING, Phase
from ._pipeline import UPGRADE, Pipeline
from ._rules import connection_closed
from ._timeouts import WAIT_CLIENT, WAIT_KEEP_ALIVE, WAIT_REQUEST, ConnectionTimeouts, Wait

if TYPE_CHECKING:
    from ..origin import OriginConnection
    from ..ratelimit import Entry
    from ..transfer import Carrier
    from ..websocket import Relay

#: The session header's default name: a backend that names another drops that one too (``Backend.session_drops``).
SESSION_HEADER = WebSocketConfig().session_header.lower().encode()
#: A local client may not speak for itself where only a proxy should: its forwarding headers, the headers
#: servers take a client's address from, and the session header, in any spelling, are dropped (the proxy
#: writes its own); Expect is answered here.
LOCAL_CLIENT_DROPS = spellings(FORWARDING | CLIENT_CLAIMS | {SESSION_HEADER}) | frozenset((b"expect",))


#: Forwarding lines by (template, Host): a client's requests mostly name one host, whose lines are made once.
#: Bounded: emptied when full.
_FORWARDING_LINES: dict[tuple[bytes, bytes], bytes] = {}
_FORWARDING_LINES_MAX = 1024
_FORWARDING_HOST_MAX = 256


@lru_cache(maxsize=1024)  # a client reconnecting, or many behind one address, reuses its lines
def forwarding_template(address: str, secure: bool) -> bytes:
    """The forwarding header lines for one client, with two ``%s`` left for the Host value (the second quoted)."""
    proto = b"https" if secure else b"http"
    node = forwarded_node(address).replace(b"%", b"%%")
    # X-Forwarded-For names an IP address or nothing (a UNIX socket's client has none), as HAProxy writes it.
    ip = b"" if node == b"for=unknown" else b"X-Forwarded-For: %s\r\n" % address.encode().replace(b"%", b"%%")
    return ip + (
        b"X-Forwarded-Proto: %s\r\nX-Forwarded-Host: %%s\r\nForwarded: %s;proto=%s;host=%%s\r\n" % (proto, node, proto)
    )


@mypyc_attr(allow_interpreted_subclasses=True)  # a frontend's protocol may be a user's subclass (docs/extending.md)
class ClientConnection(ConnectionEnding, Pipeline, Handover, Moving, ConnectionTimeouts, Lingering):
    """Parses requests, runs them one at a time as :class:`Exchange` objects, answers in order.

    Requests pipelined behind the current one are parsed and held (reading pauses
    until their turn), so responses go out in request order (:class:`~rubrisproxy.frontend._pipeline.Pipeline`).
    At most :data:`PIPELINE_DEPTH` wait parsed; the bytes after them wait unparsed. The next
    request starts only while the client takes what is written to it, so a client
    that pipelines without reading holds one buffer of responses, not one per request.
    Its first read, or a WebSocket's 101, may hand it to another protocol
    (:class:`~rubrisproxy.frontend._handover.Handover`). Its state is one :class:`~rubrisproxy.frontend._phase.Phase` (``_phase``), changed only by :meth:`_to`.

    A Twisted protocol by its methods and interfaces, not by deriving from ``Protocol``: its parts are traits
    (:mod:`~rubrisproxy.frontend._client_parts`), so where mypyc compiles them it is a native class.
    """

    log: ClassVar[Logger] = Logger(namespace=__name__)
    proxied = False  # its peer is a client, not a proxy speaking for clients
    trusted = False  # its peer is not a trusted proxy (a ProxiedConnection's may be)

    # Slots keep a long-lived (WebSocket) connection small where it runs as Python.
    __slots__ = (
        "frontend", "current", "_queued", "_receiving", "_deadline", "_waiting", "_close_timer", "_held_error",
        "_phase", "requests", "bytes_in", "bytes_out", "client_address", "secure", "ready_at", "relay",
        "_after_upgrade", "_direct", "pinned", "transport", "connected", "factory", "__provides__", "_forwarding",
        "gate", "download", "parser", "opened_at", "responses", "end_reason", "last_request", "_limit_end",
        "handlers", "_unparsed", "_advancing", "_output", "_delivered", "upgraded_at", "limits_held", "_carrier", "adopted",
        "_ignored", "_linger",
    )

    def __init__(self, frontend: Frontend) -> None:
        # What zope.interface answers when nothing is declared on the instance, set so that its look-ups (Twisted
        # asks several per connection) find it at once instead of failing on the empty slot first.
        self.__provides__ = implementedBy(type(self))
        self.connected = False
        self.factory = None
        self.frontend = frontend
        self.handlers = frontend.handlers  # those it opened with hear of its end, whatever a reload changes
        self._phase = OPENING
        self.current: Exchange | None = None
        # Pipelined requests, oldest first: rarely any, so a list is made only for the first.
        self._queued: list[Exchange] | tuple[()] = ()
        self._receiving: Exchange | None = None
        self._deadline = Deadline(frontend.timer, self._timed_out)
        self._waiting: Wait | None = None
        self._close_timer: Deadline | None = None
        self._unparsed = b""  # what the parser left when PIPELINE_DEPTH requests were waiting
        self._advancing = False  # in the loop that starts waiting requests
        self._delivered = 0  # bytes the client had taken when its timeout was last armed
        self._held_error: HTTPError | None = None
        self.requests = 0
        # Every byte read from and written to the client's socket (above TLS): heads, bodies, WebSocket frames.
        self.bytes_in = 0
        self.bytes_out = 0
        self.upgraded_at = (0, 0)  # bytes_in and bytes_out where the upgraded protocol began (see take_over)
        self.client_address = ""
        self.secure = False
        self.ready_at = 0.0
        self.relay: Relay | None = None  # what the connection became after an upgrade
        self._after_upgrade = b""
        self.pinned: OriginConnection | None = None  # the server connection connection-oriented auth bound to it
        self.opened_at = 0.0
        self.responses = 0
        self.end_reason: ConnectionEnd | None = None  # why the proxy is closing it, once it has decided to
        self.last_request: Exchange | None = None  # the request after which it closes (max-reads, max-writes)
        self._limit_end: ConnectionEnd | None = None  # which limit made it the last
        self.limits_held: list[Entry] | None = None  # counted by the frontend's connection rate limits
        self.adopted = False  # see Moving
        self._carrier: Carrier | None = None  # a live upgrade's, while it waits to move (see Moving)
        self._ignored = 0  # bytes read that no answered request uses: a close lingers (see Lingering)
        self._linger: Linger | None = None  # its bounds while LINGERING

    def _set_ready_at(self, now: float) -> None:
        self.ready_at = now

    def _set_opened_at(self, when: float) -> None:
        self.opened_at = when

    def _set_upgraded_at(self, counts: tuple[int, int]) -> None:
        self.upgraded_at = counts

    def _to(self, phase: Phase) -> None:
        """Move to ``phase`` if it may follow the present one (see :class:`~rubrisproxy.frontend._phase.Phase`);
        a close asked for once the connection is upgraded or lost changes nothing."""
        if phase in FOLLOWS[self._phase]:
            self._phase = phase

    # Connection events

    def makeConnection(self, transport: Any) -> None:
        self.connected = True
        self.transport = transport
        self.connectionMade()

    def logPrefix(self) -> str:
        return type(self).__name__

    def connectionMade(self) -> None:
        frontend = self.frontend
        frontend.connections.add(self)
        frontend.accepted += 1
        host = plain_peer_host(self.transport)  # secure is False then
        if host is None:
            peer = self.transport.getPeer()
            host = getattr(peer, "host", None)
            host = str(peer) if host is None else host
            self.secure = ISSLTransport.providedBy(self.transport)
        self.client_address = sys.intern(host)  # one copy per address, not per connection
        tune_transport(self.transport)
        self._direct = writes_directly(self.transport)
        self._forwarding = forwarding_template(self.client_address, self.secure)
        self.gate = ReadGate(self.transport, self._upload_stalled)
        self._output = WriteWatch(self._output_changed)
        # An origin's gate while a response body flows; else the watch, to hear of a client not reading.
        self.download = ProducerSlot(self.transport, self._output)
        self.parser = RequestParser(self, frontend.limits, drop=LOCAL_CLIENT_DROPS)
        self.ready_at = self.opened_at = frontend.clock.seconds()
        self._wait(WAIT_REQUEST)
        self.announce()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)  # every byte read from the client, whatever becomes of it
        relay = self.relay
        if relay is not None:
            relay.client_data(data)
            return
        phase = self._phase
        if phase is not READING:
            if phase is OPENING:
                if self._opened(data):
                    return
            elif self._read_aside(phase, data):
                return
        waiting = self._waiting
        if waiting is WAIT_KEEP_ALIVE:
            self._waiting = None  # http-request applies below if the head stays incomplete
            self._deadline.clear()
        elif waiting is WAIT_CLIENT:
            self._deadline.set(self.frontend.timeouts.client)
        if not self._parse(data):
            return
        if self._waiting is None and self.current is None:
            # A head begun, or only empty lines (which begin no request but ended the keep-alive wait): untimed,
            # a client sending one now and then would hold the connection for ever.
            self._wait(WAIT_REQUEST)

    def _parse(self, data: bytes) -> bool:
        """Feed the parser; False if the request was refused."""
        try:
            rest = self.parser.feed(data)
        except HTTPError as error:
            self._refuse(error)
            return False
        if rest:
            if self._phase is CLOSING:
                self._ignored += len(rest)
            else:
                self._unparsed += rest
        return True

    def unpin(self) -> None:
        """Close the server connection this client is pinned to, if any, keeping the client."""
        pinned, self.pinned = self.pinned, None
        if pinned is not None:
            pinned.pinned_to = None
            pinned.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.limits_held is not None:
            connection_closed(self.limits_held)
            self.limits_held = None
        end = self._end_from(reason)  # read before the exchanges and relay are told
        self._to(LOST)
        try:
            self._release(reason)
        finally:
            self._ended(self.end_reason or end)  # a relay may have said why, as it ended
            self._disown()

    def _disown(self) -> None:
        """Make its gate, write watch and timers call it back no more. Their bound methods are cycles through the
        connection: left, each closed connection would wait for Python's cyclic garbage collector, which then runs
        every few dozen connections and, every few thousand, walks the whole heap."""
        self.gate.disown()
        self._output.disown()
        if self._deadline is not None:  # an upgraded connection has none
            self._deadline.disown()
        self.relay = self.current = self.last_request = self._receiving = None  # each refers back to it
        if self._close_timer is not None:  # a lingering close's too
            self._close_timer.disown()

    def _release(self, reason: Failure) -> None:
        if self.pinned is not None:
            self.pinned.transport.loseConnection()  # a pinned server connection serves no one else
        if self.parser is not None:
            self.parser.close()
        if self.relay is not None:
            self.frontend.connections.discard(self)
            if self._close_timer is not None:  # an HTTP/2 connection closing
                self._close_timer.stop()
            self.relay.client_lost(reason)
            return
        self._waiting = None
        self._deadline.stop()
        if self._close_timer is not None:
            self._close_timer.stop()
        self.frontend.connections.discard(self)
        current, queued = self.current, self._queued
        self._queued = ()
        if current is not None:
            current.client_lost()
        for exchange in queued:
            exchange.client_lost()

    def client_of(self, head: RequestHead) -> str:
        """The client that sent ``head``: on a local connection, the connection's peer."""
        return self.client_address

    # RequestParser events

    def request_head(self, head: RequestHead) -> None:
        max_reads = self.frontend.max_reads
        if self._phase is CLOSING or (max_reads and self.requests >= max_reads):
            self._receiving = None
            self._ignored += head.size
            return  # read with the last one allowed, or after the close began: never answered
        self.requests += 1
        if head.upgrade:
            # Nothing after an upgrade request is read until the upgrade is refused or done.
            self._to(UPGRADING)
            self.gate.pause(UPGRADE)
        self.frontend.requests += 1
        if self._waiting is WAIT_REQUEST:
            self._wait(None)
        now = self.frontend.clock.seconds()
        exchange = (Exchange if self.frontend.forward is None else ForwardExchange)(self, head, now, now - self.ready_at)
        self._receiving = exchange
        clients = self.frontend.clients
        if clients is not None:
            exchange.session = clients.request_started(head, self, not self.proxied,
                                                       exchange.client_address)
        if max_reads and self.requests == max_reads and self.last_request is None:
            self.last_request = exchange  # answered with Connection: close; later requests are not read
            self._limit_end = ConnectionEnd.MAX_READS
        if self.current is None and not self._queued and not self._output.full:
            self._begin(exchange)
        else:
            self._hold(exchange)

    def request_body(self, data: bytes) -> None:
        if self._receiving is not None:
            self._receiving.client_body(data)

    def request_end(self) -> None:
        exchange, self._receiving = self._receiving, None
        if self._waiting is WAIT_CLIENT and exchange is self.current:
            self._wait(None)
        if exchange is not None:
            exchange.client_end()
        if self._waiting is WAIT_REQUEST and self.current is None and not self._queued:
            self._wait(WAIT_KEEP_ALIVE)  # answered before its end was parsed: now idle

    # What an exchange calls

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self._direct:
            direct_write(self.transport, data)
        else:
            self.transport.write(data)

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes:
        """X-Forwarded-* and Forwarded lines describing this client, for a request to ``host``."""
        key = (self._forwarding, host)
        lines = _FORWARDING_LINES.get(key)
        if lines is None:
            lines = self._forwarding % (host, forwarded_quote(host))
            if len(host) <= _FORWARDING_HOST_MAX:  # a long Host is rarely repeated, and would make the table large
                if len(_FORWARDING_LINES) >= _FORWARDING_LINES_MAX:
                    _FORWARDING_LINES.clear()
                _FORWARDING_LINES[key] = lines
        return lines

    def _output_changed(self, full: bool) -> None:
        """The client's write buffer filled, or drained, between response bodies."""
        phase = self._phase
        if phase is CLOSING or phase is LINGERING or phase is LOST:
            return  # the close timer watches what is left to send
        self.client_stalled(full)
        if not full:
            self._advance()

    def drain(self) -> None:
        """Finish the request in progress, if any, then close (graceful shutdown)."""
        self._to(CLOSING)
        self.note_end(ConnectionEnd.SERVER_CLOSE)
        if self._phase is HTTP2:
            assert self.relay is not None
            self.relay.drain()  # GOAWAY: the streams in progress finish
        elif self.relay is None and self.current is None:
            if self.parser.in_message:
                self._ignored += 1  # half a request read: its client is still sending it
            self.close()  # a WebSocket is closed by the frontend's drain, at its own moment

    def close(self) -> None:
        """Close after what was written is sent; a client that will not read it is cut after ``timeout client``.
        A client that may still be sending gets a lingering close (:meth:`_linger_close`)."""
        self._to(CLOSING)
        self._drop_queued()  # counted in _ignored
        parser = self.parser
        if parser is not None:
            parser.held = True  # nothing after this is answered: stop parsing it
            if (self._ignored or self._receiving is not None) and self._linger_close():
                return
        # A TLS transport closes only once no producer is registered: the write watch must not hold it open.
        self.download.drop_idle()
        if self._direct and not unsent(self.transport) and getattr(self.transport, "producer", None) is None:
            self._wait(None)
            close_sent(self.transport)  # all sent, no producer: no close timer needed
            return
        self.transport.loseConnection()
        self._wait(None)
        if self._close_timer is None and self._phase is not LOST:
            self._close_timer = Deadline(self.frontend.clock, self._close_expired)  # rare: on the reactor itself
            self._delivered = self.bytes_out - unsent(self.transport)
            self._close_timer.set(self.frontend.timeouts.client)


# Declared after the class, not by a decorator: mypyc builds a decorated class as an ordinary Python one. A client's
# FIN reaches readConnectionLost (Handover), not connectionLost.
classImplements(ClientConnection, IProtocol, ILoggingContext, IHalfCloseableProtocol)
