"""Client sessions: a client known across connections by what its requests carry.

A session is identified, in the configured order, by an Engine.IO ``sid`` query
parameter, a cookie, a header, or (on a local frontend) the connection itself. It
tracks its requests, the connections they came on, its last activity and its server;
after ``expire`` seconds without a request it ends, and client-destroy handlers hear why.
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

IDENTIFIERS = ("sid", "cookie(", "header(", "connection")
#: Connection ends that mean the client left (the rest: the proxy or the server ended it).
_CLIENT_ENDS = frozenset((ConnectionEnd.CLIENT_CLOSE, ConnectionEnd.SOCKET_READ_CLOSED, ConnectionEnd.SOCKET_WRITE_ERROR))


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

    @property
    def long_polling(self) -> bool:
        return self.outstanding > 0

    def came_on(self, connection: object) -> None:
        """A request of this client came on ``connection``: counted if it is not the one its last request came on."""
        if self._last_connection != id(connection):
            self._last_connection = id(connection)
            self.connections += 1


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
        else:
            self.sessions.move_to_end(key)
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
        for handler in self.handlers:
            try:
                handler.client_destroyed(session, reason)
            except Exception:
                self.log.failure("client-destroy handler {handler} failed", handler=type(handler).__name__)

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
