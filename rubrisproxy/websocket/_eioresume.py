"""Engine.IO-aware resume: a Socket.IO session moved to another server without its client noticing.

A session whose upgrade is Engine.IO (``_engineio.session_version``) gets an :class:`EngineIOResume`, first in
its hooks, so it reads both directions' text messages and nothing is added to other sessions' path. It learns
the heartbeat, the namespaces the client joined (their CONNECT packets, verbatim, auth included) and the emits
waiting for an ack. When the session moves, the new server is dialled without the old ``sid`` (a new Engine.IO
session), and once its backend leg opens this object rejoins: it consumes the server's open packet, replays the
CONNECTs, consumes the answers, then lets the session send what it held. The client keeps its connection, its
Engine.IO sid and its socket ids; only the server knows the session under new ids.

A session upgraded from long polling may have joined its namespaces over polling, out of its sight: what the
backend kept of that (:class:`~rubrisproxy.backend.PolledSession`) is taken over at its first Socket.IO packet
(by then the client has stopped polling) or when it moves, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ..engineio import (
    ACK,
    BINARY_ACK,
    CONNECT,
    CONNECT_ERROR,
    DEFAULT_NAMESPACE,
    DISCONNECT,
    MAX_CONNECT,
    MAX_NAMESPACES,
    MESSAGE,
    OPEN,
    PING,
    PONG,
    has_sid,
    open_packet,
    session_version,
    sid_of,
    socketio_packet,
)
from ._eiocarry import EngineIOCarrying
from ._hooks import Message

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..backend import EngineIOStickiness, SidPrefix
    from ..config import WebSocketConfig

#: The heartbeat assumed until an open packet says (Engine.IO v4's default pingInterval).
_DEFAULT_INTERVAL = 25.0
#: Emits waiting for acks the proxy counts per session (past it, further emits are not counted). Past
#: ``MAX_NAMESPACES`` namespaces joined or a CONNECT over ``MAX_CONNECT`` bytes, a session gets the generic resume.
MAX_ACKS = 10_000
_PING = Message(b"2", False)


class NewLeg(Protocol):
    """The new backend leg a rejoin speaks on."""

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None: ...


class RejoiningSession(Protocol):
    """What :class:`EngineIOResume` needs of its session."""

    @property
    def session_id(self) -> str: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def holding(self) -> bool:
        """Whether what the client sends now is held (the session is moving)."""

    def send_to_client(self, message: Message) -> None: ...

    def rejoined(self, leg: NewLeg) -> None:
        """The new server has the client's Engine.IO session and namespaces: send what is held."""

    def rejoin_failed(self, leg: NewLeg, why: str) -> None:
        """The new server did not take the Engine.IO session: try another."""


class _Phase(Enum):
    RELAYING = "relaying"  # learning from what passes
    MOVING = "moving"  # no server: the proxy keeps the client's heartbeat going
    REJOINING = "rejoining"  # a new backend leg is open: its open packet and CONNECT answers are consumed


