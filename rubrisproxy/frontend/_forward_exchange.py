"""A forward proxy's exchange: the request names its destination (an absolute target, or CONNECT)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..backend import Server
from ..http import Headers, HTTPError, RequestHead, quoted, split_absolute
from ..lifecycle import Termination
from ..origin import ConnectTimeout, OriginConnection
from ..websocket import Tunnel
from ._dispatch import ORIGIN, State
from ._exchange import Exchange
from ._forward import Destination, ForwardProxy, destination
from ._heads import VIA, origin_request_head
from ._upgrade import ExchangeHandoff

if TYPE_CHECKING:
    from ._connection import ClientConnection

_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
# The states it moves through, as module names: a member read through its Enum class costs a descriptor call.
_CONNECTING, _WAITING, _UPGRADED, _DONE = State.CONNECTING, State.WAITING, State.UPGRADED, State.DONE


class ForwardExchange(Exchange):
    """An :class:`Exchange` of a forward-proxy frontend.

    Before a server is chosen it checks the client (:meth:`ForwardProxy.authorize`) and the destination
    (its name, then the address it resolves to); the destination is then a server of its own, or the
    request goes through a parent proxy (the frontend's ``parents`` backend). A CONNECT becomes a
    :class:`~rubrisproxy.websocket.Tunnel` to the destination, direct or through a parent's own CONNECT.
    """

    __slots__ = ("_forward", "_via_parent", "_tunnel_to", "_resolving")

    def __init__(self, client: ClientConnection, head: RequestHead, now: float, wait: float) -> None:
        super().__init__(client, head, now, wait)
        forward = self.client.frontend.forward
        assert forward is not None  # a forward proxy's frontend makes ForwardExchanges
        self._forward: ForwardProxy = forward
        self._via_parent = False  # sent through a parent proxy
        self._tunnel_to: Destination | None = None  # a CONNECT to ask a parent for
        self._resolving: Deferred[str] | None = None  # the destination's name being resolved

    def start(self) -> None:
        self.backend = self.client.frontend.backend
        try:
            checking = self._forward.authorize(self.head, self.client_address)
        except HTTPError as error:
            self.fail(error, Termination.DENIED)
            return
        if checking is None:
            self._authorized()
            return
        if self.head.has_body:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it
        checking.addCallbacks(lambda _: self._authorized(), self._unauthorized)

    def _unauthorized(self, failure: Failure) -> None:
        if self._state is not _DONE:
            error = failure.value
            self.fail(error if isinstance(error, HTTPError) else HTTPError(500, failure.getErrorMessage()),
                      Termination.DENIED)

    def _authorized(self) -> None:
        if self._state is _DONE:
            return
        forward = self._forward
        try:
            where = destination(self.head)
            forward.check_name(where)
        except HTTPError as error:
            self.fail(error, Termination.DENIED if error.status in (403, 407) else Termination.BAD_REQUEST)
            return
        via_parent = forward.via_parent(where)
        if via_parent and not forward.needs_address(where):
            self._resolved(None, where, via_parent)  # the parent resolves the name
            return
        if self.head.has_body:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it
        self.connect_started = self.clock.seconds()
        resolving = forward.resolve(where.host)
        resolving.addCallbacks(
            self._resolved, self._forward_failed,
            callbackArgs=(where, via_parent), errbackArgs=(Termination.NO_SERVER,),
        )
        if not resolving.called:
            self._resolving = resolving

    def _resolved(self, address: str | None, where: Destination, via_parent: bool) -> None:
        """The destination's address is known (None: left to a parent proxy): check it, then go there."""
        self._resolving = None
        if self._state is _DONE:
            return
        forward = self._forward
        try:
            forward.check_address(where, address)
            if via_parent:
                self._via_parent = True
                self.backend = forward.parents
            if not where.tunnel:
                target, authority = self._target_as_sent()
                self._request_bytes = origin_request_head(self, target, authority)
            if via_parent and self.backend is not None and self.backend.login is not None:
                uri = _authority(where) if where.tunnel else self.head.target
                self._begin_login(self.backend.login, True, self.head.method, uri)
        except HTTPError as error:
            self.fail(error, Termination.DENIED if error.status == 403 else Termination.BAD_REQUEST)
            return
        if via_parent:
            if where.tunnel:
                self._tunnel_to = where
            self._assign()
            return
        assert address is not None  # left unresolved only for a parent proxy
        server = forward.server(where, address)
        if where.tunnel:
            self.server = server
            self._state = _CONNECTING
            self.client.frontend.pool.connect(server).addCallback(self._not_this_host).addCallbacks(
                self._tunnel_open, self._forward_failed, errbackArgs=(Termination.CONNECT_TIMEOUT,)
            )
        elif not self._use_pinned(server):
            self._use(server)

    def _use_pinned(self, server: Server | None = None) -> bool:
        return self._tunnel_to is None and super()._use_pinned(server)

    def _use(self, server: Server) -> None:
        if self._tunnel_to is None:
            super()._use(server)
            return
        self.server = server
        self._state = _CONNECTING
        self.connect_started = self.clock.seconds()
        self.client.frontend.pool.connect(server).addCallbacks(self._ask_parent, self._connect_failed)

    def _connect(self, attempt: Any) -> None:
        if not self._via_parent:
            attempt.addCallback(self._not_this_host)
        super()._connect(attempt)

    def _connect_failed(self, failure: Failure) -> None:
        if self._via_parent:
            super()._connect_failed(failure)
        else:
            self._forward_failed(failure, Termination.CONNECT_TIMEOUT)

    def _not_this_host(self, connection: OriginConnection) -> OriginConnection:
        """A new direct connection, unless it reached this host by an address of its own (then closed, 403)."""
        try:
            self._forward.check_connection(connection.server, connection.transport)
        except HTTPError:
            self.client.frontend.pool.release(connection, reusable=False)
            raise
        return connection

    def _forward_failed(self, failure: Failure, timed_out: Termination) -> None:
        """The destination could not be resolved or reached: 502, or 504 when it took too long."""
        if self._state is _DONE:
            return
        if isinstance(failure.value, HTTPError):
            error = failure.value
        elif failure.check(ConnectTimeout):
            error = HTTPError(504, failure.getErrorMessage())
        else:
            error = HTTPError(502, f"cannot reach {self.head.target.decode('latin-1')}: {failure.getErrorMessage()}")
        termination = {504: timed_out, 403: Termination.DENIED}.get(error.status, Termination.NO_SERVER)
        self.fail(error, termination)

    # CONNECT

    def _ask_parent(self, connection: OriginConnection) -> None:
        if self._state is _DONE:
            self.client.frontend.pool.release(connection, reusable=False)
            return
        self.connection = connection
        self._state = _WAITING
        where = self._tunnel_to
        assert where is not None
        authority = _authority(where)
        head = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority, authority, VIA[b"1.1"])
        if self._login is not None:
            head = self._login.head(connection.server, head)
        connection.send_connect(self, head)

    def tunnel_answered(self, connection: OriginConnection, status: int, rest: bytes, headers: Headers) -> None:
        """A parent proxy answered the CONNECT asked of it (status 0: it closed or said nothing in time)."""
        self.connection = None
        if self._state is _DONE:
            self.client.frontend.pool.release(connection, reusable=False)
            return
        if status == 407 and self._login is not None:
            if self._tunnel_challenged(connection, headers):
                self._use(connection.server)  # asked again, with credentials, on a new connection
            return
        if status != 200:
            self.client.frontend.pool.release(connection, reusable=False)
            why = f"answered {status}" if status else "closed or did not answer"
            self.fail(HTTPError(502, f"parent proxy {self.server} {why} to CONNECT"), Termination.SERVER_ABORT)
            return
        self._tunnel_open(connection, rest)

    def _tunnel_open(self, connection: OriginConnection, rest: bytes = b"") -> None:
        pool = self.client.frontend.pool
        if self._state is _DONE:
            pool.release(connection, reusable=False)
            return
        pool.hand_over(connection)
        self._state = _UPGRADED
        self.connected_at = self.response_at = self.clock.seconds()
        self.status = 200
        self.websocket = handoff = ExchangeHandoff(self, None)
        Tunnel(handoff, connection).start(_ESTABLISHED, rest)

    def _target_as_sent(self) -> tuple[bytes, bytes | None]:
        """The target the origin gets, and the authority that replaces Host (an absolute target's)."""
        head = self.head
        target = head.target
        if self._via_parent:
            return target, None  # a parent proxy takes the absolute form as it is
        parts = split_absolute(target)
        if parts is not None:  # the path as asked; its authority replaces Host
            return parts[1], parts[0]
        if target[:1] != b"/" and not (target == b"*" and head.method == b"OPTIONS"):
            raise HTTPError(400, f"request target {quoted(target)} is not in origin form")
        return target, None

    def _finish(self, termination: Termination, keep_alive: bool) -> None:
        super()._finish(termination, keep_alive)
        if self._resolving is not None:
            self._resolving.cancel()  # its answer is no longer wanted


def _authority(where: Destination) -> bytes:
    """``host:port`` of a CONNECT's destination, an IPv6 address bracketed."""
    host = f"[{where.host}]" if ":" in where.host else where.host
    return f"{host}:{where.port}".encode()
