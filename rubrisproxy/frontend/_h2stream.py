"""One HTTP/2 stream, in the role of the client connection of one :class:`~rubrisproxy.frontend.Exchange`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..deadline import Deadline
from ..flow import ProducerSlot, ReadGate
from ..http import HTTPError, RequestHead
from ..lifecycle import ConnectionEnd, Termination
from ._h2response import _CLOSED, _CUTTING, _ENDING, _HEAD, StreamResponse
from ._h2transport import StreamTransport

if TYPE_CHECKING:
    from ..origin import OriginConnection
    from ..websocket import Relay
    from ._context import Frontend
    from ._exchange import Exchange
    from ._exchange_ending import ExchangeEnding
    from ._h2connection import H2Connection

class H2Stream(StreamResponse):
    """A stream as its exchange sees a client connection that carries one request (its response is sent
    by :class:`~rubrisproxy.frontend._h2response.StreamResponse`).

    The request body is acknowledged (WINDOW_UPDATE) only while ``gate`` is not paused: an origin that
    takes none of it stops the client once its window is spent, so what a stream holds is bounded by its
    window. A WebSocket (an extended CONNECT) takes the stream over as a connection: its ``transport``
    (a :class:`~rubrisproxy.frontend._h2transport.StreamTransport`) and :meth:`take_over`.
    """

    __slots__ = (
        "connection", "stream_id", "frontend", "exchange", "gate", "download", "_request_ended", "_unacked",
        "_reading", "_timer", "_timed_sent", "pinned", "bytes_in", "upgraded_at", "_early",
        "_transport",
    )

    disconnecting = False  # what a ReadGate reads of its transport

    def __init__(self, connection: H2Connection, stream_id: int, ended: bool) -> None:
        StreamResponse.__init__(self)
        self.connection = connection
        self.stream_id = stream_id
        self.frontend: Frontend = connection.frontend
        self.exchange: Exchange | None = None
        self._request_ended = ended  # END_STREAM came with its HEADERS: no body
        self._unacked = 0  # request body bytes received and not yet acknowledged
        self._reading = True  # the gate is not paused: received bytes are acknowledged at once
        self.gate = ReadGate(self)  # its transport is the stream's window
        self.download = ProducerSlot(self)  # the stream is its origin's consumer
        self._timer: Deadline | None = None
        self._timed_sent = 0
        self.pinned: OriginConnection | None = None
        self.bytes_in = 0
        self.upgraded_at = (0, 0)
        self._early = b""  # what the client sent before its WebSocket was answered
        self._transport: StreamTransport | None = None

    @property
    def transport(self) -> StreamTransport:
        """The stream as a transport (made when first asked for: by a WebSocket, or an exchange cutting it)."""
        if self._transport is None:
            self._transport = StreamTransport(self)
        return self._transport

    @property
    def open(self) -> bool:
        return self._phase is not _CLOSED

    # The request, as the connection delivers its frames

    def request(self, exchange: Exchange) -> None:
        self.exchange = exchange
        exchange.start()
        if exchange.finished:
            return
        if self._request_ended or exchange.head.upgrade:
            exchange.client_end()
        else:
            self._arm(self.frontend.timeouts.client)

    def body(self, data: bytes, flow_length: int) -> None:
        self._unacked += flow_length
        self.bytes_in += len(data)
        relay = self.relay
        if relay is not None:
            if data:  # not an empty DATA frame (one carrying END_STREAM, say): a relay reads bytes, as from a socket
                relay.client_data(data)
            if self._reading:
                self._acknowledge()
            return
        exchange = self.exchange
        if exchange is not None and exchange.head.upgrade and not exchange.finished:
            self._early += data  # unacknowledged: bounded by the window
            return
        if exchange is not None and not exchange.finished:
            limit = self.frontend.limits.max_body_size
            if limit and exchange.bytes_in + len(data) > limit:
                exchange.client_failed(HTTPError(413, f"body over the {limit} byte limit"))
            else:
                exchange.client_body(data)
                if self._timer is not None and self._timer.armed:
                    self._timer.set(self.frontend.timeouts.client)
        if self._reading or self._phase is _CLOSED or exchange is None or exchange.finished:
            self._acknowledge()

    def body_end(self) -> None:
        if self._request_ended:  # with END_STREAM on its HEADERS: told at the request
            return
        self._request_ended = True
        if self.relay is not None:
            if self._phase is _CLOSED:  # both sides are done
                self._drop()
            else:
                self.relay.client_fin()
            return
        if self._phase is _CLOSED and self.connection.open_stream(self):  # its WebSocket left while it waited for this
            self._drop()
            return
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            if self._timer is not None:
                self._timer.clear()
            exchange.client_end()

    def reset(self) -> None:
        """The client reset the stream (or the connection is gone): its exchange is aborted."""
        self._phase = _CLOSED
        upgraded = self.relay is not None  # its WebSocket hears of it, ends, and logs the exchange with its bytes
        self._drop(lost=True)
        exchange = self.exchange
        if exchange is not None and not exchange.finished and not upgraded:
            exchange.client_lost()

    def _acknowledge(self) -> None:
        unacked, self._unacked = self._unacked, 0
        if unacked:
            self.connection.acknowledge(self.stream_id, unacked)

    # Its gate's transport: the request body's window

    def pauseProducing(self) -> None:
        self._reading = False

    def resumeProducing(self) -> None:
        self._reading = True
        self._acknowledge()

    # What a WebSocket calls, as on a client connection

    def move_record(self, opened: bool, unsent: bytes) -> dict[str, Any]:
        raise NotImplementedError("a WebSocket over an HTTP/2 stream does not move (its connection carries others)")

    def upgraded(self) -> H2Stream:
        return self

    def take_over(self, relay: Relay) -> bytes:
        """The WebSocket ``relay`` gets the stream's DATA from here on; what came before it is returned."""
        self.relay = relay
        self.connection.client.responses += 1  # its 200
        self.upgraded_at = (self.bytes_in - len(self._early), self.bytes_out)
        if self._timer is not None:
            self._timer.stop()
        early, self._early = self._early, b""
        return early

    def websocket_ended(self, termination: Termination) -> None:
        """A stream's WebSocket ending ends nothing more than the stream."""

    def websocket_left(self) -> None:
        """Its WebSocket has ended and been logged: the stream lets go of it, and of its own parts once closed (now, or
        as its last frames go: ``_drop``), which refer back to it (cycles, which only the cyclic collector would free:
        one per WebSocket)."""
        self.relay = None
        if self._phase is _CLOSED and not self.connection.open_stream(self):
            self.let_go()

    def moved_away(self) -> None:
        """Never called: a WebSocket on a stream stays in its process (its socket is the whole connection's)."""
        raise AssertionError("a WebSocket over HTTP/2 is not carried to another process")

    # What the exchange calls, as on a client connection

    @property
    def proxied(self) -> bool:
        """Whether its connection comes from a proxy (its clients known by what each request carries)."""
        return self.connection.client.proxied

    @property
    def secure(self) -> bool:
        return self.connection.client.secure

    @property
    def trusted(self) -> bool:
        return self.connection.client.trusted

    def client_of(self, head: RequestHead) -> str:
        return self.connection.client.client_of(head)

    def forwarding_headers(self, host: bytes, head: RequestHead | None = None) -> bytes:
        return self.connection.client.forwarding_headers(host, head)

    def ends_with(self, exchange: ExchangeEnding) -> bool:
        return True  # a stream carries one request

    def exchange_done(self, exchange: ExchangeEnding, keep_alive: bool, now: float, relayed: bool) -> None:
        self.connection.client.responses += 1
        self.unpin()
        if self._timer is not None:
            self._timer.clear()
        if self._phase is _CLOSED:
            if not exchange.head.upgrade:  # reset already; a WebSocket's relay may still use its parts
                self.let_go()
            return
        if self._phase is _HEAD:  # ended without an answer (the client is gone)
            self.abortConnection()
            return
        # A response broken off once begun is delivered as far as it went, then reset: the client sees it cut.
        self._phase = _CUTTING if relayed and exchange.termination is not Termination.OK else _ENDING
        self.flush()

    def client_stalled(self, stalled: bool) -> None:
        """The client stopped (or resumed) taking the response: ``timeout client`` runs meanwhile."""
        if stalled:
            self._timed_sent = self._sent
            self._arm(self.frontend.timeouts.client)
        elif self._timer is not None:
            self._timer.clear()

    def _arm(self, delay: float) -> None:
        if self._timer is None:
            self._timer = Deadline(self.frontend.clock, self._timed_out)
        self._timer.set(delay)

    def _timed_out(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.finished:
            return
        if self._sent != self._timed_sent:  # slowly, but it takes what is sent
            self._timed_sent = self._sent
            self._arm(self.frontend.timeouts.client)
            return
        exchange.client_timed_out()

    def unpin(self) -> None:
        """A stream keeps no server connection past its request (connection-oriented auth needs HTTP/1.1)."""
        pinned, self.pinned = self.pinned, None
        if pinned is not None:
            pinned.pinned_to = None
            pinned.abort()

    def let_go(self) -> None:
        """Its exchange done and the stream closed: let go of its exchange, timer, gate, download slot and transport,
        which refer back to it (cycles, which only the cyclic collector would free: one per request)."""
        self.exchange = None
        if self._timer is not None:
            self._timer.disown()
        del self.gate, self.download
        self._transport = None

    def end(self, reason: ConnectionEnd) -> None:
        """A lost pinned server connection ends its client: here, the stream."""
        self.abortConnection()
