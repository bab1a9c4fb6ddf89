"""A session-mode WebSocket carried to another rubrisproxy process in an upgrade, and made again there.

:class:`SessionCarrying` is a base of :class:`~rubrisproxy.websocket.WebSocketSession` (a base, so it costs the
message path nothing but one check per client read while a carry waits), on
:class:`~rubrisproxy.websocket._moving.SessionMoving`. The backend leg does not cross: the session leaves its
server as it does when the server is drained (its close relayed, what the server still sends passed on), and
once it has no backend leg and the client is at a message boundary, the client's socket and the session's
record (:class:`~rubrisproxy.websocket._carry_record.SessionRecord`) go to the new process, which opens the
backend leg through the resume path, held messages first. See ``docs/websocket.md``, "Upgrades and session mode".
"""

from __future__ import annotations

import json
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from .._compat import let_go, take_unsent, tcp_buffered
from ..transfer import Carried, Kind, Refused
from ._carry_record import VERSION, SessionRecord, b64, encode_messages, latin
from ._ending import CARRIED, GOING_AWAY, MOVING, OPEN, RESUMING, close
from ._moving import SessionMoving

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from ..backend import Backend, Server
    from ..transfer import Carrier

#: The client connection's read-gate reason while its session is handed over.
CARRYING = "carry"
#: How long a carry waits for the client to reach a message boundary before the session moves here instead.
CARRY_WAIT = 10.0


