"""Engine.IO-aware resume: a Socket.IO session moved to another server without its client noticing.

A session whose upgrade is Engine.IO (``_engineio.session_version``) gets an :class:`EngineIOResume`, first in
its hooks, so it reads both directions' text messages and nothing is added to other sessions' path. What it learns
from them (the heartbeat, the namespaces the client joined, the emits waiting for an ack) its
:class:`~rubrisproxy.websocket._eioledger.EngineIOLedger` keeps. When the session moves, the new server is dialled
without the old ``sid`` (a new Engine.IO session), and once its backend leg opens an
:class:`~rubrisproxy.websocket._eiorejoin.EngineIORejoin` rejoins on it: it consumes the server's open packet,
replays the CONNECTs, consumes the answers, then this object lets the session send what it held. The client keeps
its connection, its Engine.IO sid and its socket ids; only the server knows the session under new ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ..engineio import MESSAGE, OPEN, PING, PONG, session_version
from ._eioledger import EngineIOLedger, HoldingSession
from ._eiorejoin import EngineIORejoin, NewLeg
from ._hooks import Message

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..backend import EngineIOStickiness
    from ..config import WebSocketConfig

_PING = Message(b"2", False)


class RejoiningSession(HoldingSession, Protocol):
    """What :class:`EngineIOResume` needs of its session."""

    @property
    def session_id(self) -> str: ...

    @property
    def clock(self) -> IReactorTime: ...

    def send_to_client(self, message: Message) -> None: ...

    def rejoined(self, leg: NewLeg) -> None:
        """The new server has the client's Engine.IO session and namespaces: send what is held."""

    def rejoin_failed(self, leg: NewLeg, why: str) -> None:
        """The new server did not take the Engine.IO session: try another."""


class _Phase(Enum):
    RELAYING = "relaying"  # learning from what passes
    MOVING = "moving"  # no server: the proxy keeps the client's heartbeat going
    REJOINING = "rejoining"  # a new backend leg is open: its EngineIORejoin reads what it sends


