"""How a client connection ends: why (the first reason given), counted, logged, told to the handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr, trait
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from .._compat import unsent
from ..accesslog import ConnectionRecord
from ..lifecycle import ConnectionEnd, ConnectionInfo, RefuseConnection, Termination
from ._client_parts import ClientParts
from ._phase import LOST
from ._timeouts import Wait

if TYPE_CHECKING:
    from ._exchange_ending import ExchangeEnding


# The members the per-connection paths below compare with, as module names: reading one off its Enum class costs
# about as much as the rest of end_after.
_CLIENT_CLOSE, _SERVER_CLOSE, _TIMEOUT = ConnectionEnd.CLIENT_CLOSE, ConnectionEnd.SERVER_CLOSE, ConnectionEnd.TIMEOUT
_READ_CLOSED, _WRITE_ERROR = ConnectionEnd.SOCKET_READ_CLOSED, ConnectionEnd.SOCKET_WRITE_ERROR
_READ_ERROR, _PROTOCOL_WRITE_ERROR = ConnectionEnd.PROTOCOL_READ_ERROR, ConnectionEnd.PROTOCOL_WRITE_ERROR
_SERVER_ERROR = ConnectionEnd.SERVER_ERROR
_CLIENT_TIMEOUT, _BAD_REQUEST, _CLIENT_ABORT = Termination.CLIENT_TIMEOUT, Termination.BAD_REQUEST, Termination.CLIENT_ABORT
_WAIT_CLIENT = Wait.CLIENT


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # as ClientConnection
class ConnectionEnding(ClientParts):
    """The part of :class:`~rubrisproxy.frontend.ClientConnection` that reports on it: the connection handlers
    hear of it as it opens (:meth:`announce`); its end reason is the first one given (:meth:`note_end`), or
    if none was, read from how it closed (:meth:`_end_from`), and once it is gone it is counted, logged and
    told to the termination handlers (:meth:`_ended`)."""

    def announce(self) -> None:
        """Tell the connection handlers of this connection; one may refuse it. Then count it against the
        frontend's ``connections`` rate limits, if it has any: one too many is closed."""
        self._tell_handlers()
        rules = self.frontend.rules
        if rules is not None and rules.connection_limits and self.end_reason is None:
            source = self.source_address()
            held = rules.connection_opened(source) if source is not None else []
            if held is None and self.adopted:
                return  # accepted by the process it came from: a reset here would end it there too
            if held is None:
                self.log.info("closed a connection from {peer}: over a rate limit's connections", peer=source)
                self.end(ConnectionEnd.RATE_LIMITED)
                self.transport.abortConnection()
                return
            self.limits_held = held

    def source_address(self) -> str | None:
        """The address a connection limit counts this connection under: its client, when it is known as it
        opens (a local connection's peer)."""
        return self.client_address

    def _tell_handlers(self) -> None:
        for handler in self.handlers.opened:
            try:
                handler.connection_opened(self.info())
            except RefuseConnection as refusal:
                if self.adopted:  # accepted by the process it came from: a reset here would end it there too
                    self.log.info("{handler} refused a connection taken over from another process; it is kept",
                                  handler=type(handler).__name__)
                    continue
                self.log.info("{handler} refused a connection from {peer}: {why}",
                              handler=type(handler).__name__, peer=self.client_address, why=str(refusal))
                self.end(ConnectionEnd.SERVER_CLOSE)
                self.transport.abortConnection()
                return
            except Exception:
                self.log.failure("connection handler {handler} failed", handler=type(handler).__name__)

    def _end_from(self, reason: Failure | None) -> ConnectionEnd:
        """Why the connection ended when the proxy did not decide it: the client, or the socket."""
        clean = reason is None or isinstance(reason.value, ConnectionDone)  # Failure.check formats qualified names
        if self.relay is not None:
            return _CLIENT_CLOSE if clean else _READ_CLOSED
        current = self.current
        writing = current is not None and current.responding
        if writing and (not clean or self._waiting is _WAIT_CLIENT or unsent(self.transport)):
            # Reset while a response was being written, or closed with some of it never sent (a reset
            # can read as a clean close when the socket was only being written to).
            return _WRITE_ERROR
        if clean:
            in_request = current is not None or (self.parser is not None and self.parser.in_message)
            return _READ_CLOSED if in_request else _CLIENT_CLOSE
        return _READ_CLOSED

    def _ended(self, end: ConnectionEnd) -> None:
        """Count, log and tell the termination handlers, once."""
        frontend = self.frontend
        frontend.bytes_in += self.bytes_in  # it leaves frontend.connections: its bytes stay in the totals
        frontend.bytes_out += self.bytes_out
        try:
            self._report_end(end)
        except Exception:
            self.log.failure("reporting the end of a connection from {peer} failed", peer=self.client_address)

    def _report_end(self, end: ConnectionEnd) -> None:
        frontend = self.frontend
        ends = frontend.connection_ends
        name = end._value_  # not .value: an Enum property, five times the cost on 3.11
        ends[name] = ends.get(name, 0) + 1
        if frontend.clients is not None:
            frontend.clients.connection_ended(self, end)
        access_log = frontend.access_log
        handlers = self.handlers.ended
        if access_log.writes_connections or handlers:
            info = self.info()
            if access_log.writes_connections:
                access_log.write_connection(ConnectionRecord(
                    info.opened_at + info.duration, info.peer, info.frontend, name, info.client or "-", info.requests, info.responses,
                    info.bytes_in, info.bytes_out, info.duration * 1000,
                ))
            for handler in handlers:
                try:
                    handler.connection_ended(info, end)
                except Exception:
                    self.log.failure("termination handler {handler} failed", handler=type(handler).__name__)

    def owner(self) -> str | None:
        """The client this connection serves now: its own client, or on a proxied connection, the client
        whose request is in progress."""
        return self.client_address

    def info(self) -> ConnectionInfo:
        """This connection as lifecycle handlers see it."""
        frontend = self.frontend
        session = self.current.session if self.current is not None else None
        return ConnectionInfo(
            frontend=frontend.name, peer=getattr(self, "peer", self.client_address), proxied=self.proxied,
            opened_at=self.opened_at, source=getattr(self, "source", None), client=self.owner(), session=session.id if session is not None else None, requests=self.requests, responses=self.responses,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out, duration=frontend.clock.seconds() - self.opened_at,
        )

    def end(self, reason: ConnectionEnd) -> None:
        """Close the connection for ``reason`` (the first reason given is the one reported)."""
        self.note_end(reason)
        if self._phase is not LOST:
            self.close()

    def note_end(self, reason: ConnectionEnd) -> None:
        """Record why the connection is ending, unless a reason is already recorded."""
        if self.end_reason is None:
            self.end_reason = reason

    def websocket_ended(self, termination: Termination) -> None:
        """The WebSocket this connection became has ended: its termination is the connection's end."""
        self.note_end(upgrade_end(termination))


