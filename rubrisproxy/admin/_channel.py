"""The admin listener's HTTP connections: a body over a small limit is refused before it is read, and a
request must arrive in time."""

from __future__ import annotations

import json
from enum import Enum
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server

from ..flow import half_close

#: The largest request body the admin API takes; every call's body is a small JSON object.
MAX_BODY = 65536
#: Seconds a refused request's client has to read the answer (its further bytes are dropped) before the
#: connection is cut: closed at once, a socket with bytes unread would reset, and the answer could be lost.
LINGER = 2.0


class Phase(Enum):
    """Where an admin connection is."""

    AWAITING = "awaiting a request"  # the request timer runs
    HANDLING = "handling a request"  # the answer is being made
    REFUSED = "refused"  # answered 400 or 413: what comes in is dropped until the client closes or LINGER ends


class AdminRequest(server.Request):
    """A request whose body is held in memory up to :data:`MAX_BODY`; past that (by its Content-Length, or
    by the chunks received) it is answered 413 and the connection closed, without reading the rest. A
    request without exactly one Host header is answered 400 the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_size = 0

    _body: BytesIO  # from gotLength on

    @property
    def _connection(self) -> AdminChannel:
        channel = self.channel
        assert isinstance(channel, AdminChannel)  # an AdminSite's channels are, until the request is over
        return channel

    def gotLength(self, length: int | None) -> None:
        self.content = self._body = BytesIO()
        if len(self.requestHeaders.getRawHeaders(b"host") or ()) != 1:
            # RFC 9112 3.2: no Host, or several, is a bad request (and the loopback-Host rule reads exactly one).
            self._refuse(400, "Bad Request", "a request must carry exactly one Host header")
        elif length is not None and length > MAX_BODY:
            self._refuse(413, "Content Too Large", f"the body is over {MAX_BODY} bytes")

    def handleContentChunk(self, data: bytes) -> None:
        if self._connection.phase is Phase.REFUSED:
            return
        self.body_size += len(data)
        if self.body_size > MAX_BODY:
            self._refuse(413, "Content Too Large", f"the body is over {MAX_BODY} bytes")
            return
        self._body.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._connection.phase is not Phase.REFUSED:
            super().requestReceived(command, path, version)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        body = json.dumps({"status": status, "error": message}).encode() + b"\n"
        self._connection.refuse(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )


class AdminChannel(http.HTTPChannel):
    """An HTTP/1.1 connection whose every request (head and body) must arrive within ``request_timeout``
    of the connection opening or of the previous answer; the factory's ``timeOut`` bounds idleness."""

    request_timeout = 10.0
    phase = Phase.AWAITING
    _request_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._await_request()

    def dataReceived(self, data: bytes) -> None:
        if self.phase is not Phase.REFUSED:
            super().dataReceived(data)

    def allContentReceived(self) -> None:
        if self.phase is Phase.REFUSED:
            return
        self._stop_timer()
        self.phase = Phase.HANDLING
        super().allContentReceived()

    def refuse(self, answer: bytes) -> None:
        """Send ``answer`` to the request being read and close: the write side at once (the client reads
        the answer, then its end), the connection when the client closes or after :data:`LINGER`."""
        self._stop_timer()
        self.phase = Phase.REFUSED
        transport: Any = self.transport
        transport.write(answer)
        if half_close(transport, self.loseConnection):  # the channel's: it unregisters itself as producer first
            self._request_timer = self.callLater(LINGER, self._too_slow)

    def requestDone(self, request: server.Request) -> None:
        self._await_request()  # before the next pipelined request, if any, is parsed
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_timer()
        super().connectionLost(reason)

    def _await_request(self) -> None:
        self._stop_timer()
        self.phase = Phase.AWAITING
        self._request_timer = self.callLater(self.request_timeout, self._too_slow)

    def _stop_timer(self) -> None:
        if self._request_timer is not None:
            if self._request_timer.active():
                self._request_timer.cancel()
            self._request_timer = None

    def _too_slow(self) -> None:
        self._request_timer = None
        transport: Any = self.transport  # TCP, UNIX or TLS: each can abort
        transport.abortConnection()


class AdminSite(server.Site):
    """The admin listener's site: :class:`AdminChannel` connections, :class:`AdminRequest` requests, bodies
    never parsed as forms."""

    protocol = AdminChannel  # type: ignore[assignment]  # Twisted types it as its HTTP/1.1-or-2 wrapper only

    def __init__(self, root: Any, request_timeout: float, idle_timeout: float, reactor: Any = None) -> None:
        super().__init__(root, requestFactory=AdminRequest, logPath=None, timeout=idle_timeout,
                         reactor=reactor, parsePOSTFormSubmission=False)
        self.request_timeout = request_timeout
        self.noisy = False
        self.displayTracebacks = False

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.request_timeout = self.request_timeout
        return channel
