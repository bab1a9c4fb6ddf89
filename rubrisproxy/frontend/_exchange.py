"""One request's trip through the proxy: client request -> origin -> client response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend import OpenPeek
from ..http import NONE, HTTPError, RequestHead, resolve
from ..lifecycle import Termination
from ..origin import OriginConnection
from ..routing import is_websocket_upgrade
from ._dispatch import ORIGIN, State
from ._exchange_response import Responding
from ._heads import Framing, origin_request_head
from ._upgrade import ExchangeHandoff, accept_upgrade

if TYPE_CHECKING:
    from ..backend import PollPeek
    from ._client import ExchangeClient
    from ._rule_actions import RuleRun

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The states it moves through, as module names: a member read through its Enum class costs a descriptor call.
_STARTING, _WAITING, _ANSWERING, _RELAYING, _DONE = (
    State.STARTING, State.WAITING, State.ANSWERING, State.RELAYING, State.DONE
)
_NO_BODY = Framing.NONE  # as a module name too (a class attribute read is a type look-up)


class Exchange(Responding):
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

    __slots__ = ()

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