class EngineIOResume:
    """A Socket.IO session's hook, and its Engine.IO side as it moves: its state is a ``_Phase`` (see the module
    docstring).

    Heartbeats while moving: in v4 the server pings and the client answers, so the proxy pings the client
    itself at the learned interval and swallows as many of its pongs; in v3 the client pings, so the proxy
    answers its pings. A drained server's leg is closed once it has answered the acks it owes
    (:meth:`after_owed_acks`); an emit that waited for its ack when the old server was lost never gets it: those
    are counted lost (:meth:`moved_off`).
    """

    log = Logger()

    __slots__ = ("_session", "ledger", "_handshake_timeout", "_phase", "_aware", "_last_ping", "_beat", "_owed_pongs",
                 "_rejoin", "_leave", "_leaving")

    def __init__(self, session: RejoiningSession, ledger: EngineIOLedger, handshake_timeout: float) -> None:
        self._session = session
        self.ledger = ledger  # what passes is learned there
        self._handshake_timeout = handshake_timeout  # for the new server's open packet and CONNECT answers
        self._phase = _Phase.RELAYING
        self._aware = False  # whether this move rejoins (else it is the generic resume)
        self._last_ping: float | None = None
        self._beat: IDelayedCall | None = None
        self._owed_pongs = 0
        self._rejoin: EngineIORejoin | None = None  # while REJOINING
        self._leave: Callable[[], None] | None = None  # a drained server's leg closes once its owed acks came
        self._leaving: IDelayedCall | None = None  # ... or at this deadline

    @classmethod
    def for_session(cls, session: RejoiningSession, config: WebSocketConfig, target: bytes,
                    polling: EngineIOStickiness | None, server: str | None = None) -> EngineIOResume | None:
        """The Engine.IO hook of a session whose upgrade went to ``target``, if its backend's ``engineio`` and
        ``resume`` settings make it one to read; ``polling`` keeps what sessions did before they upgraded."""
        version = session_version(config.engineio, target) if config.resume else None
        if version is None:
            return None
        ledger = EngineIOLedger.for_upgrade(session, version, target, polling, server)
        return cls(session, ledger, config.open_handshake_timeout)

    # The session's hook: both directions' messages

    def handshake(self, request: object) -> None:
        pass

    def client_message(self, session: object, message: Message) -> Message | None:
        payload = message.payload
        if message.binary or not payload:
            return message
        kind = payload[0]
        if kind == MESSAGE:
            self.ledger.from_client(payload)
        elif kind == PONG and self._owed_pongs:
            self._owed_pongs -= 1  # the answer to a ping of the proxy's
            return None
        elif kind == PING and self.ledger.version < 4 and self._phase is not _Phase.RELAYING:
            self._session.send_to_client(Message(b"3" + payload[1:], False))  # v3: the proxy answers while moving
            return None
        return message

    def backend_message(self, session: object, message: Message) -> Message | None:
        payload = message.payload
        if message.binary or not payload:
            return message
        if self._phase is _Phase.REJOINING:
            rejoin = self._rejoin
            assert rejoin is not None
            return message if rejoin.read(payload) else None
        kind = payload[0]
        if kind == PING:
            self._last_ping = self._session.clock.seconds()
        elif kind == OPEN:
            message = self.ledger.opened(message)
        elif kind == MESSAGE:
            self.ledger.from_server(payload)
        return message

    def session_closed(self, session: object) -> None:
        self.stop_moving()

    # What the session's move calls (through its Resumption)

    def moving(self) -> bool:
        """The session starts to move: keep the client's heartbeat going; whether this move rejoins."""
        ledger = self.ledger
        ledger.take_polled()
        self._phase = _Phase.MOVING
        self._aware = ledger.can_rejoin
        if ledger.version >= 4 and self._beat is None:
            now = self._session.clock.seconds()
            due = (self._last_ping if self._last_ping is not None else now) + ledger.interval
            self._beat = self._session.clock.callLater(max(0.0, due - now), self._ping_client)
        return self._aware

    def _ping_client(self) -> None:
        self._beat = self._session.clock.callLater(self.ledger.interval, self._ping_client)
        self._send_ping()

    def _send_ping(self) -> None:
        self._owed_pongs += 1
        self._session.send_to_client(_PING)

    def after_owed_acks(self, leave: Callable[[], None]) -> bool:
        """The session's server is drained: call ``leave`` once the server has answered the acks it owes (or after
        the open handshake's timeout); False if it owes none (leave now). A server may drop its answers to what it
        reads together with the close (python-socketio does), which would lose those emits."""
        if not self.ledger.owes_acks:
            return False
        self._leave = leave
        self.ledger.on_acks_answered = self._owed_acks_answered
        self._leaving = self._session.clock.callLater(self._handshake_timeout, self._owed_acks_answered)
        return True

    def _owed_acks_answered(self) -> None:
        leave = self._leave
        self._stop_leaving()
        if leave is not None:
            leave()

    def _stop_leaving(self) -> None:
        if self._leaving is not None and self._leaving.active():
            self._leaving.cancel()
        self._leave = self._leaving = self.ledger.on_acks_answered = None

    def moved_off(self) -> int:
        """The old server is gone: the acks it owed will not come; how many (counted lost by the caller)."""
        self._stop_leaving()
        return self.ledger.acks_lost()

    @staticmethod
    def replayable(message: Message) -> bool:
        """Whether a message sent to the lost server may be replayed to the next one (``replay-messages``): its
        Socket.IO traffic, not its CONNECTs (the rejoin sends those) nor Engine.IO pongs meant for the lost one."""
        payload = message.payload
        return message.binary or (payload[:1] == b"4" and payload[1:2] != b"0")

    def rejoin(self, leg: NewLeg) -> bool:
        """A new backend leg opened: rejoin on it (the session hears :meth:`RejoiningSession.rejoined`), or
        False if this move is the generic resume."""
        if not self._aware:
            return False
        self._phase = _Phase.REJOINING
        self._rejoin = EngineIORejoin(self, self.ledger, leg, self._session.clock, self._handshake_timeout)
        return True

    def rejoin_done(self) -> None:
        """The rejoin is done (:class:`~rubrisproxy.websocket._eiorejoin.RejoinOwner`): the session relays again."""
        rejoin = self._rejoin
        assert rejoin is not None
        self._stop_timers()
        self._phase = _Phase.RELAYING
        self._rejoin = None
        ledger = self.ledger
        ledger.held_acks_sent()
        if ledger.version >= 4:
            self._send_ping()  # the new server's first ping is an interval away: the client's wait starts now
        self.log.info("session {id}: Engine.IO session rejoined in {n} namespaces; the client keeps sid {sid}",
                      id=self._session.session_id, n=len(ledger.joined), sid=ledger.sid or "-")
        self._session.rejoined(rejoin.leg)

    def rejoin_failed(self, why: str) -> None:
        """The rejoin failed (:class:`~rubrisproxy.websocket._eiorejoin.RejoinOwner`): the move tries another server."""
        rejoin, self._rejoin = self._rejoin, None
        self._phase = _Phase.MOVING
        if rejoin is not None:
            rejoin.stop()
            self._session.rejoin_failed(rejoin.leg, why)

    def stop_moving(self) -> None:
        """No move in progress any more: no more pings of the proxy's, no rejoin."""
        self._stop_timers()
        self._phase = _Phase.RELAYING
        self._rejoin = None

    def _stop_timers(self) -> None:
        self._stop_beat()
        if self._rejoin is not None:
            self._rejoin.stop()
        self._stop_leaving()

    def _stop_beat(self) -> None:
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None

    # Its move to another process (an upgrade)

    def carried(self) -> dict[str, object]:
        """Its state for the session's record, JSON-encodable: its ledger's and its heartbeat's, which stops here
        (the new process goes on with it)."""
        state = self.ledger.carried()
        self._stop_beat()
        since_ping = None if self._last_ping is None else self._session.clock.seconds() - self._last_ping
        return {**state, "since_ping": since_ping, "owed_pongs": self._owed_pongs}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take the state :meth:`carried` wrote, before the session's move goes on here."""
        self.ledger.restore(state)
        since = state["since_ping"]
        self._last_ping = None if since is None else self._session.clock.seconds() - float(since)
        self._owed_pongs = int(state["owed_pongs"])
