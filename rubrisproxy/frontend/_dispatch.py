"""Getting a request a server connection: balancing, the backend's queue, pinned connections, retries."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.internet.error import ConnectError
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..backend import LOOKING, QUEUED, SESSION_GONE, UNKNOWN_SESSION, Backend, Server, session_id
from ..http import NONE, HTTPError, RequestHead
from ..lifecycle import Termination
from ..origin import ConnectTimeout, OriginConnection
from ._pinning import keep_pinned, pinned_connection
from ._timing import Timing

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ._client import ExchangeClient

#: The reason a request's body is held (the client's gate paused) until there is a connection to send it on.
ORIGIN = "origin"


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


# The states it moves through, as module names: a member read through its Enum class costs a descriptor call.
_STARTING, _QUEUED, _CONNECTING, _WAITING, _DONE = (
    State.STARTING, State.QUEUED, State.CONNECTING, State.WAITING, State.DONE,
)


class Dispatch(Timing):
    """Gets a request a connection to a server; the base of :class:`~rubrisproxy.frontend.Exchange`,
    which relays over it (:meth:`_connected`); :class:`~rubrisproxy.frontend._exchange_ending.ExchangeEnding`
    answers when there is none (:meth:`fail`).

    The server comes from the backend's balancing (waiting in its queue while every server is full),
    or is the one the client's pinned connection goes to. A failed connect is retried, on another
    server if the backend redispatches. A server slot taken from the backend is the request's until
    :meth:`_free_slot`.
    """

    log: ClassVar[Logger] = Logger(namespace=__name__)  # a class attribute: compiled, a plain one would be a Logger per exchange

    __slots__ = (
        "client", "head", "clock", "client_address", "_state", "server", "backend", "connection", "request_done",
        "_holds_slot", "_tried", "_last_failure", "_pin",
    )

    # Set by Exchange.__init__ (an __init__ here would be a call more per request).
    client: ExchangeClient
    head: RequestHead
    clock: IReactorTime
    client_address: str  # on a proxied connection, each request's own client
    _state: State
    server: Server | None
    connection: OriginConnection | None
    backend: Backend | None
    request_done: bool  # the client's request body has all been read (see Exchange)
    _holds_slot: bool  # a server slot (its ``active`` count) is ours until released
    _tried: frozenset[Server]
    _last_failure: Failure | None
    _pin: bool  # the origin asked for connection-oriented auth: keep its connection for this client

    @property
    def finished(self) -> bool:
        return self._state is _DONE

    # Done by the exchange

    def _connected(self, connection: OriginConnection) -> None:
        """Send the request on ``connection``."""
        raise NotImplementedError

    def fail(self, error: HTTPError, termination: Termination) -> None:
        """End with ``error``."""
        raise NotImplementedError

    # Choosing a server

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
        server = backend.assign(self, self._tried, SESSION_GONE)
        if server is QUEUED:
            self._state = _QUEUED
            self.queued_at = self.clock.seconds()
            if self.head.has_body and not self.request_done:
                self.client.gate.pause(ORIGIN)
        elif isinstance(server, Server):
            self._holds_slot = True
            self._use(server)
        elif server is SESSION_GONE:
            self._session_gone("is gone")
        elif server is LOOKING:  # its sid, unknown here, is asked of the cluster: looked_up() follows
            if self.head.has_body and not self.request_done:
                self.client.gate.pause(ORIGIN)
        else:
            self._no_server()

    def _session_gone(self, why: str) -> None:
        """400 as Engine.IO answers an unknown sid: the server of this request's session ``why``, and no other
        knows it; the client reconnects at once. The session's requests still waiting for that server's
        answer (a long poll on a server removed or marked down, yet alive) are answered so too: an Engine.IO
        client waits for its long poll to end before it reconnects."""
        self._answer_gone(why)
        sid = session_id(self.head)
        if sid is None:
            return
        param = b"sid=" + sid
        for connection in list(self.client.frontend.connections):
            for other in connection.in_progress():
                if other._state is _WAITING and param in other.head.target and session_id(other.head) == sid:
                    other._drop_connection()
                    other._answer_gone(why)

    def _answer_gone(self, why: str) -> None:
        self.fail(
            HTTPError(400, f"the server of this Engine.IO session {why}", body=UNKNOWN_SESSION), Termination.SESSION_GONE,
        )

    def _no_server(self) -> None:
        """503: no server could take the request (the last connect failure, if any, says why)."""
        failure, backend = self._last_failure, self.backend
        assert backend is not None  # chosen before any server is
        timed_out = failure is not None and failure.check(ConnectTimeout)
        why = failure.getErrorMessage() if failure is not None else f"no server of {backend.name} is up"
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

    def looked_up(self) -> None:
        """The cluster answered about this request's unknown sid: assigned again, the sid now known or not."""
        if self._state is _STARTING and not self.finished:
            self._assign()

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
            backend, server = self.backend, self.server
            assert backend is not None and server is not None  # a slot is taken on a backend's server
            backend.release(server)

    def _connect(self, attempt: Any) -> None:
        self._state = _CONNECTING
        self.connect_started = self.clock.seconds()
        attempt.addCallbacks(self._connected, self._connect_failed)
        if self.connection is None and self._state is not _DONE and self.head.has_body and not self.request_done:
            self.client.gate.pause(ORIGIN)  # hold the body until there is somewhere to send it

    def _connect_failed(self, failure: Failure) -> None:
        if self._state is _DONE:
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
        if backend.engineio is not None and backend.session_lost(self, server):
            self._session_gone("refused the connection")
            return
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

    # Giving it back

    def release_server(self) -> None:
        """Its WebSocket is leaving its server: the slot there is free for others (the server stays, for the log)."""
        self._free_slot()

    def switch_server(self, server: Server) -> None:
        """Its WebSocket moved to ``server``, whose slot it already took."""
        self._free_slot()
        self.server = server
        self._holds_slot = True

    # A live upgrade (docs/upgrade.md)

    def resume_upgraded(self, backend: Backend, server: Server, slot: bool) -> None:
        """In the process it moved to: a tunnel open on ``server`` owns both connections; ``slot``: it holds a
        slot there (a backend's server; not a forward proxy's direct CONNECT)."""
        self.backend, self.server = backend, server
        if slot:
            backend.take(server)
            self._holds_slot = True
        self._state = State.UPGRADED

    def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.abort()
            self._release(connection, reusable=False)

    def _release(self, connection: OriginConnection, reusable: bool, keep_slot: bool = False) -> None:
        """Give ``connection`` back (to the pool, or kept pinned) and free the server slot, unless ``keep_slot``
        (the request goes again on another connection to the same server)."""
        self.connection = None
        client = self.client
        if self._pin or connection is client.pinned:
            keep_pinned(client, connection, reusable)
        else:
            client.frontend.pool.release(connection, reusable)
        if not keep_slot:
            self._free_slot()
