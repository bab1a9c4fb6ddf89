"""A client connection handed to another protocol: HTTP/2 at its first read, or a WebSocket relay after a 101."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, cast

from mypy_extensions import mypyc_attr, trait

from .._compat import end_as_closed
from ._client_parts import ClientParts
from ._h2connection import H2Connection, speaks_h2
from ._phase import HTTP2, LINGERING, LOST, READING, UPGRADED
from ._pipeline import UPGRADE
from ._rules import connection_closed

if TYPE_CHECKING:
    from ..websocket import Relay
    from ._connection import ClientConnection
    from ._exchange import Exchange


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # as ClientConnection
class Handover(ClientParts):
    """The part of :class:`~rubrisproxy.frontend.ClientConnection` that gives the connection to another protocol.

    Its first read decides what it speaks (:meth:`_opened`): HTTP/2 hands it to an
    :class:`~rubrisproxy.frontend._h2connection.H2Connection`; else HTTP/1.1 goes on. A WebSocket's
    101 hands it to a relay (:meth:`take_over`), with the bytes read after the upgrade request
    (:meth:`request_upgraded`). Either way the protocol taking over is its ``relay``: from then on it
    gets every read, half-close and loss of the connection.
    """

    def _opened(self, data: bytes) -> bool:
        """The first read: True if it begins HTTP/2 (ALPN chose ``h2``, or it is the preface on a frontend that
        speaks HTTP/2), which takes the connection over; else HTTP/1.1 goes on."""
        self._phase = READING
        if not speaks_h2(self.frontend, self.transport, data, self.secure):
            return False
        self._phase = HTTP2
        self._waiting = None
        self._deadline.stop()
        self.download.drop_idle()  # the HTTP/2 connection watches the socket's buffer itself
        self.parser.close()  # what it drops is kept for the streams' heads
        # Only a ClientConnection has this base.
        self.relay = relay = H2Connection(cast("ClientConnection", self), self.frontend.http2, self.parser.dropped)
        relay.start(data)
        return True

    def request_upgraded(self, rest: bytes) -> None:
        if self.gate.paused_for(UPGRADE):  # its upgrade request is not answered yet
            self._after_upgrade += rest  # at most the one read that carried the request
        elif rest:
            self._parse(rest)

    def take_over(self, relay: Relay) -> bytes:
        """Hand the connection to ``relay`` (a WebSocket); returns the bytes the client sent after its request.

        From here on the relay gets every read, half-close and loss of the
        connection; the HTTP timers stop.
        """
        self.relay = relay
        self._to(UPGRADED)
        self.responses += 1  # its 101
        self.parser.close()  # HTTP is over on this connection: free what it used
        self.parser = None  # type: ignore[assignment]  # a WebSocket's connection keeps no parser
        self._forwarding = b""
        self._wait(None)
        self._deadline.stop()
        self._deadline = None  # type: ignore[assignment]  # an upgraded connection keeps no HTTP timer
        self._set_ready_at(0.0)
        rest, self._after_upgrade = self._after_upgrade, b""
        self._set_upgraded_at((self.bytes_in - len(rest), self.bytes_out))  # rest was read (and counted) already
        self.download.drop_idle()  # the relay registers its own producers
        self.gate.resume(UPGRADE)
        return rest

    def adopting(self) -> None:
        """A WebSocket carried from another process takes this just adopted connection over next (it reads no
        request here: see :meth:`take_over`)."""
        self._to(READING)

    def moved_away(self) -> None:
        """It was carried to another process (an idle HTTP/1.1 connection, or its WebSocket) with its socket, let
        go of already without a FIN: the connection ends here, neither counted nor logged (the new process does
        both when it ends)."""
        if self.limits_held is not None:
            connection_closed(self.limits_held)
            self.limits_held = None
        self.frontend.connections.discard(self)
        self.frontend.bytes_in += self.bytes_in  # what crossed it here stays in this process's totals
        self.frontend.bytes_out += self.bytes_out
        self.relay = None
        self._to(LOST)

    def websocket_left(self) -> None:
        """Nothing to let go of yet: the connection ends with its WebSocket, and lets go of its relay then."""

    def readConnectionLost(self) -> None:
        """The client half-closed: an upgraded connection's relay passes it on (see :meth:`take_over`); HTTP/1.1
        answers the requests read whole first (``client_finished``); to HTTP/2 it is a close; a lingering close
        has waited for it."""
        relay = self.relay
        phase = self._phase
        if phase is UPGRADED and relay is not None:
            relay.client_fin()
        elif phase is HTTP2:
            end_as_closed(self.transport)
        elif phase is LINGERING and self._linger is not None:
            self._linger.client_ended()
        else:
            self.client_finished()

    def in_progress(self) -> list[Exchange]:
        """The requests it is answering: its current one, or an HTTP/2 connection's streams'."""
        if self._phase is HTTP2:
            assert isinstance(self.relay, H2Connection)
            return self.relay.in_progress()
        return [self.current] if self.current is not None else []

    def upgraded(self) -> Self:
        """What a WebSocket upgrade takes over: the connection itself."""
        return self
