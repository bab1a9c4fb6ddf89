"""A client connection's timeouts: ``http-request``, ``http-keep-alive`` and ``client``, on one timer."""

from __future__ import annotations

from enum import Enum

from mypy_extensions import mypyc_attr, trait

from .._compat import unsent
from ..flow import BACKPRESSURE
from ..http import HTTPError
from ..lifecycle import ConnectionEnd, Termination
from ._client_parts import ClientParts


class Wait(Enum):
    """Which timeout the connection's one timer is running."""

    REQUEST = "http-request"
    KEEP_ALIVE = "http-keep-alive"
    CLIENT = "client"


# Its members as module names: a member read through an Enum class goes through EnumType.__getattr__'s slot hook.
WAIT_REQUEST, WAIT_KEEP_ALIVE, WAIT_CLIENT = Wait.REQUEST, Wait.KEEP_ALIVE, Wait.CLIENT


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # as ClientConnection
class ConnectionTimeouts(ClientParts):
    """The part of :class:`~rubrisproxy.frontend.ClientConnection` that times its client.

    One timer runs the timeout that applies (``_waiting``): ``http-request`` while a head is
    being read, ``http-keep-alive`` between requests, ``client`` while the client is expected
    to send a body or to read a response (a client still taking what is written, slowly, is
    not cut). A closing connection has its own timer (:meth:`_close_expired`).
    """

    def client_stalled(self, stalled: bool) -> None:
        """The client stopped (or resumed) reading the response: run ``timeout client`` meanwhile."""
        if stalled:
            self._wait(WAIT_CLIENT)
        elif self._waiting is WAIT_CLIENT:
            self._settle()

    def _upload_stalled(self, stalled: bool) -> None:
        """The server stopped (or resumed) taking the request body: the client gets a whole ``timeout client``
        from when the server takes more, as it was not the one stalling."""
        if not stalled and self._waiting is WAIT_CLIENT and self.relay is None:
            self._deadline.set(self.frontend.timeouts.client)

    def _settle(self) -> None:
        """Arm the timer that applies when the client is not stalled."""
        current = self.current
        if current is not None:
            self._wait(WAIT_CLIENT if current is self._receiving and current.head.has_body else None)
        elif self._queued:
            self._wait(None)  # about to start
        else:
            self._wait(WAIT_REQUEST if self.parser.in_message else WAIT_KEEP_ALIVE)

    def _close_expired(self) -> None:
        timer = self._close_timer
        assert timer is not None  # it is what fired
        if self._progressed():
            timer.set(self.frontend.timeouts.client)
        else:
            self.transport.abortConnection()

    def _progressed(self) -> bool:
        """Whether the client took some of what was written since the last look (``timeout client`` is about
        inactivity: a client that reads slowly but steadily is not cut)."""
        delivered = self.bytes_out - unsent(self.transport)
        if delivered == self._delivered:
            return False
        self._delivered = delivered
        return True

    def _server_stalled(self) -> bool:
        """Whether the request body waits on a server that takes none of it (``timeout server`` times that)."""
        current = self.current
        return current is not None and current is self._receiving and self.gate.paused_for(BACKPRESSURE)

    def _wait(self, waiting: Wait | None) -> None:
        self._waiting = waiting
        if waiting is None:
            self._deadline.clear()
            return
        timeouts = self.frontend.timeouts
        if waiting is WAIT_KEEP_ALIVE:
            self._deadline.set(timeouts.http_keep_alive)
        elif waiting is WAIT_REQUEST:
            self._deadline.set(timeouts.http_request)
        else:
            self._delivered = self.bytes_out - unsent(self.transport)
            self._deadline.set(timeouts.client)

    def _timed_out(self) -> None:
        waiting = self._waiting
        if waiting is WAIT_CLIENT and (self._progressed() or self._server_stalled()):
            self._deadline.set(self.frontend.timeouts.client)
            return
        self._waiting = None
        if waiting is None:
            return
        if waiting is WAIT_CLIENT and self.current is not None:
            self.current.client_timed_out()
        elif waiting is WAIT_REQUEST and self.parser.in_message:
            self._answer_error(HTTPError(408, "request head not received in time"), Termination.REQUEST_TIMEOUT)
        else:
            self.end(ConnectionEnd.TIMEOUT)