class SessionCarrying(SessionMoving):
    """A session's move to another process (:meth:`move`) and its making again there (:meth:`adopt`)."""

    __slots__ = ("_carrier", "_carry_wait", "_unsent", "messages_out")

    _carrier: Carrier | None  # where it is being carried, until it is or it stays
    _carry_wait: IDelayedCall | None  # the limit on waiting for the client's message boundary
    _unsent: bytes  # what was written to the client and not sent yet, taken while it is carried
    messages_out: int  # messages sent to the client leg
    _backend: Backend
    _idle_limit: float

    # The old process

    def carriable(self) -> str | None:
        """Why the session cannot move to another process now (None: it can)."""
        leg = self._legs.client
        if self._state not in (OPEN, MOVING, RESUMING) or leg is None or leg.held is not None:
            return "it is closing"
        if not tcp_buffered(self._client.transport):
            return "its client is not on a plain TCP connection (TLS, HTTP/2)"
        if not self._config.resume:
            return "its backend does not resume sessions"
        return None

    def move(self, carrier: Carrier) -> None:
        """Move to another process through ``carrier`` (``transfer.Movable``): leave the server as a drain does,
        then, at the client's next message boundary, hand over. A session that cannot move stays, and says why."""
        why = self.carriable()
        if why is not None or self._carrier is not None:
            self.log.info("session {id} stays in this process: {why}", id=self.session_id, why=why or "moving already")
            return
        self._carrier = carrier
        self._carry_wait = self._handoff.clock.callLater(CARRY_WAIT, self._carry_timed_out)
        state = self._state
        if state is OPEN:
            self._state = MOVING
            self._resumption.begin(self, "the proxy is upgrading")
            close(self._legs.backend, GOING_AWAY, b"proxy upgrading")  # _search follows once it has closed
        elif state is RESUMING:
            if self._legs.backend is None:  # dialling: stop, the new process dials
                move = self._resumption.move
                assert move is not None
                move.cancel()
                self._at_boundary()
            # else a new backend leg is rejoining: _settled follows
        # MOVING: the old leg is closing; _search follows

    def _settled(self) -> None:
        if self._carrier is not None:
            carrier, self._carrier = self._carrier, None
            self._stop_waiting()
            self.move(carrier)

    def _search(self, moved_from: Server | None, started: float) -> None:
        if self._carrier is None:
            super()._search(moved_from, started)
            return
        move = self._resumption.move
        assert move is not None
        move.moved_from, move.started = moved_from, started
        self._at_boundary()

    def client_read(self) -> None:
        """A read from the client while a carry waits for its message boundary."""
        if self._state is RESUMING and self._legs.backend is None:
            self._at_boundary()

    def _at_boundary(self) -> None:
        """Hand over now if the client leg holds nothing half-read (else its next read calls again)."""
        leg = self._legs.client
        assert leg is not None
        if leg.held is not None or self._state is not RESUMING:
            return
        if leg.current_frame is not None or leg.inside_message or self._client.gate.paused_for(CARRYING):
            return
        self._client.gate.pause(CARRYING)
        leg.stop_pings()
        self._unsent = take_unsent(self._client.transport)
        record = self._record(leg)
        self._deadline.stop()
        carrier = self._carrier
        assert carrier is not None
        carried = Carried(Kind.SESSION, VERSION, self._handoff.frontend, record.encoded(),
                          (self._client.transport.fileno(),))
        carrier.carry(carried).addCallbacks(self._carried, self._not_carried, errbackArgs=(record,),
                                            callbackArgs=(record,))

    def _record(self, leg: Any) -> SessionRecord:
        resumption, legs, handoff = self._resumption, self._legs, self._handoff
        move = resumption.move
        upgrade = handoff.upgrade
        assert move is not None and upgrade is not None
        head = handoff.head
        return SessionRecord(
            session_id=self.session_id, backend=self._backend.name, state=self._state.value, reason=move.reason,
            moved_from=move.moved_from.name if move.moved_from is not None else None,
            request={"method": latin(head.method), "target": latin(head.target), "version": latin(head.version),
                     "headers": [(latin(name), latin(value)) for name, value in head.headers], "size": head.size},
            handshake=latin(resumption.template), key=latin(handoff.websocket_key or b""),
            protocols=list(upgrade.protocols), origin=upgrade.origin,
            offered_extensions=[latin(value) for value in upgrade.extensions],
            protocol=legs.protocol, answer_headers=legs.answer()[1], extensions=negotiated(leg),
            resumes=resumption.resumes, messages_in=self.messages_in, messages_out=self.messages_out,
            idle=self._deadline.remaining, held=encode_messages(resumption.held.peek()),
            unread=b64(leg.unread()), unsent=b64(self._unsent), inflate_window=b64(leg.inflate_window()),
            log=handoff.carried(),
            engineio=resumption.engineio.carried() if resumption.engineio is not None else None,
        )

    def _carried(self, adopted: bool, record: SessionRecord) -> None:
        if not adopted:
            self._stay(f"the new process refused it ({record.state})")
            return
        self._stop_waiting()
        self._carrier = None
        self._state = CARRIED
        resumption = self._resumption
        resumption.cancel()
        resumption.held.release()  # carried: neither sent nor lost here
        self._handoff.websockets.discard(self)
        self.log.info("session {id} carried to the new process ({held} held messages)", id=self.session_id,
                      held=len(record.held))
        let_go(self._client.transport)
        self._handoff.moved()

    def _not_carried(self, failure: Failure, record: SessionRecord) -> None:
        self._stay(f"the hand-over failed: {failure.getErrorMessage()}")

    def _carry_timed_out(self) -> None:
        self._carry_wait = None
        if not self._client.gate.paused_for(CARRYING):
            self._stay(f"its client did not reach a message boundary within {CARRY_WAIT:g}s")

    def _maybe_end(self) -> None:
        self._stop_waiting()  # it is ending: a carry waiting for it is over
        super()._maybe_end()

    def _stop_waiting(self) -> None:
        call, self._carry_wait = self._carry_wait, None
        if call is not None and call.active():
            call.cancel()

    def _stay(self, why: str) -> None:
        """The session does not move to another process: it serves on here, on a server of this process's."""
        self._stop_waiting()
        self._carrier = None
        self.log.info("session {id} stays in this process: {why}", id=self.session_id, why=why)
        leg = self._legs.client
        if self._client.gate.paused_for(CARRYING) and leg is not None:
            unsent, self._unsent = self._unsent, b""
            if unsent:
                self._client.transport.write(unsent)
            leg.restart_pings()
            self._deadline.set(self._idle_limit)
            self._client.gate.resume(CARRYING)
        resumption = self._resumption
        move = resumption.move
        if self._state is RESUMING and self._legs.backend is None and move is not None:
            if resumption.engineio is not None:
                resumption.engineio.moving()  # its heartbeat to the client, stopped for the record, goes on
            resumption.search(move.moved_from, move.started)

    # The new process

    def adopt(self, record: SessionRecord, moved_from: Server | None) -> None:
        """Take the session over from ``record``: the client leg open again on the adopted connection, without a
        handshake on the wire, the held messages held, and a new backend leg looked for (``moved_from`` last)."""
        resumption = self._resumption
        resumption.resumes = record.resumes
        self.messages_in, self.messages_out = record.messages_in, record.messages_out
        for message in record.held_messages:
            if resumption.held.hold(message) is not None:
                resumption.held.release()
                raise Refused("its held messages do not fit in this process's resume buffers")
        leg = self._legs.adopt_client(record.protocol, dict(record.answer_headers))
        if negotiated(leg) != record.extensions:
            leg.stop_pings()
            resumption.held.release()
            raise Refused(f"its extensions {record.extensions!r} are not what this process negotiates")
        leg.prime(b64decode(record.inflate_window))
        unsent = b64decode(record.unsent)
        if unsent:
            self._client.transport.write(unsent)  # before anything this process sends the client
        self._state = RESUMING
        self._deadline.set(record.idle if record.idle is not None else self._idle_limit)
        if resumption.engineio is not None and record.engineio is not None:
            resumption.engineio.restore(record.engineio)
        resumption.begin(self, record.reason)
        started = self._handoff.clock.seconds()
        unread = b64decode(record.unread)
        if unread:
            leg.dataReceived(unread)
        if self._state is RESUMING:
            self.log.info("session {id} taken over from the old process ({held} held messages)",
                          id=self.session_id, held=len(record.held))
            resumption.search(moved_from, started)


def negotiated(leg: Any) -> str:
    """The extensions an open leg negotiated, with their parameters (as Autobahn describes them: JSON)."""
    return json.dumps([extension.__json__() for extension in leg.websocket_extensions_in_use or ()], sort_keys=True)
