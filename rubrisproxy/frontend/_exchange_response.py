"""The response side of an exchange: the origin's response head, body and end relayed to the client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend import OpenPeek
from ..engineio import version
from ..http import HTTPError, ResponseHead, serialize_headers
from ..lifecycle import Termination
from ..websocket import check_switch
from ._dispatch import State
from ._heads import VIA, Framing
from ._interim import interim_response
from ._pinning import asks_connection_auth
from ._resubmit import Resubmitting

if TYPE_CHECKING:
    from ..backend import PollPeek, Server
    from ._rule_actions import RuleRun

#: A body this small cannot outgrow the client's socket buffer: no flow control needed.
_SMALL_BODY = 65536
# The states it moves through, as module names: a member read through its Enum class costs a descriptor call.
_WAITING, _ANSWERING, _RELAYING, _UPGRADED = State.WAITING, State.ANSWERING, State.RELAYING, State.UPGRADED
_OK = Termination.OK
# Framing's values as module names too (a class attribute read is a type look-up).
_NO_BODY, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


class Responding(Resubmitting):
    """The part of an :class:`~rubrisproxy.frontend.Exchange` that its origin connection's response parser drives:
    the response head made the client's (stickiness, passive health, pinning and Engine.IO learned on the way),
    its body framed for the client under flow control, its end releasing the origin connection; interim responses
    relayed, a 101 handed to the WebSocket's tunnel or session."""

    __slots__ = ("keep_alive", "_framing", "_request_bytes", "_eio_peek", "_eio_poll", "rules")

    keep_alive: bool  # the response head said the connection stays open
    _framing: int
    _request_bytes: bytes
    _eio_peek: OpenPeek | None  # an Engine.IO handshake response's body, until its sid is found
    _eio_poll: PollPeek | None  # a look at a polling body of an Engine.IO session that may upgrade
    rules: RuleRun | None  # its run through the frontend's HTTP rules, if it has any

    # The response, as the origin connection's parser delivers it

    def _learn(self, head: ResponseHead, has_body: bool, server: Server, status: int) -> None:
        """What the backend learns from a response: stickiness (which may set a cookie), the server's passive
        health, whether the client is pinned to this connection, an Engine.IO session's server."""
        backend = self.backend
        assert backend is not None
        if backend.sticky:
            head.forward = backend.sticky_response(head.forward, self, server)
        if status >= 500 or server.consecutive_errors:  # else passive health has nothing to do: no call
            backend.report_response(server, status)
        self._pin = (status == 401 and asks_connection_auth(head.headers)) or backend.config.pin
        engineio = backend.engineio
        if engineio is not None and status == 200 and engineio.learn_response(self.head, head.headers, server.name):
            # the open packet, with its sid, starts the body
            peek = self._eio_peek = OpenPeek(engineio, server.name, version(self.head.target)) if has_body else None
            if peek is not None and peek.holds:  # its length changes: chunked, or delimited by the close or the stream
                head.forward = [pair for pair in head.forward if pair[0].lower() != b"content-length"]
        elif self._eio_poll is not None and (status != 200 or not has_body) and not self._eio_poll.post:
            self._eio_poll = None

    def response_interim(self, head: ResponseHead) -> None:
        """Relay an origin's 1xx as it comes (see :func:`~rubrisproxy.frontend._interim.interim_response`)."""
        if self._state is _WAITING and (data := interim_response(head, self.head)):
            self.bytes_out += len(data)
            self.client.write(data)

    def response_head(self, head: ResponseHead, has_body: bool) -> None:
        login = self._login
        if login is not None and head.status == login.status and self._challenged(login, head):
            return  # answered by the proxy: the request goes again
        self._state = _ANSWERING
        self.response_at = self.clock.seconds()
        self.status = status = head.status
        server = self.server
        assert server is not None
        self._learn(head, has_body, server, status)
        headers = head.forward
        client_head = self.head
        rules = self.rules
        if rules is not None:
            headers = rules.respond(headers, server.name, client_head)
        streamed = has_body  # through flow control: any body but a small one of known length
        if not has_body:
            framing = _NO_BODY
        elif head.content_length is not None and not head.chunked and (self._eio_peek is None or not self._eio_peek.holds):
            framing = _LENGTH
            streamed = head.content_length > _SMALL_BODY
        elif client_head.version == b"1.1":
            framing = _CHUNKED
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            framing = _CLOSE
        self._framing = framing
        keep_alive = (
            framing != _CLOSE
            and self.request_done
            and not client_head.wants_close
            and not self.client.ends_with(self)
        )
        self.keep_alive = keep_alive
        connection = (
            b"Connection: close\r\n" if not keep_alive
            else b"Connection: keep-alive\r\n" if client_head.version == b"1.0" else b""
        )
        # Held until the first body bytes (or the end of this read) so that a small
        # response leaves in one packet.
        self.pending_head = b"HTTP/1.1 %d %s\r\n%s%s%s\r\n" % (
            head.status, head.reason, serialize_headers(headers), VIA.get(head.version, VIA[b"1.1"]), connection,
        )
        if streamed:
            origin = self.connection
            assert origin is not None and origin.gate is not None  # connected: it answered
            self.client.download.attach(origin.gate)

    def response_upgraded(self, head: ResponseHead, rest: bytes) -> None:
        """The backend accepted the WebSocket upgrade: hand both connections to a tunnel or a session."""
        self.response_at = self.clock.seconds()
        websocket, connection, backend, server = self.websocket, self.connection, self.backend, self.server
        assert websocket is not None and websocket.upgrade is not None
        assert connection is not None and backend is not None and server is not None
        problem = check_switch(head, websocket.websocket_key or websocket.upgrade.key, websocket.upgrade.protocols)
        if problem is not None:
            self.origin_failed(HTTPError(502, f"{server} answered the WebSocket upgrade wrongly: {problem}"))
            return
        self._state = _UPGRADED
        self.status = 101
        if server.consecutive_errors:
            backend.report_response(server, 101)
        self.connection = None
        self.client.frontend.pool.hand_over(connection)
        if backend.sticky:
            head.forward = backend.sticky_response(head.forward, self, server)
        request, self._request_bytes = self._request_bytes, b""
        websocket.switched(head, rest, connection, request)

    def flush_head(self) -> None:
        """Send the response head now (the origin's read ended before any body)."""
        self._send_response(b"")

    def _send_response(self, data: bytes) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            self._state = _RELAYING
            data = head + data
        self.bytes_out += len(data)
        self.client.write(data)

    def response_body(self, data: bytes) -> None:
        peek = self._eio_peek
        if peek is not None:
            data = peek.feed(data)
            if peek.done:
                self._eio_peek = None
            if not data:
                return  # held until its open packet is read, to prefix the sid (its length changes: not LENGTH framed)
        elif self._eio_poll is not None and not self._eio_poll.post:
            self._eio_poll.feed(data)
        if self._framing == _CHUNKED:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._send_response(data)

    def response_end(self) -> None:
        client = self.client
        if self._eio_peek is not None:
            peek, self._eio_peek = self._eio_peek, None
            if held := peek.end():
                self.response_body(held)  # the body ended before an open packet: sent as it came
        if self._eio_poll is not None and not self._eio_poll.post:
            self._eio_poll.end()
        if self._framing == _CHUNKED:
            self._send_response(b"0\r\n\r\n")
        elif self.pending_head is not None:
            self._send_response(b"")
        if client.download.producer is not None:
            client.download.detach()
        connection = self.connection
        if connection is not None:
            self._release(connection, reusable=connection.finish() and self.request_done)
        self._finish(_OK, keep_alive=self.keep_alive and self.request_done)

    def origin_backpressure(self, paused: bool) -> None:
        self.client.client_stalled(paused)
