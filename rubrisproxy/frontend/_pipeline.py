"""Answering a client connection's requests in order: one at a time, the others held parsed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr, trait

from .._compat import end_as_closed
from ..http import HTTPError, error_response
from ..lifecycle import ConnectionEnd, Termination
from ._client_parts import ClientParts
from ._ending import end_after
from ._phase import CLOSING, LOST, READING, UPGRADING, Phase
from ._timeouts import WAIT_CLIENT
from ._timing import log_refused

if TYPE_CHECKING:
    from ._exchange import Exchange
    from ._exchange_ending import ExchangeEnding

PIPELINE = "pipeline"
UPGRADE = "upgrade"
#: Requests parsed ahead of the one being answered; past this, parsing stops and what follows waits unparsed
#: (reading is paused already), so a pipelining client costs at most this many requests and one read.
PIPELINE_DEPTH = 16


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # as ClientConnection
class Pipeline(ClientParts):
    """The part of :class:`~rubrisproxy.frontend.ClientConnection` that answers its requests in order.

    One request is answered at a time (``current``); those pipelined behind it wait parsed
    (``_queued``, reading paused), at most :data:`PIPELINE_DEPTH`, the bytes after them unparsed;
    a request refused while parsing waits its turn too (``_held_error``). The next request starts
    only while the client takes what is written (:meth:`_advance`). It is a base rather than an
    object of its own because its methods run on every request and read the connection's state
    each time (its phase, its output, its parser): it shares the connection's slots.
    """

    def _hold(self, exchange: Exchange) -> None:
        """A request was read while another is answered (or the client is not reading): it waits parsed."""
        if self._queued:
            self._queued.append(exchange)
        else:
            self._queued = [exchange]
        self.gate.pause(PIPELINE)
        if len(self._queued) >= PIPELINE_DEPTH:
            self.parser.held = True

    def ends_with(self, exchange: ExchangeEnding) -> bool:
        """Whether the connection closes after answering ``exchange``."""
        phase = self._phase
        return phase is CLOSING or phase is LOST or exchange is self.last_request

    def _starting(self) -> None:
        max_writes = self.frontend.max_writes
        if max_writes and self.responses + 1 >= max_writes and self.last_request is None:
            self.last_request = self.current  # the response about to be written is the last
            self._limit_end = ConnectionEnd.MAX_WRITES

    def exchange_done(self, exchange: ExchangeEnding, keep_alive: bool, now: float, relayed: bool) -> None:
        """``exchange`` has answered (``relayed``: with a response head written, when it ended); start the next
        request or end the connection."""
        phase = self._phase
        if exchange is not self.current or phase is LOST:
            return
        self.current = None
        self.responses += 1
        if exchange is self.last_request:
            keep_alive = False  # its head may have gone out before it became the last (the client half-closed)
        if not keep_alive:
            self._note_half_read()
            answered = exchange is self.last_request and exchange.termination is Termination.OK
            limit = self._limit_end
            self.note_end(limit if answered and limit is not None else end_after(exchange, relayed))
        if phase is not READING and self.gate.paused_for(UPGRADE):
            keep_alive = self._upgrade_refused(phase, keep_alive)
        self._set_ready_at(now)
        if not keep_alive or self._phase is CLOSING:
            self.close()
            return
        if self._queued or self._held_error is not None:  # else _advance has nothing to start: no call
            self._advance()
        if not self._answering() and self._phase is not CLOSING:
            if self._output.full:
                self._wait(WAIT_CLIENT)  # what was written must go before anything starts
            else:
                self._settle()
            if self._carrier is not None:  # a live upgrade waits for it to be idle
                self._move_if_idle()

    def _answering(self) -> bool:
        """Whether a request is being answered, read afresh: in compiled code a read of ``current`` after it was
        set to None is taken to be None, whatever a call in between did."""
        return self.current is not None

    def _note_half_read(self) -> None:
        """The connection closes after this answer: half of a request read after it is never answered (the close
        lingers)."""
        if self.parser.in_message:
            self._ignored += 1

    def client_finished(self) -> None:
        """The client half-closed an HTTP/1.1 connection: the requests it sent whole are answered, the last one with
        ``Connection: close`` (unless its head went out already), then the connection closes; half a head after
        them is never answered (as HAProxy does; the origin may have acted on them already). Half a body, or no
        request waiting, ends it as a close would; so does a half-close in any phase but ``READING``."""
        if self._limit_end is ConnectionEnd.CLIENT_CLOSE:
            return  # told again: reading resumed (the pipeline's turn) finds the end of stream once more
        last = self._queued[-1] if self._queued else self.current
        if last is None or self._phase is not READING or self._receiving is not None or self.parser.held:
            end_as_closed(self.transport)
            return
        if self.last_request is None:  # else a limit made an earlier request, or this one, the last
            self.last_request = last
            self._limit_end = ConnectionEnd.CLIENT_CLOSE

    def _upgrade_refused(self, phase: Phase, keep_alive: bool) -> bool:
        """An upgrade request was answered without a hand-over: refused, the connection stays HTTP. Returns
        whether it may stay open."""
        if phase is UPGRADING:
            self._to(READING)
        self.gate.resume(UPGRADE)
        if self._after_upgrade:
            self._ignored += len(self._after_upgrade)
            self._after_upgrade = b""
            return False  # the client did not wait for the answer: nothing it sent can be trusted
        return keep_alive

    def _begin(self, exchange: Exchange) -> None:
        """Start answering ``exchange``."""
        self.current = exchange
        self._settle()
        if self.frontend.max_writes:
            self._starting()
        exchange.start()

    def _advance(self) -> None:
        """Start the waiting requests in order, one at a time, while the client takes what is written.

        A loop, not a recursion: a request answered as it starts (a refusal, 503) ends inside
        :meth:`_begin`, and its :meth:`exchange_done` leaves the next one to this loop (``_advancing``
        guards it: a re-entry, not a state of the connection's).
        """
        if self._advancing:
            return
        self._advancing = True
        try:
            while self.current is None and self._phase is not CLOSING and self._phase is not LOST and not self._output.full:
                if self._queued:
                    exchange = self._queued.pop(0)
                    self.current = exchange  # so that what is parsed below waits behind it
                    if self.parser.held and len(self._queued) < PIPELINE_DEPTH:
                        self.parser.held = False
                        held, self._unparsed = self._unparsed, b""
                        self._parse(held)
                    if not self._queued and self._held_error is None:
                        self.gate.resume(PIPELINE)
                    if self.current is exchange:  # not refused while parsing what was held
                        self._begin(exchange)
                elif self._held_error is not None:
                    self._answer_error(self._held_error)
                else:
                    break
        finally:
            self._advancing = False

    def _drop_queued(self) -> None:
        """The connection is closing: the requests waiting will never be answered, nor what is unparsed (which
        only requests waiting hold back); their heads count in ``_ignored``."""
        for exchange in self._queued:
            self._ignored += exchange.head.size
            exchange.dropped()
        self._queued = ()
        self._unparsed = b""

    # Requests refused while parsing

    def _refuse(self, error: HTTPError) -> None:
        self._ignored += 1  # the parser broke off: what follows is never read
        receiving = self._receiving
        if receiving is not None and receiving.head is not None and receiving is self.current:
            self._receiving = None
            receiving.client_failed(error)
            return
        self.gate.pause(PIPELINE)
        if self.current is not None or self._queued:
            self._held_error = error  # answered in order, after the responses to the requests before it
        else:
            self._answer_error(error)

    def _answer_error(self, error: HTTPError, termination: Termination | None = None) -> None:
        self._ignored += 1  # refused while parsing, or its head timed out: what follows is never read
        self.log.info(
            "refused a request from {client}: {status} {detail}",
            client=self.client_address, status=error.status, detail=error.detail,
        )
        if termination is None:
            termination = Termination.NOT_IMPLEMENTED if error.status == 501 else Termination.BAD_REQUEST
        response = error_response(error.status)
        self.write(response)
        self.responses += 1
        log_refused(self, error.status, termination, len(response))
        self.end(ConnectionEnd.TIMEOUT if termination is Termination.REQUEST_TIMEOUT else ConnectionEnd.PROTOCOL_READ_ERROR)
