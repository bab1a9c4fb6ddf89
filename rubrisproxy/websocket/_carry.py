"""A session-mode WebSocket carried to another rubrisproxy process in an upgrade: the old process's side.

:class:`SessionCarrying` is a base of :class:`~rubrisproxy.websocket.WebSocketSession` (a base, so it costs the
message path nothing but one check per client read), on :class:`~rubrisproxy.websocket._moving.SessionMoving`.
An OPEN session whose backend connection is plain TCP crosses with both sockets, at a moment both legs are at a
message boundary: its backend notices nothing. Any other (its backend connection on TLS, a session moving
already), or one whose legs are never both at rest within :data:`CARRY_WAIT`, leaves its server as a drain makes
it leave (its close relayed, what the server still sends passed on), and once it has no backend leg and the
client is at a message boundary, the client's socket crosses alone: the new process opens a backend leg through
the resume path, held messages first. The session's record is a
:class:`~rubrisproxy.websocket._carry_record.SessionRecord`; the new process's side,
:class:`~rubrisproxy.websocket._adopting.SessionAdopting`. See ``docs/websocket.md``, "Upgrades and session mode".
"""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from twisted.python.failure import Failure

from .._compat import let_go, take_unsent, tcp_buffered
from ..transfer import CARRYING, Carried, Kind
from ._carry_record import VERSION, SessionRecord, b64, encode_messages, latin
from ._ending import CARRIED, GOING_AWAY, MOVING, OPEN, RESUMING, close
from ._moving import SessionMoving

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IFileDescriptor

    from ..backend import Backend, Server
    from ..origin import OriginRelay
    from ..transfer import Carrier

#: How long a carry waits for the client to reach a message boundary before the session moves here instead.
CARRY_WAIT = 10.0


class Sockets(Enum):
    """Which sockets a carry in progress takes along."""

    BOTH = "both"  # the client's and the backend's: the session crosses OPEN, its backend noticing nothing
    CLIENT = "client"  # the client's: the backend leg is left (or gone), and made again through the resume path


