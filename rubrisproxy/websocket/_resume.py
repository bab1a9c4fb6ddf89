"""Moving a session to another server: one attempt at a new backend WebSocket, and the buffer budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.python.failure import Failure

from ..http import HTTPError, RequestHead, ResponseHead
from ..settings import LiveSettings
from ._handshake import check_switch, new_key
from ._losses import LossPacer
from ._pacing import DialPacer

if TYPE_CHECKING:  # both import this package: at run time they are only passed in
    from ..backend import Backend, Server
    from ..origin import ConnectionPool, OriginConnection


#: 4xx answers that say "not now" rather than "not this session": worth another try.
_TRANSIENT_4XX = frozenset((408, 425, 429))


def is_refusal(status: int) -> bool:
    """Whether a server's answer to a resume handshake refuses the session for good (a 4xx but a transient one)."""
    return 400 <= status < 500 and status not in _TRANSIENT_4XX


class ResumeBudget:
    """What every moving session of the proxy shares: the bytes they hold together, against one limit
    (``limits.resume-buffer-total``), the pace of their dials (a :class:`DialPacer`) and of the handling of their
    lost backend connections (a :class:`LossPacer`)."""

    __slots__ = ("settings", "held", "dials", "losses")

    def __init__(self, settings: LiveSettings | None = None) -> None:
        self.settings = settings or LiveSettings()
        self.held = 0
        self.dials = DialPacer(self.settings)
        self.losses = LossPacer()

    @property
    def limit(self) -> int:
        return self.settings.current.limits.resume_buffer_total

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class DialOwner(Protocol):
    """The session (its move) a :class:`BackendDial` works for."""

    @property
    def client(self) -> str:
        """The session's client, which balancing may go by."""

    def dial_succeeded(self, dial: BackendDial, origin: OriginConnection, head: ResponseHead, rest: bytes) -> None: ...

    def dial_failed(self, dial: BackendDial, why: str, final: bool) -> None: ...


@dataclass(frozen=True)
class DialRequest:
    """What a dial sends: the handshake (``%KEY%`` where the key goes) for the request ``head``, which the
    server is chosen by; the subprotocols it offers, and how long its answer may take."""

    head: RequestHead
    handshake: bytes
    protocols: tuple[str, ...]
    timeout: float


class BackendDial:
    """One attempt to open a session's WebSocket on a server: choose it, connect, send the handshake.

    The server is chosen as for any request (stickiness, balancer, queue),
    avoiding ``exclude``. Exactly one of ``dial_succeeded`` / ``dial_failed`` is
    reported, unless :meth:`cancel` comes first. A failure is ``final`` when the
    server answered and refused this session (see :func:`is_refusal`): trying it
    again cannot help, unlike a refused connection, a timeout or a 5xx.
    """

    pending_head: bytes | None = None  # an OriginUser attribute: never used, a handshake has no body

    def __init__(self, owner: DialOwner, request: DialRequest, backend: Backend, pool: ConnectionPool,
                 exclude: frozenset[Server]) -> None:
        self.owner = owner
        self.head = request.head
        self.backend = backend
        self.key = new_key()
        self._request = request
        self._pool = pool
        self._exclude = exclude
        self.server: Server | None = None
        self.connection: OriginConnection | None = None
        self.finished = False

    def start(self) -> None:
        chosen = self.backend.assign(self, self._exclude)
        if chosen is None:
            self._fail("no server is up")
        elif chosen in self.backend.servers:
            self._use(chosen)
        # else queued: dequeued() or queue_timed_out() follows

    def cancel(self) -> None:
        """The session no longer needs this attempt."""
        if not self.finished:
            self.finished = True
            self._release()

    # What the backend's queue calls

    def client_address_for_balancing(self) -> str:
        return self.owner.client

    def dequeued(self, server: Server) -> None:
        self._use(server)

    def looked_up(self) -> None:
        pass  # a move asks nothing of the cluster (Backend.assign without ``gone``)

    def queue_timed_out(self) -> None:
        self._fail("every server stayed full past timeout queue")

    # Connecting

    def _use(self, server: Server) -> None:
        self.server = server
        self._pool.connect(server).addCallbacks(self._connected, self._connect_failed, errbackArgs=(server,))

    def _connected(self, connection: OriginConnection) -> None:
        if self.finished:
            self._pool.release(connection, reusable=False)
            return
        self.connection = connection
        connection.send(self, b"GET", self._request.handshake.replace(b"%KEY%", self.key), upgrade=True,
                        timeout=self._request.timeout)

    def _connect_failed(self, failure: Failure, server: Server) -> None:
        if self.finished:
            return
        self.backend.report_error(server, failure.getErrorMessage())
        self._fail(f"connect failed: {failure.getErrorMessage()}")

    # The handshake's answer (OriginUser)

    def response_upgraded(self, head: ResponseHead, rest: bytes) -> None:
        problem = check_switch(head, self.key, self._request.protocols)
        if problem is not None:
            self._fail(f"bad 101: {problem}", final=True)
            return
        connection, self.connection = self.connection, None
        assert connection is not None  # the answer came on it
        self.finished = True
        self._pool.hand_over(connection)
        self.owner.dial_succeeded(self, connection, head, rest)

    def response_interim(self, head: ResponseHead) -> None:
        pass  # the proxy's own handshake: a 1xx before its answer is nobody's to see

    def response_head(self, head: ResponseHead, has_body: bool) -> None:
        self._fail(f"it answered {head.status} {head.reason.decode('latin-1')}", final=is_refusal(head.status))

    def response_body(self, data: bytes) -> None:
        pass

    def response_end(self) -> None:
        pass

    def flush_head(self) -> None:
        pass

    def origin_failed(self, error: HTTPError) -> None:
        self._fail(error.detail)

    def origin_lost(self, reason: Failure) -> None:
        self._fail(f"it closed the connection: {reason.getErrorMessage()}")

    def origin_timed_out(self) -> None:
        self._fail("no answer within open-handshake-timeout")

    def origin_backpressure(self, paused: bool) -> None:
        pass

    # Ending

    def _fail(self, why: str, final: bool = False) -> None:
        if self.finished:
            return
        self.finished = True
        self._release()
        self.owner.dial_failed(self, why, final)

    def _release(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            self._pool.release(connection, reusable=False)
        if self.server is not None:
            self.backend.release(self.server)
