"""One request's trip through the proxy: client request -> origin -> client response."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectError
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..backend import QUEUED, Backend, Server
from ..http import NONE, HTTPError, RequestHead, ResponseHead, error_response, resolve, serialize_headers
from ..lifecycle import Termination
from ..origin import ConnectTimeout, OriginConnection
from ..routing import is_websocket_upgrade
from ..websocket import check_switch
from ._heads import VIA, origin_request_head
from ._pinning import asks_connection_auth, keep_pinned, pinned_connection
from ._timing import Timing
from ._upgrade import ExchangeHandoff, accept_upgrade

if TYPE_CHECKING:
    from ..clients import ClientSession
    from ._connection import ClientConnection

ORIGIN = "origin"
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: A body this small cannot outgrow the client's socket buffer: no flow control needed.
_SMALL_BODY = 65536


class State(Enum):
    """Where an :class:`Exchange` is on its trip (its ``_state``)."""

    STARTING = "starting"  # checked, routed, a server chosen (a forward proxy: authorized, resolved)
    QUEUED = "queued"  # waiting in the backend's queue for a free slot
    CONNECTING = "connecting"  # a server is chosen: its connection is being made
    WAITING = "waiting"  # the request head is sent; no response head yet
    ANSWERING = "answering"  # the response head is read, held in ``pending_head`` to leave with the body
    RELAYING = "relaying"  # the response head is written: an error now cuts the client instead of answering
    UPGRADED = "upgraded"  # a WebSocket (or a CONNECT tunnel) owns both connections
    DONE = "done"  # answered, failed, dropped, or its WebSocket ended: later events are ignored


class _Framing:
    NONE, LENGTH, CHUNKED, CLOSE = range(4)


class Exchange(Timing):
    """Relays one request to a server of the frontend's backend and the response back.

    Bodies stream with flow control: while the request body flows, the client's
    :class:`~rubrisproxy.flow.ReadGate` is the origin transport's producer; while the
    response body flows, the origin's gate is the client transport's producer.
    A forward proxy's requests are :class:`~rubrisproxy.frontend._forward_exchange.ForwardExchange`
    objects, which choose their destination themselves.

    ``_state`` is one of :class:`State`: ``STARTING`` until a server is chosen, then ``QUEUED``
    (a full backend) or straight to ``CONNECTING``; ``WAITING`` once the request head is sent (a
    stale pooled connection sends it back to ``CONNECTING`` once); ``ANSWERING`` once the
    response head is read and ``RELAYING`` once it is written, or ``UPGRADED`` at a 101; ``DONE``
    from any of them when the exchange ends. The request body's own end (``request_done``) is the
    client's pace and independent of it: a server may answer before the body is all sent.
    """

    log = Logger()

    __slots__ = (
        "client", "head", "clock", "server", "connection", "request_done", "keep_alive", "pending_head", "_state",
        "_pending", "_framing", "_stale_retry_done", "_last_failure", "_request_bytes", "backend", "_holds_slot",
        "_tried", "websocket", "_pin", "_eio_peek", "client_address", "termination", "session",
    )

    def __init__(self, client: ClientConnection, head: RequestHead, now: float, wait: float) -> None:
        Timing.__init__(self, now, wait)
        self.client = client
        self.head = head
        self.client_address = client.client_of(head)  # on a proxied connection, each request's own client
        self.termination: Termination | None = None
        self.session: ClientSession | None = None  # the client session the request belongs to, if tracked
        self.clock = client.frontend.clock
        self._state = State.STARTING
        self.server: Server | None = None
        self.connection: OriginConnection | None = None
        self.backend: Backend | None = None
        self.request_done = self.keep_alive = False
        self.pending_head: bytes | None = None  # a response head held back to leave with body bytes
        self._pending: list[bytes] | None = None  # request body read before there was a connection for it
        self._framing = _Framing.NONE
        self._stale_retry_done = False
        self._last_failure: Failure | None = None
        self._request_bytes = b""
        self._holds_slot = False  # a server slot (its ``active`` count) is ours until released
        self._tried: frozenset[Server] = NONE
        self.websocket: ExchangeHandoff | None = None  # a WebSocket upgrade that passed its checks
        self._pin = False  # the origin asked for connection-oriented auth: keep its connection for this client
        self._eio_peek: bytes | None = None  # an Engine.IO handshake response's first bytes, until its sid is found

    @property
    def finished(self) -> bool:
        return self._state is State.DONE

    @property
    def response_head_sent(self) -> bool:
        return self._state is State.RELAYING

    @property
    def responding(self) -> bool:
        """Whether a response head is read (held or written) and the exchange is not over."""
        state = self._state
        return state is State.ANSWERING or state is State.RELAYING

    # Start: choose a server, get a connection

    def start(self) -> None:
        head = self.head
        if head.method == b"CONNECT":
            self.fail(HTTPError(501, "CONNECT is not served by a reverse-proxy frontend"), Termination.NOT_IMPLEMENTED)
            return
        router = self.client.frontend.router
        assert router is not None
        try:
            resolve(head)  # the normalised target: what routes match and what the origin receives
        except HTTPError as error:
            self.fail(error, Termination.BAD_REQUEST)
            return
        target = router.default if router.trivial else router.route(head)
        if isinstance(target, int):
            self.fail(HTTPError(target, "denied by a route"), Termination.DENIED)
            return
        self.backend = target
        if head.upgrade and is_websocket_upgrade(head):
            self.websocket = accept_upgrade(self, router, target)
            if self.websocket is None:
                return
        try:
            self._request_bytes = self._origin_request_head()
        except HTTPError as error:
            self.fail(error, Termination.BAD_REQUEST)
            return
        self._assign()

    def _use_pinned(self, server: Server | None = None) -> bool:
        """Send on the server connection this client is pinned to, if any; True if the request is taken care of."""
        try:
            pinned = pinned_connection(self.client, server)
        except HTTPError as error:
            self.fail(error, Termination.SERVER_ABORT)
            return True
        if pinned is None:
            return False
        self.server = pinned.server
        self._connected(pinned)
        return True

    def _assign(self) -> None:
        if self.client.pinned is not None and self._use_pinned():
            return
        backend = self.backend
        assert backend is not None
        server = backend.assign(self, self._tried)
        if server is QUEUED:
            self._state = State.QUEUED
            self.queued_at = self.clock.seconds()
            if self.head.has_body and not self.request_done:
                self.client.gate.pause(ORIGIN)
        elif server is None:
            self._no_server()
        else:
            self._holds_slot = True
            self._use(server)  # type: ignore[arg-type]

    def _no_server(self) -> None:
        """503: no server could take the request (the last connect failure, if any, says why)."""
        failure = self._last_failure
        timed_out = failure is not None and failure.check(ConnectTimeout)
        why = failure.getErrorMessage() if failure is not None else f"no server of {self.backend.name} is up"  # type: ignore[union-attr]
        self.fail(
            HTTPError(503, f"no server available: {why}"),
            Termination.CONNECT_TIMEOUT if timed_out else Termination.NO_SERVER,
        )

    # What the backend's queue calls

    def client_address_for_balancing(self) -> str:
        return self.client_address

    def dequeued(self, server: Server) -> None:
        """A slot on ``server`` came free for this waiting request."""
        self.dequeued_at = self.clock.seconds()
        self._holds_slot = True
        self._use(server)

    def queue_timed_out(self) -> None:
        self.fail(HTTPError(503, "every server stayed full past timeout queue"), Termination.QUEUE_TIMEOUT)

    def _use(self, server: Server) -> None:
        self.server = server
        pool = self.client.frontend.pool
        connection = pool.take_idle(server)
        if connection is not None:
            self._connected(connection)
        else:
            self._connect(pool.connect(server))

    def _free_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.backend.release(self.server)  # type: ignore[union-attr, arg-type]

    def _connect(self, attempt: Any) -> None:
        self._state = State.CONNECTING
        self.connect_started = self.clock.seconds()
        attempt.addCallbacks(self._connected, self._connect_failed)
        if self.connection is None and self._state is not State.DONE and self.head.has_body and not self.request_done:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it

    def _connect_failed(self, failure: Failure) -> None:
        if self._state is State.DONE:
            return
        server, backend = self.server, self.backend
        assert server is not None and backend is not None
        if not failure.check(ConnectError, ConnectTimeout, OSError):
            self.log.failure("unexpected error connecting to {server}", failure, server=server)
        server.connect_failures += 1
        self.log.warn("connect to {server} failed: {why}", server=server, why=failure.getErrorMessage())
        self._last_failure = failure
        self._free_slot()
        backend.report_error(server, failure.getErrorMessage())
        if self.retries >= backend.retries:
            self._no_server()
            return
        self.retries += 1  # counts attempts made again, as the access log reports them
        server.retries += 1
        if backend.redispatch:
            self._tried = self._tried | {server}
            if not backend.usable(self._tried):
                self._tried = NONE  # every server failed once: go round again
            else:
                server.redispatches += 1  # sent on to another server
            self._assign()
        elif server in backend.usable() and not server.full:
            self._holds_slot = True
            self._use(backend.take(server))
        else:
            self._assign()

    def _connected(self, connection: OriginConnection) -> None:
        if self._state is State.DONE:  # its slot was freed when it finished
            self.client.frontend.pool.release(connection, reusable=True)  # never used: as good as idle
            return
        self.connection = connection
        self._state = State.WAITING
        self.connected_at = now = self.clock.seconds()
        if connection.reused:
            self.connect_started = now
        elif self.connect_started >= 0:
            self.backend.connect_seconds.observe(now - self.connect_started)  # type: ignore[union-attr]
        if self.websocket is None:
            connection.send(self, self.head.method, self._request_bytes)
        else:
            timeout = self.backend.websocket.open_handshake_timeout  # type: ignore[union-attr]
            connection.send(self, b"GET", self._request_bytes, upgrade=True, timeout=timeout)
        self.sent_at = now
        head = self.head
        if head.has_body:
            client = self.client
            if head.expect_continue and not self.request_done and not self.bytes_in:
                client.write(_CONTINUE)
                self.bytes_out += len(_CONTINUE)
            for chunk in self._pending or ():
                self._send_body(chunk)
            if self.request_done:
                self._send_body_end()
            else:
                connection.upload.attach(client.gate)
            client.gate.resume(ORIGIN)

    # The request body, as the client connection delivers it

    def client_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._state is State.DONE:
            return
        if self.connection is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)  # bounded: the gate is paused until connected
        else:
            self._send_body(data)

    def client_end(self) -> None:
        self.request_done = True
        if self.connection is not None and self.head.has_body and self._state is not State.DONE:
            self._send_body_end()

    def _send_body(self, data: bytes) -> None:
        if self.head.chunked:
            self.connection.write(b"%x\r\n%s\r\n" % (len(data), data))  # type: ignore[union-attr]
        else:
            self.connection.write(data)  # type: ignore[union-attr]

    def _send_body_end(self) -> None:
        self._pending = None
        connection = self.connection
        assert connection is not None
        if self.head.chunked:
            connection.write(b"0\r\n\r\n")
        connection.upload.detach()

    # The response, as the origin connection's parser delivers it

    def response_head(self, head: ResponseHead, has_body: bool) -> None:
        self._state = State.ANSWERING
        self.response_at = self.clock.seconds()
        self.status = status = head.status
        server, backend = self.server, self.backend
        assert server is not None and backend is not None
        if backend.sticky:
            head.forward = backend.sticky_response(head.forward, self, server)
        if status >= 500 and backend.passive.on_5xx:  # passive health: the server answers, badly
            backend.report_error(server, f"HTTP {status}")
        elif server.consecutive_errors:
            server.consecutive_errors = 0
        if (status == 401 and asks_connection_auth(head.headers)) or backend.config.pin:
            self._pin = True
        engineio = backend.engineio
        if engineio is not None and status == 200 and engineio.learn_response(self.head, head.headers, server.name):
            if has_body:
                self._eio_peek = b""  # the open packet, with its sid, starts the body
        headers = head.forward
        client_head = self.head
        if not has_body:
            framing = _Framing.NONE
        elif head.content_length is not None and not head.chunked:
            framing = _Framing.LENGTH
        elif client_head.version == b"1.1":
            framing = _Framing.CHUNKED
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            framing = _Framing.CLOSE
        self._framing = framing
        keep_alive = (
            framing != _Framing.CLOSE
            and self.request_done
            and not client_head.wants_close
            and not self.client.ends_with(self)
        )
        self.keep_alive = keep_alive
        if not keep_alive:
            connection = b"Connection: close\r\n"
        elif client_head.version == b"1.0":
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        # Held until the first body bytes (or the end of this read) so that a small
        # response leaves in one packet.
        self.pending_head = b"HTTP/1.1 %d %s\r\n%s%s%s\r\n" % (
            head.status, head.reason, serialize_headers(headers), VIA.get(head.version, VIA[b"1.1"]), connection,
        )
        if has_body and (framing != _Framing.LENGTH or head.content_length > _SMALL_BODY):  # type: ignore[operator]
            self.client.download.attach(self.connection.gate)  # type: ignore[union-attr, arg-type]

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
        self._state = State.UPGRADED
        self.status = 101
        if server.consecutive_errors:
            server.consecutive_errors = 0
        self.connection = None
        self.client.frontend.pool.hand_over(connection)
        if backend.sticky:
            head.forward = backend.sticky_response(head.forward, self, server)
        request, self._request_bytes = self._request_bytes, b""
        websocket.switched(head, rest, connection, request)

    def release_server(self) -> None:
        """Its WebSocket is leaving its server: the slot there is free for others (the server stays, for the log)."""
        self._free_slot()

    def switch_server(self, server: Server) -> None:
        """Its WebSocket moved to ``server``, whose slot it already took."""
        self._free_slot()
        self.server = server
        self._holds_slot = True

    def upgrade_ended(self, termination: Termination, bytes_in: int, bytes_out: int) -> None:
        """The WebSocket this exchange became has ended, having moved ``bytes_in`` and ``bytes_out`` over the
        client's connection: free its server slot and log it."""
        if self._state is State.DONE:
            return
        self._state = State.DONE
        self.termination = termination
        self.bytes_in = bytes_in
        self.bytes_out += bytes_out
        client = self.client
        client.websocket_ended(termination)
        session = self.session
        if session is not None:
            registry = session.registry
            registry.request_ended(session, self.server.name if self.server else None, 101)
            registry.websocket_ended(session, termination in (Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT))
        self._free_slot()
        server = self.server
        if server is not None:
            server.responses[101] = server.responses.get(101, 0) + 1
        now = self.clock.seconds()
        self.count(client.frontend, self.backend, termination, now, True)
        if client.frontend.access_log.enabled:
            self._log(termination, now)

    def flush_head(self) -> None:
        """Send the response head now (the origin's read ended before any body)."""
        self._send_response(b"")

    def _send_response(self, data: bytes) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            self._state = State.RELAYING
            data = head + data
        self.bytes_out += len(data)
        self.client.write(data)

    def response_body(self, data: bytes) -> None:
        if self._eio_peek is not None:
            self._eio_peek = self.backend.engineio.learn_body(self._eio_peek + data, self.server.name)  # type: ignore[union-attr]
        if self._framing == _Framing.CHUNKED:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._send_response(data)

    def response_end(self) -> None:
        client = self.client
        if self._framing == _Framing.CHUNKED:
            self._send_response(b"0\r\n\r\n")
        elif self.pending_head is not None:
            self._send_response(b"")
        if client.download.producer is not None:
            client.download.detach()
        connection = self.connection
        if connection is not None:
            self._release(connection, reusable=connection.finish() and self.request_done)
        self._finish(Termination.OK, keep_alive=self.keep_alive and self.request_done)

    # Failures on the origin side

    def origin_failed(self, error: HTTPError) -> None:
        self._drop_connection()
        self.fail(error, Termination.BAD_RESPONSE)

    def origin_lost(self, reason: Failure) -> None:
        connection = self.connection
        self._drop_connection()
        if self._state is State.DONE:
            return
        if not self.status and connection is not None and self._may_retry_stale(connection):
            self._stale_retry_done = True
            self.retries += 1
            self.log.info("{server} closed a reused connection; retrying on a new one", server=self.server)
            self._connect(self.client.frontend.pool.connect(self.server))  # type: ignore[arg-type]
            return
        self.fail(
            HTTPError(502, f"{self.server} closed the connection: {reason.getErrorMessage()}"),
            Termination.SERVER_ABORT,
        )

    def origin_timed_out(self) -> None:
        self._drop_connection()
        what = "sent nothing" if self.request_done or not self.head.has_body else "took none of the request body"
        self.fail(HTTPError(504, f"{self.server} {what} within timeout server"), Termination.SERVER_TIMEOUT)

    def origin_backpressure(self, paused: bool) -> None:
        self.client.client_stalled(paused)

    def _may_retry_stale(self, connection: OriginConnection) -> bool:
        """A reused connection died before answering: safe to resend only if nothing is lost by it."""
        if self._stale_retry_done or not connection.reused or self.bytes_in:
            return False
        return self.head.method in IDEMPOTENT or connection.bytes_sent == 0

    def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.abort()
            self._release(connection, reusable=False)

    def _release(self, connection: OriginConnection, reusable: bool) -> None:
        self.connection = None
        client = self.client
        if self._pin or connection is client.pinned:
            keep_pinned(client, connection, reusable)
        else:
            client.frontend.pool.release(connection, reusable)
        self._free_slot()

    # Failures on the client side

    def client_lost(self) -> None:
        if self._state is State.DONE:
            return
        self._drop_connection()
        self._finish(Termination.CLIENT_ABORT, keep_alive=False)

    def client_timed_out(self) -> None:
        self._drop_connection()
        self.fail(HTTPError(408, "client stalled past timeout client"), Termination.CLIENT_TIMEOUT)

    def client_failed(self, error: HTTPError) -> None:
        self._drop_connection()
        self.fail(error, Termination.BAD_REQUEST)

    # Ending

    def fail(self, error: HTTPError, termination: Termination) -> None:
        """End with ``error``: answered if no response has started, else the client is cut."""
        if self._state is State.DONE:
            return
        self.pending_head = None  # never sent: the client gets the error instead
        self.log.warn(
            "{method} {target} from {client}: {status} {detail}",
            method=self.head.method.decode("latin-1"), target=self.head.target.decode("latin-1"),
            client=self.client_address, status=error.status, detail=error.detail,
        )
        if self._state is State.RELAYING:
            # A framed body shows the client it was truncated, so what was relayed is still
            # delivered; a close-delimited one, or a stalled client, is reset instead.
            if self._framing == _Framing.CLOSE or termination is Termination.CLIENT_TIMEOUT:
                self.client.transport.abortConnection()
            self._finish(termination, keep_alive=False)
            return
        self.status = error.status
        # A request without a body is whole once its head is read, even if its end is parsed after this.
        whole = self.request_done or not (self.head.has_body or self.head.upgrade)
        keep_alive = whole and error.status >= 500 and not self.head.wants_close and not self.client.ends_with(self)
        response = error_response(error.status, close=not keep_alive, headers=error.headers)
        self.bytes_out += len(response)
        self.client.write(response)
        self._finish(termination, keep_alive)

    def _finish(self, termination: Termination, keep_alive: bool) -> None:
        relayed = self._state is State.RELAYING
        self._state = State.DONE
        self.termination = termination
        session = self.session
        if session is not None:
            from_origin = self.status if self.response_at >= 0 and self.status != 101 else 0
            session.registry.request_ended(session, self.server.name if self.server is not None else None, from_origin)
        self._pending = None
        self._free_slot()
        client = self.client
        if client.gate.paused:
            client.gate.resume(ORIGIN)
        if client.download.producer is not None:
            client.download.detach()
        server, status = self.server, self.status
        if server is not None and status:
            server.responses[status] = server.responses.get(status, 0) + 1
        now = self.clock.seconds()
        frontend = client.frontend
        self.count(frontend, self.backend, termination, now, relayed or status == 101)
        if frontend.access_log.enabled:
            self._log(termination, now)
        client.exchange_done(self, keep_alive, now, relayed)

    def dropped(self) -> None:
        """A pipelined request that will never be answered (its connection is closing)."""
        self._state = State.DONE
        if self.session is not None:
            self.session.registry.request_ended(self.session, None, 0)

    def _log(self, termination: Termination, now: float) -> None:
        frontend = self.client.frontend
        frontend.access_log.write(self.record(
            now, self.head, self.client_address, frontend.name, self.backend, self.server, termination, self.session,
        ))

    # The request as the origin sees it

    def _origin_request_head(self) -> bytes:
        resolved = self.head.resolved
        if resolved is not None:  # a reverse proxy's: the normalised target its routes matched
            target, authority = resolved.origin_form, resolved.host if resolved.absolute else None
        else:
            target, authority = self._target_as_sent()
        return origin_request_head(self.head, target, authority, self.backend, self.client, self.websocket)

    def _target_as_sent(self) -> tuple[bytes, bytes | None]:
        """The target and authority of a request no route resolved (a forward proxy's)."""
        return self.head.target, None
