"""A Socket.IO session's Engine.IO state, as the proxy learns it from the packets that pass: its bookkeeping.

:class:`EngineIOLedger` reads the text messages the session's hook
(:class:`~rubrisproxy.websocket._eioresume.EngineIOResume`) hands it: the first server's open packet (the client's
sid, the heartbeat), the namespaces the client joined (their CONNECT packets, verbatim, auth included) and the
server's answers, and the emits waiting for an ack. Whether every namespace the client is in was seen joined says
whether a move can rejoin them on a new server.

A session upgraded from long polling may have joined its namespaces over polling, out of its sight: what the
backend kept of that (:class:`~rubrisproxy.backend.PolledSession`) is taken over at its first Socket.IO packet
(by then the client has stopped polling) or when it moves, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..engineio import (
    ACK,
    BINARY_ACK,
    CONNECT,
    CONNECT_ERROR,
    DEFAULT_NAMESPACE,
    DISCONNECT,
    MAX_CONNECT,
    MAX_NAMESPACES,
    has_sid,
    open_packet,
    sid_of,
    socketio_packet,
)
from ._eiocarry import EngineIOCarrying
from ._hooks import Message

if TYPE_CHECKING:
    from ..backend import EngineIOStickiness, SidPrefix

#: The heartbeat assumed until an open packet says (Engine.IO v4's default pingInterval).
_DEFAULT_INTERVAL = 25.0
#: Emits waiting for acks the proxy counts per session (past it, further emits are not counted). Past
#: ``MAX_NAMESPACES`` namespaces joined or a CONNECT over ``MAX_CONNECT`` bytes, a session gets the generic resume.
MAX_ACKS = 10_000


class HoldingSession(Protocol):
    """What :class:`EngineIOLedger` needs of its session."""

    @property
    def holding(self) -> bool:
        """Whether what the client sends now is held (the session is moving)."""


class EngineIOLedger(EngineIOCarrying):
    """A session's Engine.IO state, learned from what passes (see the module docstring); what of it crosses to
    another process with its session: its base :class:`~rubrisproxy.websocket._eiocarry.EngineIOCarrying`.

    Emits sent to a server that wait for its ack are owed by that server; those the client sent while the session
    held its messages are owed by the next one, once they are sent to it (:meth:`held_acks_sent`).
    """

    __slots__ = ("_session", "version", "_polled_sid", "prefixing", "on_acks_answered")

    def __init__(self, session: HoldingSession, version: int, upgraded: bool) -> None:
        self._session = session
        self.version = version
        self.sid: str | None = None  # the client's Engine.IO sid (what the first server's open packet said)
        self.interval, self.timeout = _DEFAULT_INTERVAL, 20.0
        #: The namespaces the client joined, each with its CONNECT packet as sent (auth included), in order.
        self.joined: dict[bytes, bytes] = {} if version >= 4 else {DEFAULT_NAMESPACE: b""}
        self.server_sids: dict[bytes, bytes] = {}  # each namespace's latest CONNECT answer, as the server sent it
        self._acks: set[tuple[bytes, int]] = set()  # emits sent to the server that wait for its ack
        self._held_acks: set[tuple[bytes, int]] = set()  # ... held while moving: the next server owes them
        # A session upgraded from polling may have joined namespaces over polling, out of the proxy's sight: it
        # is trusted only if it joins on the WebSocket before any other Socket.IO traffic.
        self._complete = not upgraded
        self._seen_traffic = False
        self._polling: EngineIOStickiness | None = None  # where this session's polling record waits, if it has one
        self._polled_sid = b""
        #: A WebSocket-first session of a backend with ``engineio-sid-prefix``: its sid prefix and server.
        self.prefixing: tuple[SidPrefix, str] | None = None
        #: Called once the server has answered the last ack it owed (set while a drained server's leg waits for it).
        self.on_acks_answered: Callable[[], None] | None = None

    @classmethod
    def for_upgrade(cls, session: HoldingSession, version: int, target: bytes, polling: EngineIOStickiness | None,
                    server: str | None) -> EngineIOLedger:
        """The ledger of a session whose upgrade went to ``target`` (on ``server``); ``polling`` keeps what sessions
        did before they upgraded."""
        ledger = cls(session, version, has_sid(target))
        sid = sid_of(target)
        if sid is not None and polling is not None and polling.polled.get(sid) is not None:
            ledger._polling, ledger._polled_sid = polling, sid
        if sid is None and polling is not None and polling.prefix is not None and server is not None:
            ledger.prefixing = (polling.prefix, server)
        return ledger

    def take_polled(self) -> None:
        """Take over the session's polling record now if it is still to be (it moves, or crosses to another
        process: the client polls no more)."""
        if self._polling is not None:
            self._take_polled()

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

    # What passes

    def from_client(self, payload: bytes) -> None:
        """A Socket.IO packet from the client (an Engine.IO message)."""
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

    def opened(self, message: Message) -> Message:
        """The first server's open packet, as the client gets it: its sid and heartbeat learned (a WebSocket-first
        session's sid prefixed first, see :attr:`prefixing`)."""
        if self.prefixing is not None and self.sid is None:
            message = self._prefixed(self.prefixing, message)
        self.learn_open(message.payload, first=True)
        return message

    @staticmethod
    def _prefixed(prefixing: tuple[SidPrefix, str], message: Message) -> Message:
        """A WebSocket-first session's open packet, its sid prefixed with its server's token (as polling's are)."""
        prefix, server = prefixing
        rewritten = prefix.prefix_open(message.payload, server)
        return Message(rewritten, False) if rewritten is not None else message

    def learn_open(self, payload: bytes, first: bool) -> bool:
        """An open packet's heartbeat (and, from the ``first`` server, the client's sid); False if unreadable."""
        packet = open_packet(payload)
        if packet is None:
            return False
        if first and self.sid is None:
            self.sid = packet.sid
        self.interval, self.timeout = packet.ping_interval, packet.ping_timeout
        return True

    def from_server(self, payload: bytes) -> None:
        """A Socket.IO packet from the server (an Engine.IO message)."""
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
                if self.on_acks_answered is not None and not self._acks:
                    self.on_acks_answered()
        else:
            self._saw(packet.namespace)

    # The acks owed

    @property
    def owes_acks(self) -> bool:
        """Whether the server owes acks to emits sent to it."""
        return bool(self._acks)

    def acks_lost(self) -> int:
        """The server is gone: the acks it owed will not come; how many."""
        lost = len(self._acks)
        self._acks.clear()
        return lost

    def held_acks_sent(self) -> None:
        """The emits held while moving are about to go to the new server: it owes their acks."""
        self._acks |= self._held_acks
        self._held_acks.clear()
