"""How requests, connections and client sessions end, and the handlers users write to see it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from zope.interface import Interface


class Termination(StrEnum):
    """Why a request's exchange (or the WebSocket it upgraded to) ended, as written in the access log."""

    OK = "ok"
    BAD_REQUEST = "bad-request"  # refused by the parser or a limit (4xx)
    REQUEST_TIMEOUT = "request-timeout"  # timeout http-request: the head came too slowly
    CLIENT_TIMEOUT = "client-timeout"  # timeout client: the client stalled mid-exchange
    CLIENT_ABORT = "client-abort"  # the client closed before the response was sent
    NO_SERVER = "no-server"  # every connect attempt failed (503)
    CONNECT_TIMEOUT = "connect-timeout"  # the last connect attempt timed out (503)
    SERVER_TIMEOUT = "server-timeout"  # timeout server: the origin stalled (504)
    SERVER_ABORT = "server-abort"  # the origin closed or reset mid-exchange (502)
    BAD_RESPONSE = "bad-response"  # the origin's response was malformed (502)
    NOT_IMPLEMENTED = "not-implemented"  # a request this frontend does not serve (501)
    DENIED = "denied"  # refused by a route's deny rule, or an http-request deny rule
    REDIRECT = "redirect"  # answered by an http-request redirect rule
    RATE_LIMITED = "rate-limited"  # over an http-request rate limit (429)
    QUEUE_TIMEOUT = "queue-timeout"  # every server stayed full past timeout queue (503)
    SESSION_GONE = "session-gone"  # an Engine.IO request whose session's server is gone (400, as Engine.IO's own)
    SHUTDOWN = "shutdown"  # cut by the end of the shutdown grace period
    CLIENT_CLOSE = "client-close"  # a WebSocket the client closed
    SERVER_CLOSE = "server-close"  # a WebSocket the backend closed
    IDLE_TIMEOUT = "idle-timeout"  # a WebSocket idle past timeout tunnel (or a half-closed one past client-fin/server-fin)
    PING_TIMEOUT = "ping-timeout"  # a WebSocket peer that did not answer a ping in time
    PROTOCOL_ERROR = "protocol-error"  # a WebSocket peer broke the protocol or a limit (1002, 1007, 1009)
    DRAINED = "drained"  # a tunnel closed because its server was drained, put in maintenance or removed
    RESUME_FAILED = "resume-failed"  # a session could not move to another server (buffer full, resume-timeout)
    AUTH_FAILED = "auth-failed"  # a parent proxy refused the proxy's own credentials, or asked for ones it could not send (502)


class ConnectionEnd(StrEnum):
    """Why a client connection ended, as termination handlers, the access log and the counters see it."""

    CLIENT_CLOSE = "client-close"  # the client closed between requests, or asked to (Connection: close)
    SERVER_CLOSE = "server-close"  # the proxy closed it by choice (a close-delimited body, drain, a refusal)
    SOCKET_READ_CLOSED = "socket-read-closed"  # the client's side ended mid-request, or was reset
    SOCKET_WRITE_ERROR = "socket-write-error"  # the connection failed while a response was being written
    MAX_READS = "max-reads"  # it had sent max-reads requests
    MAX_WRITES = "max-writes"  # it had been sent max-writes responses
    PROTOCOL_READ_ERROR = "protocol-read-error"  # the client broke HTTP (or the PROXY protocol): 4xx, then closed
    PROTOCOL_WRITE_ERROR = "protocol-write-error"  # a response begun could not be completed: the client was cut
    SERVER_ERROR = "server-error"  # closed after the server side failed (an error answer that closes, a lost pin)
    TIMEOUT = "timeout"  # a timeout: http-request, http-keep-alive, client, tunnel
    RATE_LIMITED = "rate-limited"  # closed as it opened: its source had a rate-limit rule's connections open


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A client connection as lifecycle handlers see it. Times are seconds on the proxy's clock."""

    frontend: str
    peer: str  # the TCP peer (a proxy, on a proxied frontend)
    proxied: bool
    opened_at: float
    source: str | None = None  # the source a PROXY header named, if any
    client: str | None = None  # the client that owned the connection (its request was in progress), if any
    session: str | None = None  # that client's session id, if it has one
    requests: int = 0
    responses: int = 0  # written to the client, a 101 and the proxy's own error answers included
    bytes_in: int = 0
    bytes_out: int = 0
    duration: float = 0.0


class RefuseConnection(Exception):
    """Raised by :meth:`IConnectionHandler.connection_opened` to close the new connection at once."""


class IConnectionHandler(Interface):
    """Called for each new client connection; may refuse it."""

    def connection_opened(connection: ConnectionInfo) -> None:
        """Return to accept the connection, or raise :class:`RefuseConnection`."""


class ITerminationHandler(Interface):
    """Called exactly once per client connection, when it has ended."""

    def connection_ended(connection: ConnectionInfo, reason: ConnectionEnd) -> None:
        """``connection`` (with its final counters and owner) ended for ``reason``."""


class SessionEnd(StrEnum):
    """Why a client session ended."""

    EXPIRED = "expired"  # no request within the session's inactivity timeout
    CLOSED_BY_CLIENT = "closed-by-client"
    CLOSED_BY_SERVER = "closed-by-server"


class IClientHandler(Interface):
    """Called when a client session ends (not when a connection does: a session outlives its connections)."""

    def client_destroyed(session: Any, reason: SessionEnd) -> None:
        """``session`` (a :class:`rubrisproxy.clients.ClientSession`) ended for ``reason``."""


HANDLER_INTERFACES = (IConnectionHandler, ITerminationHandler, IClientHandler)


@dataclass(frozen=True)
class LifecycleHandlers:
    """The handlers configured, by what they handle (one object may handle several)."""

    opened: tuple[Any, ...] = ()
    ended: tuple[Any, ...] = ()
    destroyed: tuple[Any, ...] = ()

    @classmethod
    def of(cls, handlers: tuple[Any, ...]) -> LifecycleHandlers:
        return cls(
            tuple(h for h in handlers if IConnectionHandler.providedBy(h)),
            tuple(h for h in handlers if ITerminationHandler.providedBy(h)),
            tuple(h for h in handlers if IClientHandler.providedBy(h)),
        )

    def __bool__(self) -> bool:
        return bool(self.opened or self.ended or self.destroyed)


NO_HANDLERS = LifecycleHandlers()