class SessionCarrying(SessionMoving):
    """A session's move to another process (:meth:`move`): the old process's side. An OPEN session whose backend
    leg is on plain TCP takes both sockets, at a moment both legs are at a message boundary; any other (a TLS
    backend leg, a session moving already) leaves its server first, then takes the client's socket alone."""

    __slots__ = ("_carrier", "_carrying", "_carry_wait", "_unsent", "messages_out")

    _carrier: Carrier | None  # where it is being carried, until it is or it stays
    _carrying: Sockets | None  # what the carry in progress takes along
    _carry_wait: IDelayedCall | None  # the limit on waiting for a message boundary
    _unsent: tuple[bytes, bytes]  # what was written to the client and to the backend and not sent yet, taken
    messages_out: int  # messages sent to the client leg
    _backend: Backend
    _idle_limit: float

    def carriable(self) -> str | None:
        """Why the session cannot move to another process now (None: it can)."""
        self.settle_loss()
        leg = self._legs.client
        if self._state not in (OPEN, MOVING, RESUMING) or leg is None or leg.held is not None:
            return "it is closing"
        if not tcp_buffered(self._client.transport):
            return "its client is not on a plain TCP connection (TLS, HTTP/2)"
        if not self._config.resume and not self._takes_backend():
            return "its backend does not resume sessions, and its backend connection cannot cross (TLS, or moving)"
        return None

    def _takes_backend(self) -> bool:
        origin = self._legs.origin
        return self._state is OPEN and self._legs.backend_open and origin is not None and tcp_buffered(origin.transport)

    def move(self, carrier: Carrier) -> None:
        """Move to another process through ``carrier`` (``transfer.Movable``), at the next message boundary; a
        session that cannot move stays, and says why (see the class docstring)."""
        why = self.carriable()
        if why is not None or self._carrier is not None:
            why = why or "moving already"
            self.log.info("session {id} stays in this process: {why}", id=self.session_id, why=why)
            carrier.keep(Kind.SESSION, why)
            return
        self._carrier = carrier
        self._carry_wait = self._handoff.clock.callLater(CARRY_WAIT, self._carry_timed_out)
        if self._takes_backend():
            self._carrying = Sockets.BOTH
            origin = self._legs.origin
            assert origin is not None and origin.relay is not None
            origin.relay = _BackendReads(self, origin.relay)  # told of each read until it crosses
            self._at_boundary()
        else:
            self._leave_server()

    def _leave_server(self) -> None:
        self._carrying = Sockets.CLIENT
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
        self._unwatch_backend()  # a session carrying both sockets lost its backend leg: the client's alone go
        self._carrying = Sockets.CLIENT
        move = self._resumption.move
        assert move is not None
        move.moved_from, move.started = moved_from, started
        self._at_boundary()

    def carry_read(self) -> None:
        """A read from the client (or the backend, when it crosses too) while a carry waits for a boundary."""
        self._at_boundary()

    def _at_boundary(self) -> None:
        """Hand over now if the legs taken along hold nothing half-read (else the next read calls again)."""
        client, backend = self._legs.client, self._legs.backend
        assert client is not None
        if self._client.gate.paused_for(CARRYING) or not _at_rest(client):
            return
        if self._carrying is Sockets.BOTH:
            if self._state is not OPEN or backend is None or not _at_rest(backend):
                return
        elif self._state is not RESUMING or backend is not None:
            return
        self._hand_over(client, backend if self._carrying is Sockets.BOTH else None)

    def _hand_over(self, client: Any, backend: Any) -> None:
        self._client.gate.pause(CARRYING)
        client.stop_pings()
        sockets = [cast("IFileDescriptor", self._client.transport).fileno()]
        unsent_backend = b""
        origin = self._legs.origin
        if backend is not None:
            assert origin is not None and origin.gate is not None
            origin.gate.pause(CARRYING)
            backend.stop_pings()
            unsent_backend = take_unsent(origin.transport)
            sockets.append(cast("IFileDescriptor", origin.transport).fileno())
        self._unsent = (take_unsent(self._client.transport), unsent_backend)
        record = self._record(client, backend)
        self._deadline.stop()
        carrier = self._carrier
        assert carrier is not None
        carried = Carried(Kind.SESSION, VERSION, self._handoff.frontend, record.encoded(), tuple(sockets))
        carrier.carry(carried).addCallbacks(self._carried, self._not_carried, callbackArgs=(record,))

    def _record(self, client: Any, backend: Any) -> SessionRecord:
        resumption, legs, handoff = self._resumption, self._legs, self._handoff
        move = resumption.move
        upgrade = handoff.upgrade
        assert upgrade is not None
        head = handoff.head
        backend_socket = None
        if backend is not None:
            server = handoff.server
            switch, key = backend.opening()
            assert server is not None
            backend_socket = {"server": server.name, "switch": latin(switch) if isinstance(switch, bytes) else None,
                              "protocol": switch if isinstance(switch, str) else None, "key": latin(key),
                              "extensions": negotiated(backend), "unread": b64(backend.unread()),
                              "unsent": b64(self._unsent[1]), "inflate_window": b64(backend.inflate_window())}
        return SessionRecord(
            session_id=self.session_id, backend=self._backend.name, state=self._state.value,
            reason=move.reason if move is not None else "the proxy is upgrading",
            moved_from=move.moved_from.name if move is not None and move.moved_from is not None else None,
            request={"method": latin(head.method), "target": latin(head.target), "version": latin(head.version),
                     "headers": [(latin(name), latin(value)) for name, value in head.headers], "size": head.size},
            handshake=latin(resumption.template), key=latin(handoff.websocket_key or b""),
            protocols=list(upgrade.protocols), origin=upgrade.origin,
            offered_extensions=[latin(value) for value in upgrade.extensions],
            protocol=legs.protocol, answer_headers=legs.answer()[1], extensions=negotiated(client),
            resumes=resumption.resumes, messages_in=self.messages_in, messages_out=self.messages_out,
            idle=self._deadline.remaining, held=encode_messages(resumption.held.peek()),
            unread=b64(client.unread()), unsent=b64(self._unsent[0]), inflate_window=b64(client.inflate_window()),
            backend_socket=backend_socket, log=handoff.carried(),
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
        server = self._handoff.server
        if server is not None:
            server.watchers.discard(self)
        self.log.info("session {id} carried to the new process ({what}, {held} held messages)", id=self.session_id,
                      what="with its backend connection" if record.backend_socket else "its client's connection",
                      held=len(record.held))
        let_go(self._client.transport)
        origin = self._legs.origin
        if record.backend_socket is not None and origin is not None:
            self._legs.backend = None
            let_go(origin.transport)
        self._handoff.moved()

    def _not_carried(self, failure: Failure) -> None:
        self._stay(f"the hand-over failed: {failure.getErrorMessage()}")

    def _carry_timed_out(self) -> None:
        self._carry_wait = None
        if self._client.gate.paused_for(CARRYING):
            return  # on its way
        if self._carrying is Sockets.BOTH and self._config.resume:
            self._unwatch_backend()  # the legs are never both at rest: leave the server, and carry the client's
            self._carry_wait = self._handoff.clock.callLater(CARRY_WAIT, self._carry_timed_out)
            self._leave_server()
            return
        why = f"it did not reach a message boundary within {CARRY_WAIT:g}s"
        if self._carrier is not None:
            self._carrier.keep(Kind.SESSION, why)
        self._stay(why)

    def _maybe_end(self) -> None:
        self._stop_waiting()  # it is ending: a carry waiting for it is over
        super()._maybe_end()

    def _stop_waiting(self) -> None:
        call, self._carry_wait = self._carry_wait, None
        if call is not None and call.active():
            call.cancel()
        self._unwatch_backend()

    def _unwatch_backend(self) -> None:
        origin = self._legs.origin
        if origin is not None and isinstance(origin.relay, _BackendReads):
            origin.relay = origin.relay.relay

    def _stay(self, why: str) -> None:
        """The session does not move to another process: it serves on here."""
        self._stop_waiting()
        self._carrier = None
        self.log.info("session {id} stays in this process: {why}", id=self.session_id, why=why)
        client, backend, origin = self._legs.client, self._legs.backend, self._legs.origin
        if self._client.gate.paused_for(CARRYING) and client is not None:
            unsent_client, unsent_backend = self._unsent
            self._unsent = (b"", b"")
            if unsent_client:
                self._client.transport.write(unsent_client)
            client.restart_pings()
            if self._carrying is Sockets.BOTH and backend is not None and origin is not None:
                if unsent_backend:
                    origin.transport.write(unsent_backend)
                backend.restart_pings()
                assert origin.gate is not None
                origin.gate.resume(CARRYING)
            self._deadline.set(self._idle_limit)
            self._client.gate.resume(CARRYING)
        self._carrying = None
        resumption = self._resumption
        move = resumption.move
        if self._state is RESUMING and self._legs.backend is None and move is not None:
            if resumption.engineio is not None:
                resumption.engineio.moving()  # its heartbeat to the client, stopped for the record, goes on
            resumption.search(move.moved_from, move.started)


def _at_rest(leg: Any) -> bool:
    """Whether a leg holds nothing half-read (Autobahn's parser between messages) and no close is pending."""
    return leg.current_frame is None and not leg.inside_message and leg.held is None and leg.state == leg.STATE_OPEN


class _BackendReads:
    """A backend connection's relay while its session waits to cross with it: each read is passed on, then the
    session looks again for the moment both legs are at rest."""

    __slots__ = ("relay", "_session")

    def __init__(self, session: SessionCarrying, relay: OriginRelay) -> None:
        self.relay = relay
        self._session = session

    def origin_data(self, data: bytes) -> None:
        self.relay.origin_data(data)
        self._session.carry_read()

    def origin_fin(self) -> None:
        self.relay.origin_fin()

    def origin_lost(self, reason: Failure) -> None:
        self.relay.origin_lost(reason)


def negotiated(leg: Any) -> str:
    """The extensions an open leg negotiated, with their parameters (as Autobahn describes them: JSON)."""
    return json.dumps([extension.__json__() for extension in leg.websocket_extensions_in_use or ()], sort_keys=True)
