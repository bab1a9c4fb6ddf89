"""One request's trip through the proxy: client request -> origin -> client response."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..accesslog import AccessRecord
from ..backend import PEEK_LIMIT, QUEUED, Backend, Server, is_engineio, open_packet_sid, session_id
from ..counters import count, status_class
from ..http import NONE, HTTPError, RequestHead, ResponseHead, error_response, quoted, resolve, serialize_headers, split_absolute
from ..lifecycle import ConnectionEnd, Termination
from ..origin import ConnectTimeout, OriginConnection
from ..routing import Router, is_websocket_upgrade
from ..websocket import (
    Handshake,
    RefuseHandshake,
    Tunnel,
    Upgrade,
    WebSocketSession,
    backend_handshake,
    check_switch,
    check_upgrade,
    new_key,
)
from ._forward import Destination, ForwardProxy, destination

if TYPE_CHECKING:
    from ..clients import ClientSession
    from ._connection import ClientConnection

ORIGIN = "origin"
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
#: Authentication schemes that authenticate the connection, not the request.
_CONNECTION_AUTH = (b"ntlm", b"negotiate")


def _asks_connection_auth(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"www-authenticate" and value.strip().lower().startswith(_CONNECTION_AUTH)
        for name, value in headers
    )
_VIA = {version: b"Via: %s rubrisproxy\r\n" % version for version in (b"1.0", b"1.1")}
#: A body this small cannot outgrow the client's socket buffer: no flow control needed.
_SMALL_BODY = 65536


_NO_HEADERS = ()  # what a tunnelled request keeps of its headers: none
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")}
_TERMINATIONS = {termination: termination.value for termination in Termination}


class _Framing:
    NONE, LENGTH, CHUNKED, CLOSE = range(4)


class Exchange:
    """Relays one request to a server of the frontend's backend and the response back.

    Bodies stream with flow control: while the request body flows, the client's
    :class:`~rubrisproxy.flow.ReadGate` is the origin transport's producer; while the
    response body flows, the origin's gate is the client transport's producer.
    """

    log = Logger()

    __slots__ = (
        "client", "head", "clock", "started_at", "wait", "server", "connection", "request_done",
        "response_head_sent", "finished", "keep_alive", "status", "bytes_in", "bytes_out", "retries",
        "pending_head", "_pending", "_framing", "_stale_retry_done", "_last_failure", "_request_bytes",
        "_connect_started", "_connected_at", "_sent_at", "_response_at", "backend", "_holds_slot", "_tried",
        "_queued_at", "_dequeued_at", "upgrade", "websocket_key", "session_id", "_pin", "_via_parent", "_tunnel_to",
        "_resolving", "_eio_peek", "client_address", "termination", "session",
    )

    def __init__(self, client: ClientConnection, head: RequestHead, now: float, wait: float) -> None:
        self.client = client
        self.head = head
        self.client_address = client.client_of(head)  # on a proxied connection, each request's own client
        self.termination: Termination | None = None
        self.session: ClientSession | None = None  # the client session the request belongs to, if tracked
        self.clock = client.frontend.clock
        self.started_at = now
        self.wait = wait
        self.server: Server | None = None
        self.connection: OriginConnection | None = None
        self.request_done = self.response_head_sent = self.finished = self.keep_alive = False
        self.status = self.bytes_in = self.bytes_out = self.retries = 0
        self.pending_head: bytes | None = None  # a response head held back to leave with body bytes
        self._pending: list[bytes] | None = None
        self._framing = _Framing.NONE
        self._stale_retry_done = False
        self._last_failure: Failure | None = None
        self._request_bytes = b""
        self._connect_started = self._connected_at = self._sent_at = self._response_at = -1.0
        self.backend: Backend | None = None
        self._holds_slot = False  # a server slot (its ``active`` count) is ours until released
        self._tried: frozenset[Server] = NONE
        self._queued_at = self._dequeued_at = -1.0
        self.upgrade: Upgrade | None = None  # a WebSocket upgrade that passed its checks
        self.websocket_key: bytes | None = None  # the proxy's own key, in session mode
        self.session_id = ""  # session mode: the id every backend handshake carries
        self._pin = False  # the origin asked for connection-oriented auth: keep its connection for this client
        self._via_parent = False  # forward proxy: sent through a parent proxy
        self._tunnel_to: Destination | None = None  # forward proxy: a CONNECT to ask a parent for
        self._resolving: Deferred[str] | None = None  # forward proxy: the destination's name being resolved
        self._eio_peek: bytes | None = None  # an Engine.IO handshake response's first bytes, until its sid is found

    # Start: choose a server, get a connection

    def start(self) -> None:
        head = self.head
        forward = self.client.frontend.forward
        if forward is not None:
            self._forward(forward)
            return
        if head.method == b"CONNECT":
            self.fail(HTTPError(501, "CONNECT is not served by a reverse-proxy frontend"), Termination.NOT_IMPLEMENTED)
            return
        router = self.client.frontend.router
        try:
            resolve(head)  # the normalised target: what routes match and what the origin receives
        except HTTPError as error:
            self.fail(error, Termination.BAD_REQUEST)
            return
        target = router.default if router.trivial else router.route(head)  # type: ignore[union-attr]
        if isinstance(target, int):
            self.fail(HTTPError(target, "denied by a route"), Termination.DENIED)
            return
        self.backend = target
        if head.upgrade and is_websocket_upgrade(head) and not self._accept_upgrade(router, target):  # type: ignore[arg-type]
            return
        try:
            self._request_bytes = self._origin_request_head()
        except HTTPError as error:
            self.fail(error, Termination.BAD_REQUEST)
            return
        self._assign()

    # Forward-proxy mode: the request names its destination

    def _forward(self, forward: ForwardProxy) -> None:
        self.backend = self.client.frontend.backend
        try:
            checking = forward.authorize(self.head, self.client_address)
        except HTTPError as error:
            self.fail(error, Termination.DENIED)
            return
        if checking is None:
            self._authorized(forward)
            return
        if self.head.has_body:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it
        checking.addCallbacks(lambda _: self._authorized(forward), self._unauthorized)

    def _unauthorized(self, failure: Failure) -> None:
        if not self.finished:
            error = failure.value if failure.check(HTTPError) else HTTPError(500, failure.getErrorMessage())
            self.fail(error, Termination.DENIED)  # type: ignore[arg-type]

    def _authorized(self, forward: ForwardProxy) -> None:
        if self.finished:
            return
        try:
            where = destination(self.head)
            forward.check_name(where)
        except HTTPError as error:
            self.fail(error, Termination.DENIED if error.status in (403, 407) else Termination.BAD_REQUEST)
            return
        via_parent = forward.via_parent(where)
        if via_parent and not forward.needs_address(where):
            self._resolved(None, forward, where, via_parent)  # the parent resolves the name
            return
        if self.head.has_body:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it
        self._connect_started = self.clock.seconds()
        resolving = forward.resolve(where.host)
        resolving.addCallbacks(
            self._resolved, self._forward_failed,
            callbackArgs=(forward, where, via_parent), errbackArgs=(Termination.NO_SERVER,),
        )
        if not resolving.called:
            self._resolving = resolving

    def _resolved(self, address: str | None, forward: ForwardProxy, where: Destination, via_parent: bool) -> None:
        """The destination's address is known (None: left to a parent proxy): check it, then go there."""
        self._resolving = None
        if self.finished:
            return
        try:
            forward.check_address(where, address)
            if via_parent:
                self._via_parent = True
                self.backend = forward.parents
            if not where.tunnel:
                self._request_bytes = self._origin_request_head()
        except HTTPError as error:
            self.fail(error, Termination.DENIED if error.status == 403 else Termination.BAD_REQUEST)
            return
        if via_parent:
            if where.tunnel:
                self._tunnel_to = where
            self._assign()
            return
        server = forward.server(where, address)  # type: ignore[arg-type]
        if where.tunnel:
            self.server = server
            self.client.frontend.pool.connect(server).addCallback(self._not_this_host, forward).addCallbacks(
                self._tunnel_open, self._forward_failed, errbackArgs=(Termination.CONNECT_TIMEOUT,)
            )
        elif not self._use_pinned(server):
            self._use(server)

    def _not_this_host(self, connection: OriginConnection, forward: ForwardProxy) -> OriginConnection:
        """A new direct connection, unless it reached this host by an address of its own (then closed, 403)."""
        try:
            forward.check_connection(connection.server, connection.transport)
        except HTTPError:
            self.client.frontend.pool.release(connection, reusable=False)
            raise
        return connection

    def _ask_parent(self, connection: OriginConnection) -> None:
        if self.finished:
            self.client.frontend.pool.release(connection, reusable=False)
            return
        self.connection = connection
        where = self._tunnel_to
        assert where is not None
        host = f"[{where.host}]" if ":" in where.host else where.host
        authority = f"{host}:{where.port}".encode()
        connection.send_connect(self, b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority, authority, _VIA[b"1.1"]))

    def tunnel_answered(self, connection: OriginConnection, status: int, rest: bytes) -> None:
        """A parent proxy answered the CONNECT asked of it (status 0: it closed or said nothing in time)."""
        self.connection = None
        if self.finished:
            self.client.frontend.pool.release(connection, reusable=False)
            return
        if status != 200:
            self.client.frontend.pool.release(connection, reusable=False)
            why = f"answered {status}" if status else "closed or did not answer"
            self.fail(HTTPError(502, f"parent proxy {self.server} {why} to CONNECT"), Termination.SERVER_ABORT)
            return
        self._tunnel_open(connection, rest)

    def _tunnel_open(self, connection: OriginConnection, rest: bytes = b"") -> None:
        pool = self.client.frontend.pool
        if self.finished:
            pool.release(connection, reusable=False)
            return
        pool.hand_over(connection)
        self._connected_at = self._response_at = self.clock.seconds()
        self.status = 200
        Tunnel(self, self.client, connection, self.client.frontend.timeouts).start(_ESTABLISHED, rest)

    def _forward_failed(self, failure: Failure, timed_out: Termination) -> None:
        """The destination could not be resolved or reached: 502, or 504 when it took too long."""
        if self.finished:
            return
        if failure.check(HTTPError):
            error = failure.value
        elif failure.check(ConnectTimeout):
            error = HTTPError(504, failure.getErrorMessage())
        else:
            error = HTTPError(502, f"cannot reach {self.head.target.decode('latin-1')}: {failure.getErrorMessage()}")
        termination = {504: timed_out, 403: Termination.DENIED}.get(error.status, Termination.NO_SERVER)  # type: ignore[union-attr]
        self.fail(error, termination)  # type: ignore[arg-type]

    def _accept_upgrade(self, router: Router, backend: Backend) -> bool:
        """Check a WebSocket upgrade (RFC 6455, the allowlists, the hooks); False if it was refused."""
        head = self.head
        origins, subprotocols = router.websocket_rules(head, backend)
        try:
            upgrade = check_upgrade(head, origins, subprotocols)
        except HTTPError as error:
            self.fail(error, Termination.DENIED if error.status == 403 else Termination.BAD_REQUEST)
            return False
        if backend.websocket_hooks:
            target = head.resolved.origin_form if head.resolved is not None else head.target  # as the origin gets it
            request = Handshake(self.client_address, target, head.headers, upgrade.protocols, upgrade.origin)
            for hook in backend.websocket_hooks:
                try:
                    hook.handshake(request)
                except RefuseHandshake as refusal:
                    self.fail(HTTPError(refusal.status, f"refused by {type(hook).__name__}: {refusal.reason}"),
                              Termination.DENIED)
                    return False
        self.upgrade = upgrade
        if backend.websocket.mode == "session":
            self.websocket_key = new_key()
            self.session_id = secrets.token_hex(8)
        return True

    def _use_pinned(self, server: Server | None = None) -> bool:
        """Send on the server connection this client is pinned to, if any; True if the request is taken care of.

        ``server`` is a forward proxy's destination: a client pinned to another destination is unpinned
        (its server connection closed) and the request goes on as any other.
        """
        client = self.client
        pinned = client.pinned
        if pinned is None:
            return False
        if server is not None and pinned.pool_key != server.key:
            client.unpin()
            return False
        if not pinned.connected:
            self.fail(HTTPError(502, "the server connection this client is pinned to has closed"),
                      Termination.SERVER_ABORT)
            return True
        # Connection-oriented auth: every request of this client goes on its server connection.
        self.server = pinned.server
        client.frontend.pool.in_use.add(pinned)
        self._connected(pinned)
        return True

    def _assign(self) -> None:
        if self._tunnel_to is None and self._use_pinned():
            return
        backend = self.backend
        assert backend is not None
        server = backend.assign(self, self._tried)
        if server is QUEUED:
            self._queued_at = self.clock.seconds()
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
        self._dequeued_at = self.clock.seconds()
        self._holds_slot = True
        self._use(server)

    def queue_timed_out(self) -> None:
        self.fail(HTTPError(503, "every server stayed full past timeout queue"), Termination.QUEUE_TIMEOUT)

    def _use(self, server: Server) -> None:
        self.server = server
        pool = self.client.frontend.pool
        if self._tunnel_to is not None:
            self._connect_started = self.clock.seconds()
            pool.connect(server).addCallbacks(self._ask_parent, self._connect_failed)
            return
        connection = pool.take_idle(server)
        if connection is not None:
            self._connected(connection)
        else:
            self._connect(pool.connect(server))

    def _free_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.backend.release(self.server)  # type: ignore[union-attr, arg-type]

    def _connect(self, attempt) -> None:  # type: ignore[no-untyped-def]
        self._connect_started = self.clock.seconds()
        forward = self.client.frontend.forward
        if forward is not None and not self._via_parent:
            attempt.addCallback(self._not_this_host, forward)
        attempt.addCallbacks(self._connected, self._connect_failed)
        if self.connection is None and not self.finished and self.head.has_body and not self.request_done:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it

    def _connect_failed(self, failure: Failure) -> None:
        if self.finished:
            return
        if self.client.frontend.forward is not None and not self._via_parent:
            self._forward_failed(failure, Termination.CONNECT_TIMEOUT)
            return
        if not failure.check(ConnectError, ConnectTimeout, OSError):
            self.log.failure("unexpected error connecting to {server}", failure, server=self.server)
        assert self.server is not None
        self.server.connect_failures += 1
        self.log.warn(
            "connect to {server} failed: {why}", server=self.server, why=failure.getErrorMessage()
        )
        self._last_failure = failure
        self._free_slot()
        backend = self.backend
        assert backend is not None
        backend.report_error(self.server, failure.getErrorMessage())  # type: ignore[arg-type]
        if self.retries >= backend.retries:
            self._no_server()
            return
        self.retries += 1  # counts attempts made again, as the access log reports them
        self.server.retries += 1  # type: ignore[union-attr]
        if backend.redispatch:
            self._tried = self._tried | {self.server}  # type: ignore[arg-type]
            if not backend.usable(self._tried):
                self._tried = NONE  # every server failed once: go round again
            else:
                self.server.redispatches += 1  # type: ignore[union-attr]  # sent on to another server
            self._assign()
        elif self.server in backend.usable() and not self.server.full:  # type: ignore[union-attr, operator]
            self._holds_slot = True
            self._use(backend.take(self.server))  # type: ignore[arg-type]
        else:
            self._assign()

    def _connected(self, connection: OriginConnection) -> None:
        pool = self.client.frontend.pool
        if self.finished:  # its slot was freed when it finished
            pool.release(connection, reusable=True)  # never used: as good as idle
            return
        self.connection = connection
        self._connected_at = now = self.clock.seconds()
        if connection.reused:
            self._connect_started = now
        elif self._connect_started >= 0:
            self.backend.connect_seconds.observe(now - self._connect_started)  # type: ignore[union-attr]
        if self.upgrade is None:
            connection.send(self, self.head.method, self._request_bytes)
        else:
            timeout = self.backend.websocket.open_handshake_timeout  # type: ignore[union-attr]
            connection.send(self, b"GET", self._request_bytes, upgrade=True, timeout=timeout)
        self._sent_at = self._connected_at
        client = self.client
        if self.head.has_body:
            if self.head.expect_continue and not self.request_done and not self.bytes_in:
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
        if self.finished:
            return
        if self.connection is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)  # bounded: the gate is paused until connected
        else:
            self._send_body(data)

    def client_end(self) -> None:
        self.request_done = True
        connection = self.connection
        if connection is not None and self.head.has_body and not self.finished:
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
        self._response_at = self.clock.seconds()
        self.status = status = head.status
        server = self.server
        backend = self.backend
        if backend.sticky:  # type: ignore[union-attr]
            head.forward = backend.sticky_response(head.forward, self, server)  # type: ignore[union-attr, arg-type]
        if status >= 500 and backend.passive.on_5xx:  # type: ignore[union-attr]
            backend.report_error(server, f"HTTP {status}")  # type: ignore[union-attr, arg-type]
        elif server.consecutive_errors:  # type: ignore[union-attr]
            server.consecutive_errors = 0  # type: ignore[union-attr]
        if (status == 401 and _asks_connection_auth(head.headers)) or backend.config.pin:  # type: ignore[union-attr]
            self._pin = True
        engineio = backend.engineio  # type: ignore[union-attr]
        if engineio is not None and status == 200 and is_engineio(self.head) and session_id(self.head) is None:
            engineio.learn_cookie(head.headers, server.name)  # type: ignore[union-attr]
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
            head.status, head.reason, serialize_headers(headers), _VIA.get(head.version, _VIA[b"1.1"]), connection,
        )
        if has_body and (framing != _Framing.LENGTH or head.content_length > _SMALL_BODY):  # type: ignore[operator]
            self.client.download.attach(self.connection.gate)  # type: ignore[union-attr, arg-type]

    def response_upgraded(self, head: ResponseHead, rest: bytes) -> None:
        """The backend accepted the WebSocket upgrade: hand both connections to a tunnel or a session."""
        self._response_at = self.clock.seconds()
        upgrade, connection, backend, server = self.upgrade, self.connection, self.backend, self.server
        assert upgrade is not None and connection is not None and backend is not None and server is not None
        problem = check_switch(head, self.websocket_key or upgrade.key, upgrade.protocols)
        if problem is not None:
            self.origin_failed(HTTPError(502, f"{server} answered the WebSocket upgrade wrongly: {problem}"))
            return
        self.status = 101
        if server.consecutive_errors:
            server.consecutive_errors = 0
        self.connection = None
        self.client.frontend.pool.hand_over(connection)
        client = self.client
        if backend.sticky:
            head.forward = backend.sticky_response(head.forward, self, server)
        if self.websocket_key is None:
            switch = b"HTTP/1.1 101 Switching Protocols\r\n%sConnection: Upgrade\r\nUpgrade: websocket\r\n%s\r\n" % (
                serialize_headers(head.forward), _VIA.get(head.version, _VIA[b"1.1"]),
            )
            Tunnel(self, client, connection, client.frontend.timeouts).start(switch, rest)
            self.upgrade = None  # a tunnel needs nothing more of the handshake
            head_ = self.head  # only its request line is logged from here on
            head_.headers = head_.forward = _NO_HEADERS  # type: ignore[assignment]
            head_.connection = NONE
            head_.host = None
        else:
            session = WebSocketSession(self, client, connection, backend, client.frontend.timeouts, self._request_bytes)
            session.start(head, rest)
        self._request_bytes = b""

    def release_server(self) -> None:
        """Its session is leaving its server: the slot there is free for others (the server stays, for the log)."""
        self._free_slot()

    def switch_server(self, server: Server) -> None:
        """Its session moved to ``server``, whose slot it already took."""
        self._free_slot()
        self.server = server
        self._holds_slot = True

    def client_handshake(self) -> bytes:
        """The client's upgrade request as it sent it, for the session's own WebSocket server to answer."""
        head = self.head
        return b"GET %s HTTP/1.1\r\n%s\r\n" % (head.target, serialize_headers(head.headers))

    def upgrade_ended(self, termination: Termination) -> None:
        """The WebSocket this exchange became has ended: free its server slot and log it."""
        if self.finished:
            return
        self.finished = True
        self.termination = termination
        client = self.client
        bytes_in, bytes_out = client.upgraded_at  # what crossed the client's connection after the head
        self.bytes_in = client.bytes_in - bytes_in
        self.bytes_out += client.bytes_out - bytes_out
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
        self._count(termination, now)
        if self.client.frontend.access_log.enabled:
            self._log(termination, now)

    def flush_head(self) -> None:
        """Send the response head now (the origin's read ended before any body)."""
        self._send_response(b"")

    def _send_response(self, data: bytes) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            self.response_head_sent = True
            data = head + data
        self.bytes_out += len(data)
        self.client.write(data)

    def response_body(self, data: bytes) -> None:
        if self._eio_peek is not None:
            self._learn_sid(data)
        if self._framing == _Framing.CHUNKED:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._send_response(data)

    def _learn_sid(self, data: bytes) -> None:
        peek = self._eio_peek + data  # type: ignore[operator]
        sid = open_packet_sid(peek)
        if sid is not None:
            self._eio_peek = None
            self.backend.engineio.remember(sid, self.server.name)  # type: ignore[union-attr]
        else:
            self._eio_peek = peek if len(peek) < PEEK_LIMIT else None

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
        if self.finished:
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
            client.frontend.pool.in_use.discard(connection)
            if reusable:
                if client.pinned is not connection:
                    client.unpin()  # a client is pinned to one server connection at a time
                connection.pinned_to = client  # never pooled; its loss closes the client, and the reverse
                client.pinned = connection
            else:
                connection.abort()
                client.end(ConnectionEnd.SERVER_ERROR)  # no silent re-route to another server connection
        else:
            client.frontend.pool.release(connection, reusable)
        self._free_slot()

    # Failures on the client side

    def client_lost(self) -> None:
        if self.finished:
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
        if self.finished:
            return
        self.pending_head = None  # never sent: the client gets the error instead
        self.log.warn(
            "{method} {target} from {client}: {status} {detail}",
            method=self.head.method.decode("latin-1"), target=self.head.target.decode("latin-1"),
            client=self.client_address, status=error.status, detail=error.detail,
        )
        if self.response_head_sent:
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
        self.finished = True
        self.termination = termination
        session = self.session
        if session is not None:
            from_origin = self.status if self._response_at >= 0 and self.status != 101 else 0
            session.registry.request_ended(session, self.server.name if self.server is not None else None, from_origin)
        if self._resolving is not None:
            self._resolving.cancel()  # its answer is no longer wanted
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
        self._count(termination, now)
        if client.frontend.access_log.enabled:
            self._log(termination, now)
        client.exchange_done(self, keep_alive, now)

    def dropped(self) -> None:
        """A pipelined request that will never be answered (its connection is closing)."""
        self.finished = True
        if self.session is not None:
            self.session.registry.request_ended(self.session, None, 0)

    def _count(self, termination: Termination, now: float) -> None:
        frontend = self.client.frontend
        terminations = frontend.terminations
        name = _TERMINATIONS[termination]
        terminations[name] = terminations.get(name, 0) + 1
        frontend.request_seconds.observe(now - self.started_at)
        status, backend = self.status, self.backend
        if status:  # the proxy's own answer is the one it sent instead of an origin's head
            source = "origin" if self.response_head_sent or status == 101 else "proxy"
            count(frontend.responses, (status_class(status), source))
        if backend is not None:
            backend.request_seconds.observe(now - self.started_at)
            if status:
                count(backend.responses, status_class(status))

    def _log(self, termination: Termination, now: float) -> None:
        head, server, frontend = self.head, self.server, self.client.frontend
        connect_started, connected_at = self._connect_started, self._connected_at
        sent_at, response_at = self._sent_at, self._response_at
        method = head.method
        frontend.access_log.write(
            AccessRecord(
                now,
                self.client_address,
                frontend.name,
                _METHODS.get(method) or method.decode("latin-1"),
                head.target.decode("latin-1"),
                "1.1" if head.version == b"1.1" else "1.0",
                self.status,
                head.size + self.bytes_in,
                self.bytes_out,
                self.backend.name if self.backend is not None else "-",
                server.name if server is not None else "-",
                self.wait * 1000,
                (self._dequeued_at - self._queued_at) * 1000 if self._dequeued_at >= 0 else (0.0 if server else -1),
                (connected_at - connect_started) * 1000 if connected_at >= 0 and connect_started >= 0 else -1,
                (response_at - sent_at) * 1000 if response_at >= 0 and sent_at >= 0 else -1,
                (now - self.started_at) * 1000,
                _TERMINATIONS[termination],
                self.retries,
                self.session.id if self.session is not None else "",
            )
        )

    @staticmethod
    def log_refused(client: ClientConnection, status: int, termination: Termination, bytes_out: int) -> None:
        """The access-log line for a request refused before it became an exchange (``bytes_out``: the answer's
        size; what was read of it is not known apart from the connection's)."""
        count(client.frontend.terminations, termination.value)
        count(client.frontend.responses, (status_class(status), "proxy"))
        now = client.frontend.clock.seconds()
        client.frontend.access_log.write(
            AccessRecord(
                at=now, client=client.client_address, frontend=client.frontend.name, method="-", target="-",
                version="-", status=status, bytes_in=0, bytes_out=bytes_out, backend="-", server="-",
                wait_ms=round((now - client.ready_at) * 1000, 3),
                queue_ms=-1, connect_ms=-1, response_ms=-1, total_ms=0.0, termination=termination.value,
            )
        )

    # The request as the origin sees it

    def _origin_request_head(self) -> bytes:
        head = self.head
        target = head.target
        host = head.host
        forward = head.forward
        resolved = head.resolved
        authority = None  # an absolute target's, which replaces the Host header (RFC 9112 3.2.2)
        if resolved is not None:  # a reverse proxy's: the normalised target its routes matched
            target = resolved.origin_form
            if resolved.absolute:
                authority = resolved.host
        elif self._via_parent:
            pass  # a parent proxy takes the absolute form as it is
        elif (parts := split_absolute(target)) is not None:  # a forward proxy's: the path as asked
            authority, target = parts
        elif target[:1] != b"/" and not (target == b"*" and head.method == b"OPTIONS"):
            raise HTTPError(400, f"request target {quoted(target)} is not in origin form")
        if authority is not None:
            host = authority
            forward = [pair for pair in forward if pair[0].lower() != b"host"]
        backend = self.backend
        if backend is not None:
            if backend.session_drops:
                forward = [pair for pair in forward if pair[0].lower() not in backend.session_drops]
            if backend.cookie is not None:
                forward = backend.cookie.request_headers(forward)
        extra = b""
        if self.upgrade is not None:
            offers = backend.leg_factories().offers if self.websocket_key is not None else b""  # type: ignore[union-attr]
            forward, extra = backend_handshake(forward, self.upgrade, self.websocket_key, offers)
            if self.session_id:
                extra += b"%s: %s; resume=0\r\n" % (backend.websocket.session_header.encode(), self.session_id.encode())  # type: ignore[union-attr]
        if host is None:  # an HTTP/1.0 request without Host
            servers = self.backend.servers if self.backend is not None else []
            host = b"%s:%d" % (servers[0].config.host.encode(), servers[0].config.port) if servers else b"localhost"
            extra += b"Host: %s\r\n" % host
        elif authority is not None:
            extra += b"Host: %s\r\n" % host
        if head.chunked:
            extra += b"Transfer-Encoding: chunked\r\n"
        return b"%s %s HTTP/1.1\r\n%s%s%s%s\r\n" % (
            head.method, target, serialize_headers(forward), _VIA[head.version],
            self.client.forwarding_headers(host, head), extra,
        )