class EngineIOResume(EngineIOCarrying):
    """A session's Engine.IO state and its rejoin on a new server (see the module docstring).

    Heartbeats while moving: in v4 the server pings and the client answers, so the proxy pings the client
    itself at the learned interval and swallows as many of its pongs; in v3 the client pings, so the proxy
    answers its pings. An emit that waited for its ack when the old server was lost never gets it: those
    are counted lost (:meth:`moved_off`). What of it crosses to another process with its session: its base
    :class:`~rubrisproxy.websocket._eiocarry.EngineIOCarrying`.
    """

    log = Logger()

    __slots__ = ("_session", "version", "_handshake_timeout", "_phase", "_aware", "_deadline", "_leg", "_expected",
                 "_polled_sid", "prefixing", "_leave", "_leaving")

    def __init__(self, session: RejoiningSession, version: int, upgraded: bool, handshake_timeout: float) -> None:
        self._session = session
        self.version = version
        self._handshake_timeout = handshake_timeout  # for the new server's open packet and CONNECT answers
        self.sid: str | None = None  # the client's Engine.IO sid (what the first server's open packet said)
        self.interval, self.timeout = _DEFAULT_INTERVAL, 20.0
        self._last_ping: float | None = None
        #: The namespaces the client joined, each with its CONNECT packet as sent (auth included), in order.
        self.joined: dict[bytes, bytes] = {} if version >= 4 else {DEFAULT_NAMESPACE: b""}
        self.server_sids: dict[bytes, bytes] = {}  # each namespace's latest CONNECT answer, as the server sent it
        self._acks: set[tuple[bytes, int]] = set()  # emits sent to the server that wait for its ack
        self._held_acks: set[tuple[bytes, int]] = set()  # ... held while moving: the next server owes them
        # A session upgraded from polling may have joined namespaces over polling, out of the proxy's sight: it
        # is trusted only if it joins on the WebSocket before any other Socket.IO traffic.
        self._complete = not upgraded
        self._seen_traffic = False
        self._phase = _Phase.RELAYING
        self._aware = False  # whether this move rejoins (else it is the generic resume)
        self._beat: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._leave: Callable[[], None] | None = None  # a drained server's leg closes once its owed acks came
        self._leaving: IDelayedCall | None = None  # ... or at this deadline
        self._owed_pongs = 0
        self._leg: NewLeg | None = None
        self._expected: set[bytes] = set()
        self._polling: EngineIOStickiness | None = None  # where this session's polling record waits, if it has one
        self._polled_sid = b""
        #: A WebSocket-first session of a backend with ``engineio-sid-prefix``: its sid prefix and server.
        self.prefixing: tuple[SidPrefix, str] | None = None

    @classmethod
    def for_session(cls, session: RejoiningSession, config: WebSocketConfig, target: bytes,
                    polling: EngineIOStickiness | None, server: str | None = None) -> EngineIOResume | None:
        """The Engine.IO state of a session whose upgrade went to ``target``, if its backend's ``engineio`` and
        ``resume`` settings make it one to read; ``polling`` keeps what sessions did before they upgraded."""
        version = session_version(config.engineio, target) if config.resume else None
        if version is None:
            return None
        resume = cls(session, version, has_sid(target), config.open_handshake_timeout)
        sid = sid_of(target)
        if sid is not None and polling is not None and polling.polled.get(sid) is not None:
            resume._polling, resume._polled_sid = polling, sid
        if sid is None and polling is not None and polling.prefix is not None and server is not None:
            resume.prefixing = (polling.prefix, server)
        return resume

    def _take_polled(self) -> None:
        """Take over what the client and server did over polling (the client polls no more)."""
        polling, self._polling = self._polling, None
        assert polling is not None
        record = polling.take_polled(self._polled_sid)
        if record is None or record.version != self.version:
            return
        if not record.complete:
            self._seen_traffic = True  # joined out of sight for sure: no later CONNECT makes it complete
            return
        self.sid = record.open.sid
        self.interval, self.timeout = record.open.ping_interval, record.open.ping_timeout
        self.joined = {**record.connects, **self.joined}  # v3's default namespace stays joined by the server
        self.server_sids.update(record.answers)
        if not self._seen_traffic:
            self._complete = True

    @property
    def can_rejoin(self) -> bool:
        """Whether every namespace the client is in was seen joined, so a new server can be joined to them."""
        return self._complete

    # The session's hook: both directions' messages

    def handshake(self, request: object) -> None:
        pass

    def client_message(self, session: object, message: Message) -> Message | None:
        payload = message.payload
        if message.binary or not payload:
            return message
        kind = payload[0]
        if kind == MESSAGE:
            self._from_client(payload)
        elif kind == PONG and self._owed_pongs:
            self._owed_pongs -= 1  # the answer to a ping of the proxy's
            return None
        elif kind == PING and self.version < 4 and self._phase is not _Phase.RELAYING:
            self._session.send_to_client(Message(b"3" + payload[1:], False))  # v3: the proxy answers while moving
            return None
        return message

    def _from_client(self, payload: bytes) -> None:
        if self._polling is not None:
            self._take_polled()
        packet = socketio_packet(payload)
        if packet is None:
            return
        if packet.kind == CONNECT:
            if len(payload) > MAX_CONNECT or len(self.joined) >= MAX_NAMESPACES:
                self._seen_traffic, self._complete = True, False  # not kept: a rejoin could not rebuild it
                return
            self.joined[packet.namespace] = payload
            if not self._seen_traffic:
                self._complete = True
            return
        if packet.kind == DISCONNECT:
            self.joined.pop(packet.namespace, None)
            return
        self._saw(packet.namespace)
        if packet.ack is not None and packet.kind != ACK and packet.kind != BINARY_ACK:
            acks = self._held_acks if self._session.holding else self._acks
            if len(acks) < MAX_ACKS:
                acks.add((packet.namespace, packet.ack))

    def _saw(self, namespace: bytes) -> None:
        self._seen_traffic = True
        if namespace not in self.joined:
            self._complete = False  # joined out of sight (over polling): a rejoin could not rebuild it

    def backend_message(self, session: object, message: Message) -> Message | None:
        payload = message.payload
        if message.binary or not payload:
            return message
        if self._phase is _Phase.REJOINING:
            return message if self._rejoining(payload) else None
        kind = payload[0]
        if kind == PING:
            self._last_ping = self._session.clock.seconds()
        elif kind == OPEN:
            if self.prefixing is not None and self.sid is None:
                message = self._prefixed(self.prefixing, message)
            self._learn_open(message.payload, first=True)
        elif kind == MESSAGE:
            self._from_server(payload)
        return message

    @staticmethod
    def _prefixed(prefixing: tuple[SidPrefix, str], message: Message) -> Message:
        """A WebSocket-first session's open packet, its sid prefixed with its server's token (as polling's are)."""
        prefix, server = prefixing
        rewritten = prefix.prefix_open(message.payload, server)
        return Message(rewritten, False) if rewritten is not None else message

    def _learn_open(self, payload: bytes, first: bool) -> bool:
        packet = open_packet(payload)
        if packet is None:
            return False
        if first and self.sid is None:
            self.sid = packet.sid
        self.interval, self.timeout = packet.ping_interval, packet.ping_timeout
        return True

    def _from_server(self, payload: bytes) -> None:
        if self._polling is not None:
            self._take_polled()
        packet = socketio_packet(payload)
        if packet is None:
            return
        kind = packet.kind
        if kind == CONNECT:
            self.server_sids[packet.namespace] = payload
        elif kind == DISCONNECT or kind == CONNECT_ERROR:
            self.joined.pop(packet.namespace, None)
        elif kind == ACK or kind == BINARY_ACK:
            if packet.ack is not None:
                self._acks.discard((packet.namespace, packet.ack))
                if self._leave is not None and not self._acks:
                    self._owed_acks_answered()
        else:
            self._saw(packet.namespace)

    def session_closed(self, session: object) -> None:
        self.stop_moving()

    # What the session's move calls (through its Resumption)

    def moving(self) -> bool:
        """The session starts to move: keep the client's heartbeat going; whether this move rejoins."""
        if self._polling is not None:
            self._take_polled()
        self._phase = _Phase.MOVING
        self._aware = self._complete
        if self.version >= 4 and self._beat is None:
            now = self._session.clock.seconds()
            due = (self._last_ping if self._last_ping is not None else now) + self.interval
            self._beat = self._session.clock.callLater(max(0.0, due - now), self._ping_client)
        return self._aware

    def _ping_client(self) -> None:
        self._beat = self._session.clock.callLater(self.interval, self._ping_client)
        self._send_ping()

    def _send_ping(self) -> None:
        self._owed_pongs += 1
        self._session.send_to_client(_PING)

    def after_owed_acks(self, leave: Callable[[], None]) -> bool:
        """The session's server is drained: call ``leave`` once the server has answered the acks it owes (or after
        the open handshake's timeout); False if it owes none (leave now). A server may drop its answers to what it
        reads together with the close (python-socketio does), which would lose those emits."""
        if not self._acks:
            return False
        self._leave = leave
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
        self._leave = self._leaving = None

    def moved_off(self) -> int:
        """The old server is gone: the acks it owed will not come; how many (counted lost by the caller)."""
        self._stop_leaving()
        lost = len(self._acks)
        self._acks.clear()
        return lost

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
        self._leg = leg
        self._expected = set()
        self._deadline = self._session.clock.callLater(self._handshake_timeout, self._failed,
                                                       "no Engine.IO open packet and CONNECT answers in time")
        return True

    def _rejoining(self, payload: bytes) -> bool:
        """A message from the new server while rejoining: consumed (False) or passed on to the client (True)."""
        kind = payload[0]
        if kind == OPEN and self._leg is not None and not self._expected:
            if self._learn_open(payload, first=False):
                self._send_connects(self._leg)
            else:
                self._failed("its open packet could not be read")
            return False
        packet = socketio_packet(payload) if kind == MESSAGE else None
        if packet is None or packet.namespace not in self._expected:
            return True  # pings, and what its connection handlers send: the client is in those namespaces
        if packet.kind == CONNECT:
            self.server_sids[packet.namespace] = payload
            self._expected.discard(packet.namespace)
            if not self._expected:
                self._done()
        elif packet.kind == CONNECT_ERROR:
            self._failed(f"it refused namespace {packet.namespace.decode('utf-8', 'replace')}: "
                         f"{payload[2:200].decode('utf-8', 'replace')}")
        else:
            return True
        return False

    def _send_connects(self, leg: NewLeg) -> None:
        self._expected = set(self.joined)
        for connect in self.joined.values():
            if connect:  # v3's default namespace is joined by the server itself
                leg.sendMessage(connect, False)
        if not self._expected:
            self._done()

    def _done(self) -> None:
        leg = self._leg
        assert leg is not None
        self._stop_timers()
        self._phase = _Phase.RELAYING
        self._leg = None
        self._acks |= self._held_acks  # about to be sent to the new server
        self._held_acks.clear()
        if self.version >= 4:
            self._send_ping()  # the new server's first ping is an interval away: the client's wait starts now
        self.log.info("session {id}: Engine.IO session rejoined in {n} namespaces; the client keeps sid {sid}",
                      id=self._session.session_id, n=len(self.joined), sid=self.sid or "-")
        self._session.rejoined(leg)

    def _failed(self, why: str) -> None:
        leg = self._leg
        self._stop_deadline()
        self._phase = _Phase.MOVING
        self._leg = None
        self._expected = set()
        if leg is not None:
            self._session.rejoin_failed(leg, why)

    def stop_moving(self) -> None:
        """No move in progress any more: no more pings of the proxy's, no rejoin."""
        self._stop_timers()
        self._phase = _Phase.RELAYING
        self._leg = None

    def _stop_timers(self) -> None:
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None
        self._stop_deadline()
        self._stop_leaving()

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
