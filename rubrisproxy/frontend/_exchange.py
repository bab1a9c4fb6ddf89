"""One request's trip through the proxy: client request -> origin -> client response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend import OpenPeek
from ..engineio import version
from ..http import NONE, HTTPError, RequestHead, ResponseHead, resolve, serialize_headers
from ..lifecycle import Termination
from ..origin import OriginConnection
from ..routing import is_websocket_upgrade
from ..websocket import check_switch
from ._dispatch import ORIGIN, State
from ._heads import VIA, Framing, origin_request_head
from ._interim import interim_response
from ._pinning import asks_connection_auth
from ._resubmit import Resubmitting
from ._upgrade import ExchangeHandoff, accept_upgrade

if TYPE_CHECKING:
    from ..backend import PollPeek, Server
    from ._client import ExchangeClient
    from ._rule_actions import RuleRun

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: A body this small cannot outgrow the client's socket buffer: no flow control needed.
_SMALL_BODY = 65536
# The states it moves through, as module names: a member read through its Enum class costs a descriptor call.
_STARTING, _WAITING, _ANSWERING, _RELAYING, _UPGRADED, _DONE = (
    State.STARTING, State.WAITING, State.ANSWERING, State.RELAYING, State.UPGRADED, State.DONE
)
_OK = Termination.OK
# Framing's values as module names too (a class attribute read is a type look-up).
_NO_BODY, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


class Exchange(Resubmitting):
    """Relays one request to a server of the frontend's backend and the response back.

    Bodies stream with flow control: while the request body flows, the client's
    :class:`~rubrisproxy.flow.ReadGate` is the origin transport's producer; while the
    response body flows, the origin's gate is the client transport's producer.
    A forward proxy's requests are :class:`~rubrisproxy.frontend._forward_exchange.ForwardExchange`
    objects, which choose their destination themselves. Its bases get it a server connection
    (:class:`~rubrisproxy.frontend._dispatch.Dispatch`) and end it, answering a failure
    (:class:`~rubrisproxy.frontend._exchange_ending.ExchangeEnding`), and log in to it when its backend has
    credentials (:class:`~rubrisproxy.frontend._resubmit.Resubmitting`).

    ``_state`` is one of :class:`State`: ``STARTING`` until a server is chosen, then ``QUEUED``
    (a full backend) or straight to ``CONNECTING``; ``WAITING`` once the request head is sent (a
    stale pooled connection sends it back to ``CONNECTING`` once); ``ANSWERING`` once the
    response head is read and ``RELAYING`` once it is written, or ``UPGRADED`` at a 101; ``DONE``
    from any of them when the exchange ends. The request body's own end (``request_done``) is the
    client's pace and independent of it: a server may answer before the body is all sent.
    """

    __slots__ = ("keep_alive", "_framing", "_request_bytes", "_eio_peek", "_eio_poll", "rules")

    def __init__(self, client: ExchangeClient, head: RequestHead, now: float, wait: float) -> None:
        # Its bases' slots (described where each declares them) are set here: one call per request, not one per base.
        self.started_at, self.wait = now, wait  # Timing's: -1 for a step that did not happen
        self.queued_at = self.dequeued_at = self.connect_started = self.connected_at = -1.0
        self.sent_at = self.response_at = -1.0
        self.status = self.bytes_in = self.bytes_out = self.retries = 0
        self.client, self.head, self.clock = client, head, client.frontend.clock  # Dispatch's
        self.client_address = client.client_of(head)  # on a proxied connection, each request's own client
        self._state = _STARTING
        self.server = self.connection = self.backend = self._last_failure = None
        self.request_done = self._holds_slot = self._pin = False
        self._tried = NONE
        self.termination = self.session = None  # ExchangeEnding's
        self._stale_retry_done = False
        self.pending_head = self._pending = None
        self.keep_alive = False  # the response head said the connection stays open
        self._framing = _NO_BODY
        self._request_bytes = b""
        self.websocket: ExchangeHandoff | None = None  # a WebSocket upgrade that passed its checks
        self._eio_peek: OpenPeek | None = None  # an Engine.IO handshake response's body, until its sid is found
        self._eio_poll: PollPeek | None = None  # a look at a polling body of an Engine.IO session that may upgrade
        self._login = None  # Resubmitting's: the proxy's own login to the server, when the backend has one
        self.rules: RuleRun | None = None  # its run through the frontend's HTTP rules, if it has any

    @property
    def response_head_sent(self) -> bool:
        return self._state is _RELAYING

    @property
    def responding(self) -> bool:
        """Whether a response head is read (held or written) and the exchange is not over."""
        state = self._state
        return state is _ANSWERING or state is _RELAYING

    # Start: check and route the request

    def start(self) -> None:
        head = self.head
        if head.method == b"CONNECT":
            self.fail(HTTPError(501, "CONNECT is not served by a reverse-proxy frontend"), Termination.NOT_IMPLEMENTED)
            return
        frontend = self.client.frontend
        router = frontend.router
        assert router is not None
        try:
            resolved = resolve(head)  # the normalised target: what routes match and what the origin receives
        except HTTPError as error:
            self.fail(error, Termination.BAD_REQUEST)
            return
        rules = frontend.rules
        if rules is None:
            target = router.default if router.trivial else router.route(head)
        else:  # the frontend's request rules, the route, the route's (which may answer the request)
            chosen = rules.start(self, router)
            if chosen is None:
                return
            target = chosen
        if isinstance(target, int):
            self.fail(HTTPError(target, "denied by a route"), Termination.DENIED)
            return
        self.backend = target
        origin_form = resolved.origin_form
        if target.engineio is not None and head.target.find(b"sid=") >= 0:  # not ``in``: see is_engineio
            self._eio_poll, origin_form = target.engineio.session_request(head, origin_form)
        if head.upgrade and is_websocket_upgrade(head):
            self.websocket = accept_upgrade(self, router, target)
            if self.websocket is None:
                return
        self._request_bytes = origin_request_head(self, origin_form, resolved.host if resolved.absolute else None)
        if target.login is not None:
            self._begin_login(target.login, False, b"GET" if self.websocket else head.method, origin_form)
        self._assign()

    def _connected(self, connection: OriginConnection) -> None:
        if self._state is _DONE:  # its slot was freed when it finished
            self.client.frontend.pool.release(connection, reusable=True)  # never used: as good as idle
            return
        self.connection = connection
        self._state = _WAITING
        self.connected_at = now = self.clock.seconds()
        if connection.reused:
            self.connect_started = now
        elif self.connect_started >= 0:
            backend = self.backend
            assert backend is not None  # chosen before any connection is made
            backend.connect_seconds.observe(now - self.connect_started)
        request = self._request_bytes
        if self._login is not None:
            assert self.server is not None  # the connection is to it
            request = self._login.head(self.server, request)
        if self.websocket is None:
            connection.send(self, self.head.method, request)
        else:
            backend = self.backend
            assert backend is not None
            timeout = backend.websocket.open_handshake_timeout
            connection.send(self, b"GET", request, upgrade=True, timeout=timeout)
        self.sent_at = now
        head = self.head
        if head.has_body:
            client = self.client
            if head.expect_continue and not self.request_done and not self.bytes_in:
                client.write(_CONTINUE)
                self.bytes_out += len(_CONTINUE)
            for chunk in self._pending or ():
                self._send_body(connection, chunk)
            if self.request_done:
                self._send_body_end()
            else:
                connection.upload.attach(client.gate)
            client.gate.resume(ORIGIN)

    # The request body, as the client connection delivers it

    def client_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._eio_poll is not None:
            self._eio_poll.feed(data)
        if self._login is not None:
            self._login.hold(data)
        if self._state is _DONE:
            return
        connection = self.connection
        if connection is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)  # bounded: the gate is paused until connected
        else:
            self._send_body(connection, data)

    def client_end(self) -> None:
        self.request_done = True
        if self._eio_poll is not None and self._eio_poll.post:
            self._eio_poll.end()
        if self.connection is not None and self.head.has_body and self._state is not _DONE:
            self._send_body_end()

    def _send_body(self, connection: OriginConnection, data: bytes) -> None:
        if self.head.chunked:
            connection.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            connection.write(data)

    def _send_body_end(self) -> None:
        self._pending = None
        connection = self.connection
        assert connection is not None
        if self.head.chunked:
            connection.write(b"0\r\n\r\n")
        connection.upload.detach()

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
