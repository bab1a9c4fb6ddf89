"""A session-mode WebSocket carried from another rubrisproxy process in an upgrade: the new process's side.

:class:`SessionAdopting` is a base of :class:`~rubrisproxy.websocket.WebSocketSession`, on
:class:`~rubrisproxy.websocket._carry.SessionCarrying` (so a session taken over can be carried on again). It makes
the session again from its :class:`~rubrisproxy.websocket._carry_record.SessionRecord`: the legs open again on the
adopted sockets with nothing on the wire (each one's handshake replayed to Autobahn over a transport that writes
nothing, so it negotiates what it did then; a different outcome refuses the session), inflaters primed with what
the peers may still refer to, unsent bytes written first, unread bytes read first.
"""

from __future__ import annotations

from base64 import b64decode
from typing import TYPE_CHECKING, Any, cast

from ..transfer import Refused
from ._carry import SessionCarrying, negotiated
from ._ending import OPEN, RESUMING

if TYPE_CHECKING:
    from ..backend import Server
    from ..lifecycle import Termination
    from ..origin import OriginConnection
    from ._carry_record import SessionRecord


class SessionAdopting(SessionCarrying):
    """A session taken over from the old process (:meth:`adopt`)."""

    __slots__ = ()

    def adopt(self, record: SessionRecord, moved_from: Server | None, origin: OriginConnection | None) -> None:
        """Take the session over from ``record``, on its client connection and, when it crossed too, on its backend
        connection ``origin`` (OPEN at once); else a backend leg is looked for (``moved_from`` last). Raises
        :class:`~rubrisproxy.transfer.Refused`, having written nothing to either socket, if it cannot."""
        resumption = self._resumption
        resumption.resumes = record.resumes
        self.messages_in, self.messages_out = record.messages_in, record.messages_out
        for message in record.held_messages:
            if resumption.held.hold(message) is not None:
                resumption.held.release()
                raise Refused("its held messages do not fit in this process's resume buffers")
        client = self._legs.adopt_client(record.protocol, dict(record.answer_headers))
        backend = None
        crossed = record.backend_socket
        try:
            if client.state != client.STATE_OPEN:
                raise Refused(f"its client leg does not open again here: {client.wasNotCleanReason}")
            if negotiated(client) != record.extensions:
                raise Refused(f"its client's extensions {record.extensions!r} are not what this process negotiates")
            if crossed is not None:
                assert origin is not None
                backend = self._adopt_backend(origin, crossed)
        except Refused:
            self._forget()
            raise
        client.prime(b64decode(record.inflate_window))
        self._write_first(self._client.transport, record.unsent)
        if engineio := resumption.engineio:
            if record.engineio is not None:
                engineio.restore(record.engineio)
        if backend is not None and origin is not None and crossed is not None:
            self._reopened(backend, origin, crossed, record)
        else:
            self._resume_here(record, moved_from)

    def _forget(self) -> None:
        """Refused: nothing of it is left here (its client leg's opening armed its timers and watched its server)."""
        client = self._legs.client
        if client is not None:
            client.stop_pings()
        self._resumption.held.release()
        self._deadline.stop()
        server = self._handoff.server
        if server is not None:
            server.watchers.discard(self)

    def _adopt_backend(self, origin: OriginConnection, crossed: Any) -> Any:
        switch = crossed["switch"]  # None: opened at once, on the subprotocol its 101 chose
        leg = self._legs.adopt_backend(cast(Any, _Replaying()), origin,
                                       switch.encode("latin-1") if switch is not None else crossed["protocol"],
                                       crossed["key"].encode("latin-1"), list(self._resumption.offered))
        if leg.state != leg.STATE_OPEN:
            raise Refused(f"its backend leg does not open again here: {leg.wasNotCleanReason}")
        if negotiated(leg) != crossed["extensions"]:
            leg.stop_pings()
            raise Refused(f"its backend's extensions {crossed['extensions']!r} are not what this process negotiates")
        leg.session = cast(Any, self)  # the WebSocketSession this is a base of
        return leg

    def _reopened(self, leg: Any, origin: OriginConnection, crossed: Any, record: SessionRecord) -> None:
        leg.prime(b64decode(crossed["inflate_window"]))
        self._write_first(origin.transport, crossed["unsent"])
        self._state = OPEN
        self._legs.wire()
        self._deadline.set(record.idle if record.idle is not None else self._idle_limit)
        self._watch_server()
        self.log.info("session {id} taken over from the old process, with its backend connection",
                      id=self.session_id)
        for side, unread in ((leg, crossed["unread"]), (self._legs.client, record.unread)):
            data = b64decode(unread)
            if data and side is not None and side.state == side.STATE_OPEN:
                side.dataReceived(data)

    def _resume_here(self, record: SessionRecord, moved_from: Server | None) -> None:
        resumption = self._resumption
        self._state = RESUMING
        self._deadline.set(record.idle if record.idle is not None else self._idle_limit)
        resumption.begin(self, record.reason)
        started = self._handoff.clock.seconds()
        unread = b64decode(record.unread)
        client = self._legs.client
        if unread and client is not None:
            client.dataReceived(unread)
        if self._state is RESUMING:
            self.log.info("session {id} taken over from the old process ({held} held messages)",
                          id=self.session_id, held=len(record.held))
            resumption.search(moved_from, started)

    @staticmethod
    def _write_first(transport: Any, unsent: str) -> None:
        """What the old process had written and the kernel had not taken: before anything of this process's."""
        data = b64decode(unsent)
        if data:
            transport.write(data)


class _Replaying:
    """A backend leg's session while it opens again on a 101 it opened on in the old process: it hears of the
    opening, and of a failure (the leg is then not OPEN, and the session refused)."""

    def backend_opened(self, leg: object) -> None:
        pass

    def backend_closing(self, leg: object, code: int | None, reason: bytes | None) -> None:
        pass

    def backend_answered_close(self, leg: object, code: int | None, reason: bytes | None) -> None:
        pass

    def backend_closed(self, leg: object, termination: Termination) -> None:
        pass
