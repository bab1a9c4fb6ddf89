"""How an exchange ends: its failures answered or cut, then its accounting (slot, session, metrics, log)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python.failure import Failure

from ..http import HTTPError, error_response
from ..lifecycle import Termination
from ..origin import OriginConnection
from ._dispatch import ORIGIN, Dispatch, State
from ._heads import Framing

if TYPE_CHECKING:
    from ..clients import ClientSession
    from ._rule_actions import RuleRun
    from ._upgrade import ExchangeHandoff

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
# The states it reads, as module names: a member read through its Enum class costs a descriptor call.
_RELAYING, _DONE = State.RELAYING, State.DONE


class ExchangeEnding(Dispatch):
    """The part of :class:`~rubrisproxy.frontend.Exchange` that ends it.

    A failure on either side drops its server connection and ends the exchange through :meth:`fail`: an
    error answered if no response head is written yet, else the client cut (a reused connection that died
    first is retried once on a new one, when resending loses nothing). :meth:`_account` then marks it
    ``DONE``, frees its server slot, tells its client session and adds it to the metrics and the access log.
    """

    # Set by Exchange.__init__ (an __init__ here would be a call more per request).
    __slots__ = ("termination", "session", "_stale_retry_done", "pending_head", "_pending", "websocket")

    termination: Termination | None  # how it ended, once it has
    session: ClientSession | None  # the client session the request belongs to, if tracked
    _stale_retry_done: bool  # a reused connection that died was retried once already
    # What an ending drops: a response head held back to leave with body bytes, and request body read before
    # there was a connection for it (both written by Exchange).
    pending_head: bytes | None
    _pending: list[bytes] | None
    _framing: int  # Exchange's: how the response body is delimited (a Framing)
    rules: RuleRun | None  # Exchange's: its run through HTTP rules, which holds rate-limit entries until it ends
    websocket: ExchangeHandoff | None  # a WebSocket upgrade's hand-over (Exchange's), which refers back to it

    # Failures on the origin side

    def origin_failed(self, error: HTTPError) -> None:
        self._drop_connection()
        self.fail(error, Termination.BAD_RESPONSE)

    def origin_lost(self, reason: Failure) -> None:
        connection = self.connection
        self._drop_connection()
        if self._state is _DONE:
            return
        if not self.status and connection is not None and self._may_retry_stale(connection):
            self._stale_retry_done = True
            self.retries += 1
            self.log.info("{server} closed a reused connection; retrying on a new one", server=self.server)
            assert self.server is not None  # its connection was to one
            self._connect(self.client.frontend.pool.connect(self.server))
            return
        self.fail(
            HTTPError(502, f"{self.server} closed the connection: {reason.getErrorMessage()}"),
            Termination.SERVER_ABORT,
        )

    def origin_timed_out(self) -> None:
        self._drop_connection()
        what = "sent nothing" if self.request_done or not self.head.has_body else "took none of the request body"
        self.fail(HTTPError(504, f"{self.server} {what} within timeout server"), Termination.SERVER_TIMEOUT)

    def _may_retry_stale(self, connection: OriginConnection) -> bool:
        """A reused connection died before answering: safe to resend only if nothing is lost by it."""
        if self._stale_retry_done or not connection.reused or self.bytes_in:
            return False
        return self.head.method in IDEMPOTENT or connection.bytes_sent == 0

    # Failures on the client side

    def client_lost(self) -> None:
        if self._state is _DONE:
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
        if self._state is _DONE:
            return
        self.log.warn(
            "{method} {target} from {client}: {status} {detail}",
            method=self.head.method.decode("latin-1"), target=self.head.target.decode("latin-1"),
            client=self.client_address, status=error.status, detail=error.detail,
        )
        self.answer(error, termination)

    def answer(self, error: HTTPError, termination: Termination) -> None:
        """End with ``error`` as :meth:`fail` does, without a line in the main log: the proxy's answer by a rule
        (a redirect, a deny, a rate limit's 429), which the access log shows."""
        if self._state is _DONE:
            return
        self.pending_head = None  # never sent: the client gets the error instead
        if self._state is _RELAYING:
            # A framed body shows the client it was truncated, so what was relayed is still
            # delivered; a close-delimited one, or a stalled client, is reset instead.
            if self._framing == Framing.CLOSE or termination is Termination.CLIENT_TIMEOUT:
                self.client.transport.abortConnection()
            self._finish(termination, keep_alive=False)
            return
        self.status = error.status
        # A request without a body is whole once its head is read, even if its end is parsed after this.
        whole = self.request_done or not (self.head.has_body or self.head.upgrade)
        status = error.status
        # A redirect and a 5xx keep the connection; another 4xx refused the request, maybe unread: it closes.
        keep_alive = (whole and (status >= 500 or status < 400) and not self.head.wants_close
                      and not self.client.ends_with(self))
        response = error_response(error.status, close=not keep_alive, headers=error.headers, json=error.body)
        if self.head.method == b"HEAD":  # its head alone: a body the client does not expect would be read as a response
            response = response[:response.index(b"\r\n\r\n") + 4]
        self.bytes_out += len(response)
        self.client.write(response)
        self._finish(termination, keep_alive)

    def _finish(self, termination: Termination, keep_alive: bool) -> None:
        relayed = self._state is _RELAYING
        status = self.status
        # A session-gone answer stands for the server's own 400 to an unknown sid: the client session ends with it.
        answered_for_origin = self.response_at >= 0 or termination is Termination.SESSION_GONE
        now = self._account(termination, status if answered_for_origin and status != 101 else 0, status,
                            relayed or status == 101)
        self._pending = None
        self.websocket = None  # an upgrade answered without a 101 (or failed): its hand-over would keep a cycle
        client = self.client
        if client.gate.paused:
            client.gate.resume(ORIGIN)
        if client.download.producer is not None:
            client.download.detach()
        client.exchange_done(self, keep_alive, now, relayed)

    def _account(self, termination: Termination, origin_status: int, answered: int, from_origin: bool) -> float:
        """Mark it done, tell its client session (``origin_status``: the origin's answer, 0 if none), free its
        server slot, count ``answered`` as the server's answer, and add it to the metrics and the access log.
        Returns when it ended."""
        self._state = _DONE
        self.termination = termination
        if self.rules is not None:
            self.rules.end()
        server, session = self.server, self.session
        if session is not None:
            session.registry.request_ended(session, server.name if server is not None else None, origin_status)
        self._free_slot()
        if server is not None and answered:
            server.responses[answered] = server.responses.get(answered, 0) + 1
        now = self.clock.seconds()
        frontend = self.client.frontend
        self.count(frontend, self.backend, termination, now, from_origin)
        if frontend.access_log.enabled:
            frontend.access_log.write(self.record(now, frontend.name, termination))
        return now

    def upgrade_ended(self, termination: Termination, bytes_in: int, bytes_out: int) -> None:
        """The WebSocket this exchange became has ended, having moved ``bytes_in`` and ``bytes_out`` over the
        client's connection: free its server slot and log it."""
        if self._state is _DONE:
            return
        self.bytes_in = bytes_in
        self.bytes_out += bytes_out
        self.client.websocket_ended(termination)
        self._account(termination, 101, 101, True)
        session = self.session
        if session is not None:
            session.registry.websocket_ended(session, termination in (Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT))

    def upgrade_moved(self) -> None:
        """The WebSocket this exchange became was carried to another process, which counts and logs it: done
        here, its server slot (if it still held one) freed."""
        if self._state is _DONE:
            return
        self._state = _DONE
        if self.rules is not None:
            self.rules.end()
        self._free_slot()

    def dropped(self) -> None:
        """A pipelined request that will never be answered (its connection is closing)."""
        self._state = _DONE
        if self.session is not None:
            self.session.registry.request_ended(self.session, None, 0)
