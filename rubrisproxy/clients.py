"""Client sessions: a client known across connections by what its requests carry.

A session is identified, in the configured order, by an Engine.IO ``sid`` query
parameter, a cookie, a header, or (on a local frontend) the connection itself. It
tracks its requests, the connections they came on, its last activity and its server;
after ``expire`` seconds without a request it ends, and client-destroy handlers hear why.

Shared with other proxies (a cluster), a session identified by sid, cookie or header has one owner, the proxy
that saw it first (:class:`SessionSharing`): only the owner's handlers hear of its end. The others keep a copy of
their own (counted, expired) that tells the owner it is in use, at most once per half ``expire``, and passes on
an end it sees (the server's 400, its WebSocket's close); the owner expires it once no proxy has seen it for
``expire`` (half as long again when others used it, as their word comes up to that late).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .backend import cookie_value, session_id
from .config import ClientsConfig
from .http import RequestHead
from .lifecycle import ConnectionEnd, SessionEnd
from .sharing import Change, Kind, StateTransport

IDENTIFIERS = ("sid", "cookie(", "header(", "connection")
#: Connection ends that mean the client left (the rest: the proxy or the server ended it).
_CLIENT_ENDS = frozenset((ConnectionEnd.CLIENT_CLOSE, ConnectionEnd.SOCKET_READ_CLOSED, ConnectionEnd.SOCKET_WRITE_ERROR))
_ENDS = frozenset(end.value for end in SessionEnd)


@dataclass(eq=False)
class ClientSession:
    """One client, as the proxy knows it across connections."""

    id: str  # "sid:…", "cookie:…", "header:…" or "connection:…"
    frontend: str
    created_at: float
    last_activity: float
    address: str = ""  # the client address of its latest request
    requests: int = 0
    connections: int = 0  # distinct connections its requests came on
    server: str | None = None  # the server that last answered it
    outstanding: int = 0  # requests in progress (a long poll holds its connection while it waits)
    registry: ClientRegistry = field(kw_only=True, repr=False)  # where it is tracked
    _last_connection: int = field(default=0, repr=False)  # id() of the connection of its latest request
    owner: str = ""  # shared: the proxy whose handlers hear of its end ("" when not shared)
    published: float = field(default=0.0, repr=False)  # shared: when this proxy last said it was in use
    used_elsewhere: bool = field(default=False, repr=False)  # shared, owned here: another proxy said it was in use

    @property
    def long_polling(self) -> bool:
        return self.outstanding > 0

    def came_on(self, connection: object) -> None:
        """A request of this client came on ``connection``: counted if it is not the one its last request came on."""
        if self._last_connection != id(connection):
            self._last_connection = id(connection)
            self.connections += 1


@dataclass(frozen=True, slots=True)
class SessionSharing:
    """How a registry shares its sessions: through which transport, as which proxy (node or worker)."""

    transport: StateTransport
    node: str


#: A shared session's change: its owner (a claim, or word that it is in use), ``END`` + a reason (an end seen by a
#: proxy that does not own it, for the owner to report), or ``GONE`` (it ended: the other proxies drop theirs).
END, GONE = "end:", ""


class ClientRegistry:
    """A frontend's client sessions, expired after ``expire`` seconds of inactivity."""

    log = Logger()

    def __init__(self, frontend: str, settings: ClientsConfig, clock: IReactorTime, handlers: tuple[Any, ...] = (),
                 limit: int = 1_000_000) -> None:
        self.frontend = frontend
        self.settings = settings  # identify and expire; a reload swaps it
        self.clock = clock
        self.handlers = handlers  # IClientHandler providers
        self.limit = limit
        self.sessions: OrderedDict[str, ClientSession] = OrderedDict()  # least recently active first
        self.destroyed: dict[str, int] = {}  # by reason
        self._sweep: IDelayedCall | None = None
        self.sharing: SessionSharing | None = None  # set by the builder, in a cluster
        self._claims: OrderedDict[str, tuple[str, float]] = OrderedDict()  # others' sessions: owner, when last heard

    def key_of(self, head: RequestHead, connection: object, local: bool) -> str | None:
        """The session id of a request, by the first identifier it carries."""
        for spec in self.settings.identify:
            if spec == "sid":
                found = session_id(head) if b"sid=" in head.target else None
                if found is not None:
                    return "sid:" + found.decode("latin-1")
            elif spec == "connection":
                if local:
                    return f"connection:{id(connection):x}"
            else:
                kind, _, rest = spec.partition("(")
                name = rest[:-1]
                if kind == "cookie":
                    value = cookie_value(head.headers, name)
                else:
                    wanted = name.lower().encode()
                    raw = next((v for n, v in head.headers if n.lower() == wanted), None)
                    value = raw.decode("latin-1") if raw is not None else None
                if value:
                    return f"{kind}:{value}"
        return None

    def request_started(self, head: RequestHead, connection: object, local: bool, address: str) -> ClientSession | None:
        """A request began: the session it belongs to (created if new), now active."""
        key = self.key_of(head, connection, local)
        if key is None:
            return None
        now = self.clock.seconds()
        session = self.sessions.get(key)
        if session is None:
            if len(self.sessions) >= self.limit:
                self._destroy(next(iter(self.sessions.values())), SessionEnd.EXPIRED)  # the least recently active
            session = self.sessions[key] = ClientSession(key, self.frontend, now, now, registry=self)
            self._schedule()
            if self.sharing is not None and not key.startswith("connection:"):
                claim = self._claims.pop(key, None)
                self._publish(session, claim[0] if claim is not None and claim[1] > now - self._heard_for else "")
        else:
            self.sessions.move_to_end(key)
            if session.owner and now - session.published > self.settings.expire / 2 and not self._owns(session):
                self._publish(session, session.owner)
        session.last_activity = now
        session.address = address
        session.requests += 1
        session.outstanding += 1
        session.came_on(connection)
        return session

    def request_ended(self, session: ClientSession, server: str | None, status: int) -> None:
        """A request of ``session`` ended; ``status`` is the origin's answer (0: none from the origin)."""
        session.outstanding -= 1
        session.last_activity = self.clock.seconds()
        if not self._tracks(session):
            return
        self.sessions.move_to_end(session.id)
        if server is not None:
            session.server = server
        if status == 400 and session.id.startswith("sid:") and not session.outstanding:
            self._destroy(session, SessionEnd.CLOSED_BY_SERVER)  # Engine.IO's answer to a sid it does not know

    def websocket_ended(self, session: ClientSession, by_client: bool) -> None:
        """The WebSocket a session's request became has ended: an Engine.IO or connection session ends with it."""
        if self._tracks(session) and not session.id.startswith(("cookie:", "header:")) and not session.outstanding:
            self._destroy(session, SessionEnd.CLOSED_BY_CLIENT if by_client else SessionEnd.CLOSED_BY_SERVER)

    def connection_ended(self, connection: object, end: ConnectionEnd) -> None:
        """A local connection ended: the session it was ends with it."""
        session = self.sessions.get(f"connection:{id(connection):x}")
        if session is not None:
            self._destroy(session, SessionEnd.CLOSED_BY_CLIENT if end in _CLIENT_ENDS else SessionEnd.CLOSED_BY_SERVER)

    def _tracks(self, session: ClientSession) -> bool:
        return self.sessions.get(session.id) is session  # not one that ended, whose id came back

    def _destroy(self, session: ClientSession, reason: SessionEnd) -> None:
        del self.sessions[session.id]
        self.destroyed[reason.value] = self.destroyed.get(reason.value, 0) + 1
        if session.owner:
            sharing = self.sharing
            assert sharing is not None
            if session.owner != sharing.node:  # another proxy's: its owner reports the end
                if reason is not SessionEnd.EXPIRED:
                    self._send(session.id, END + reason.value)
                return
            self._send(session.id, GONE)
        for handler in self.handlers:
            try:
                handler.client_destroyed(session, reason)
            except Exception:
                self.log.failure("client-destroy handler {handler} failed", handler=type(handler).__name__)

    @property
    def _heard_for(self) -> float:
        """How long a session another proxy said it used stays its (it says so again within half ``expire``)."""
        return self.settings.expire * 1.5

    def _owns(self, session: ClientSession) -> bool:
        return self.sharing is not None and session.owner == self.sharing.node

    def _publish(self, session: ClientSession, owner: str) -> None:
        """Claim ``session`` (``owner`` empty: its claim made when it was created), or tell ``owner`` it is in use."""
        assert self.sharing is not None
        session.owner = owner or self.sharing.node
        session.published = self.clock.seconds()
        self._send(session.id, session.owner, session.created_at if not owner else None)

    def _send(self, key: str, value: str, at: float | None = None) -> None:
        assert self.sharing is not None
        self.sharing.transport.publish(Change(Kind.CLIENT, self.frontend, key.encode("latin-1"), value,
                                              expire=self._heard_for, at=self.clock.seconds() if at is None else at))

    def apply(self, change: Change) -> None:
        """A change another proxy made to a shared session of this frontend."""
        key = change.key.decode("latin-1")
        session = self.sessions.get(key)
        sharing = self.sharing
        if sharing is None or key.startswith("connection:"):
            return
        if change.value == GONE:
            self._claims.pop(key, None)
            if session is not None and session.owner != sharing.node:
                del self.sessions[key]  # its owner reported the end
        elif change.value.startswith(END):
            if session is not None and session.owner == sharing.node and change.value[4:] in _ENDS:
                self._destroy(session, SessionEnd(change.value[4:]))
        elif session is None:
            self._claims[key] = (change.value, change.at)
            self._claims.move_to_end(key)
            if len(self._claims) > self.limit:
                self._claims.popitem(last=False)
        elif session.owner == sharing.node:
            self._heard(session, change, sharing.node)

    def _heard(self, session: ClientSession, change: Change, node: str) -> None:
        """A shared session owned here: another proxy uses it, or claimed it too (the earlier claim wins, and an
        owner that keeps it says so again, so the later claimant gives it up)."""
        if change.value == node:
            session.last_activity = max(session.last_activity, change.at)
            session.used_elsewhere = True
            self.sessions.move_to_end(session.id)
        elif (change.at, change.value) < (session.created_at, node):
            session.owner = change.value
        else:
            self._send(session.id, node, session.created_at)

    def _schedule(self) -> None:
        if self._sweep is None or not self._sweep.active():
            self._sweep = self.clock.callLater(max(self.settings.expire / 4, 0.25), self._expire)

    def _expire(self) -> None:
        self._sweep = None
        deadline = self.clock.seconds() - self.settings.expire
        expired = []
        for session in self.sessions.values():
            if session.last_activity > deadline:
                break  # ordered by activity: the rest are newer
            if session.used_elsewhere and session.last_activity > deadline - self.settings.expire / 2:
                continue  # others' word of it comes up to half expire late
            if not session.outstanding:  # a request in progress (a long poll) keeps it alive
                expired.append(session)
        for session in expired:
            self._destroy(session, SessionEnd.EXPIRED)
        if self.sessions:
            self._schedule()

    def stop(self) -> None:
        """Stop expiring (the frontend is going away)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
