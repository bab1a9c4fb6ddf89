"""Tunnel mode: after the backend's 101, bytes flow both ways untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from ..deadline import Deadline
from ..flow import backed_up, half_close
from ..lifecycle import Termination
from ._closes import TAIL, tunnel_termination
from ._fin import close_or_cut
from ._tunnel_moving import TunnelMoving

if TYPE_CHECKING:
    from ..backend import Server
    from ..origin import OriginConnection
    from ._handoff import UpgradeHandoff


#: Ends read off TCP (which side ended first, and how), which a WebSocket's close frames tell better.
_BY_TCP = frozenset((Termination.CLIENT_CLOSE, Termination.SERVER_CLOSE, Termination.CLIENT_ABORT,
                     Termination.SERVER_ABORT))


class Tunnel(TunnelMoving):
    """Relays an upgraded connection byte for byte, like ``twisted.protocols.portforward``.

    Each side's transport is the other's streaming producer, so a slow reader
    pauses the other side's reads and nothing queues without bound. A half-close
    is passed on; ``timeout tunnel`` is the inactivity limit, shortened to
    ``client-fin`` / ``server-fin`` once a side has half-closed (then each connection is closed with a FIN where
    that ends it at once, else cut). A live upgrade moves it
    (:class:`~rubrisproxy.websocket._tunnel_moving.TunnelMoving`). A WebSocket's end is logged as session mode
    logs it, told from the end of each side's last read (see :mod:`~rubrisproxy.websocket._closes`).
    """

    __slots__ = ("_handoff", "_client", "_origin", "_timeouts", "_deadline", "_idle_limit", "_client_fin",
                 "_origin_fin", "_ended", "_first_close", "_leaving", "_client_tail", "_origin_tail",
                 "_client_last")

    def __init__(self, handoff: UpgradeHandoff, origin: OriginConnection) -> None:
        self._handoff = handoff
        self._client = handoff.client
        self._origin = origin
        self._timeouts = timeouts = handoff.timeouts
        self._deadline = Deadline(handoff.idle_clock, self._idle)
        self._idle_limit = timeouts.tunnel
        self._client_fin = self._origin_fin = False
        self._ended = False
        self._first_close: Termination | None = None  # the side that closed (or half-closed) first
        self._leaving: IDelayedCall | None = None  # closes the tunnel some time after its server left
        # The end of each side's last read, and whether the client's came last: who closed a WebSocket (_closes.py).
        self._client_tail = self._origin_tail = b""
        self._client_last = False

    def start(self, response_head: bytes, from_origin: bytes) -> None:
        """Send the 101 on to the client and start relaying (with any bytes that came with either head)."""
        client, origin = self._client, self._origin
        handoff = self._handoff
        handoff.websockets.add(self)
        server = handoff.server
        if server is not None:
            server.watchers.add(self)
        from_client = client.take_over(self)
        origin.take_over(self)
        self._deadline.set(self._idle_limit)
        self.origin_data(response_head + from_origin)
        if not from_origin:
            self._origin_tail = b""  # the head is no frame: an idle tunnel keeps nothing of it
        if from_client:
            self.client_data(from_client)

    # Relay events

    def client_data(self, data: bytes) -> None:
        self._client_tail = data if len(data) <= TAIL else data[-TAIL:]
        self._client_last = True
        origin = self._origin
        origin.write(data)
        if origin.upload.producer is None and backed_up(origin.transport):
            origin.upload.attach(self._client.gate)  # only once a write backs up: idle tunnels stay small
        self._deadline.set(self._idle_limit)

    def origin_data(self, data: bytes) -> None:
        self._origin_tail = data if len(data) <= TAIL else data[-TAIL:]
        self._client_last = False
        client = self._client
        client.write(data)
        if client.download.producer is None and backed_up(client.transport):
            gate = self._origin.gate
            assert gate is not None  # it is connected: it answered the upgrade (or the CONNECT)
            client.download.attach(gate)
        self._deadline.set(self._idle_limit)

    def client_fin(self) -> None:
        if self._ended:
            return  # the origin has gone: the client's connection is closing already
        self._client_fin = True
        self._first_close = self._first_close or Termination.CLIENT_CLOSE
        if self._origin_fin:
            self._close_both()
            return
        half_close(self._origin.transport)
        self._idle_limit = min(self._idle_limit, self._timeouts.client_fin)
        self._deadline.set(self._idle_limit)

    def origin_fin(self) -> None:
        if self._ended:
            return
        self._origin_fin = True
        self._first_close = self._first_close or Termination.SERVER_CLOSE
        if self._client_fin:
            self._close_both()
            return
        half_close(self._client.transport)
        self._idle_limit = min(self._idle_limit, self._timeouts.server_fin)
        self._deadline.set(self._idle_limit)

    def client_lost(self, reason: Failure) -> None:
        self._origin.transport.loseConnection()  # after what the client sent is delivered
        self._end(self._first_close or Termination.CLIENT_CLOSE if reason.check(ConnectionDone) else Termination.CLIENT_ABORT)

    def origin_lost(self, reason: Failure) -> None:
        self._client.transport.loseConnection()
        self._end(self._first_close or Termination.SERVER_CLOSE if reason.check(ConnectionDone) else Termination.SERVER_ABORT)

    def server_leaving(self, server: Server, why: str) -> None:
        """The server is drained, removed or down: the tunnel (which cannot move) is closed after a grace."""
        if self._leaving is None and not self._ended:
            backend = self._handoff.backend
            assert backend is not None  # a server leaving is one of a backend's (a CONNECT tunnel's is watched by none)
            self._leaving = self._handoff.clock.callLater(backend.websocket.drain_grace, self._drained)

    def _drained(self) -> None:
        self._leaving = None
        server, backend = self._handoff.server, self._handoff.backend
        if server is not None and backend is not None and server in backend.usable():
            return  # the server came back (made ready again) within the grace
        self._close_both()
        self._end(Termination.DRAINED)

    def drain(self, code: int = 1001) -> None:
        """Close both connections (a tunnel cannot put a close frame between the bytes it relays)."""
        self._close_both()
        self._end(Termination.SHUTDOWN)

    def abort(self) -> None:
        self._client.transport.abortConnection()
        self._origin.transport.abortConnection()

    # Ending

    def _idle(self) -> None:
        # Nothing moved either way for the limit: each connection ends with a FIN, not a reset (see _fin.py), where
        # that ends it at once; one holding bytes its peer has not read is cut.
        close_or_cut(self._client.transport)
        close_or_cut(self._origin.transport)
        self._end(Termination.IDLE_TIMEOUT)

    def _close_both(self) -> None:
        self._client.transport.loseConnection()
        self._origin.transport.loseConnection()

    def _end(self, termination: Termination) -> None:
        if self._leave():
            if termination in _BY_TCP and self._handoff.head.method != b"CONNECT":  # a WebSocket's
                termination = tunnel_termination(termination, self._client_tail, self._origin_tail, self._client_last)
            self._handoff.ended(termination)

    def _leave(self) -> bool:
        """Stop relaying (ended, or moved to another process): False if it had already."""
        if self._ended:
            return False
        self._ended = True
        handoff = self._handoff
        handoff.websockets.discard(self)
        server = handoff.server
        if server is not None:
            server.watchers.discard(self)
        if self._leaving is not None and self._leaving.active():
            self._leaving.cancel()
        self._deadline.disown()  # stopped; its callback, this tunnel, let go (a cycle)
        self._client.download.detach()
        self._origin.upload.detach()
        return True