#: Request terminations that mean the server side failed.
_SERVER_FAILURES = frozenset((
    Termination.NO_SERVER, Termination.CONNECT_TIMEOUT, Termination.SERVER_TIMEOUT, Termination.SERVER_ABORT,
    Termination.BAD_RESPONSE, Termination.QUEUE_TIMEOUT, Termination.SESSION_GONE,
))
#: How a WebSocket's end reads as its connection's end.
_UPGRADE_ENDS = {
    Termination.CLIENT_CLOSE: ConnectionEnd.CLIENT_CLOSE, Termination.SERVER_CLOSE: ConnectionEnd.SERVER_CLOSE,
    Termination.IDLE_TIMEOUT: ConnectionEnd.TIMEOUT, Termination.PING_TIMEOUT: ConnectionEnd.TIMEOUT,
    Termination.PROTOCOL_ERROR: ConnectionEnd.PROTOCOL_READ_ERROR, Termination.CLIENT_ABORT: ConnectionEnd.SOCKET_READ_CLOSED,
}


def end_after(exchange: ExchangeEnding, relayed: bool) -> ConnectionEnd:
    """Why a connection closes after ``exchange``, which did not keep it alive (``relayed``: it had written
    its response head)."""
    termination = exchange.termination
    if termination in _SERVER_FAILURES:
        return _PROTOCOL_WRITE_ERROR if relayed else _SERVER_ERROR
    if termination is _CLIENT_TIMEOUT:
        return _TIMEOUT
    if termination is _BAD_REQUEST:
        return _READ_ERROR
    if termination is _CLIENT_ABORT:
        return _READ_CLOSED
    if exchange.head.wants_close:
        return _CLIENT_CLOSE
    return _SERVER_CLOSE


def upgrade_end(termination: Termination) -> ConnectionEnd:
    """The connection end a WebSocket's termination stands for."""
    return _UPGRADE_ENDS.get(termination, ConnectionEnd.SERVER_ERROR if termination in _SERVER_FAILURES
                             or termination is Termination.RESUME_FAILED else ConnectionEnd.SERVER_CLOSE)

