"""The new process's side of a session-mode WebSocket carried over in an upgrade: :class:`SessionAdopter`.

The client's socket becomes a :class:`~rubrisproxy.frontend.ClientConnection` of the frontend it was accepted
on, already upgraded (its relay the session); the session is made again from its record
(:meth:`~rubrisproxy.websocket.WebSocketSession.adopt`) and reports through an :class:`AdoptedHandoff`, which
plays the upgraded request: its server slot, and its one access-log line when it ends, covering its whole life.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory, ServerFactory
from twisted.logger import Logger

from .._compat import let_go
from ..accesslog import AccessRecord
from ..http import RequestHead, serialize_headers
from ..transfer import Carried, Kind, Refused
from ..websocket import SESSION_RECORD_VERSIONS, SessionRecord, Upgrade, WebSocketSession, read_record
from ._connection import ClientConnection
from ._factory import ProxiedConnectionFactory
from ._moving import adopt_origin, adopt_socket, adopting_factory

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..backend import Backend, Server
    from ..config import Timeouts
    from ..http import HTTPError
    from ..lifecycle import Termination
    from ..origin import ConnectionPool
    from ..websocket import Relay, ResumeBudget
    from ._connection import ClientConnection
    from ._context import Frontend


log = Logger()


class SessionAdopter:
    """The :class:`~rubrisproxy.transfer.Adopter` of session-mode WebSockets (``transfer.Kind.SESSION``).

    ``factories`` gives a frontend's connection factory by its name (None: no such frontend here);
    ``backends`` are the proxy's, by name. It refuses a record version it does not read, a frontend or a
    backend it lacks, or a session whose extensions it would not negotiate as the old process did.
    """

    kind = Kind.SESSION
    versions = SESSION_RECORD_VERSIONS

    def __init__(self, reactor: Any, factories: Callable[[str], ServerFactory | None],
                 backends: Mapping[str, Backend]) -> None:
        self._reactor = reactor
        self._factories = factories
        self._backends = backends

    def adopt(self, carried: Carried) -> None:
        """Rebuild the session ``carried`` describes on its sockets (which stay the caller's to close: the reactor
        works on its own duplicates), or raise :class:`~rubrisproxy.transfer.Refused`."""
        record, factory, backend, server = self._where(carried)
        connection = adopt_socket(self._reactor, carried.sockets[0], factory)
        assert isinstance(connection, ClientConnection)
        handoff = AdoptedHandoff(connection, record, backend)
        session = WebSocketSession(handoff, None, backend, record.handshake.encode("latin-1"))
        connection.adopting()
        moved_from = next((server for server in backend.servers if server.name == record.moved_from), None)
        origin = None
        try:
            if server is not None:
                origin = adopt_origin(self._reactor, carried.sockets[1], server, connection.frontend.pool)
                handoff.switch_server(backend.take(server))
            session.adopt(record, moved_from, origin)
        except Exception as error:
            # The old process keeps it: nothing may reach either peer from here.
            handoff.release_server()
            let_go(connection.transport)
            connection.moved_away()
            if origin is not None:
                let_go(origin.transport)
            if isinstance(error, Refused):
                raise
            log.failure("session {id} could not be made again here", id=record.session_id)
            raise Refused(f"it could not be made again here: {error!r}") from error
        handoff.websockets.add(session)

    def _where(self, carried: Carried) -> tuple[SessionRecord, Factory, Backend, Server | None]:
        """Its record, and what of this process it goes to (its frontend's factory, its backend, and its server
        when its backend connection crossed too); :class:`Refused` when it cannot."""
        record = read_record(carried.version, carried.record)
        factory = adopting_factory(self._factories, carried.frontend)
        if isinstance(factory, ProxiedConnectionFactory):
            raise Refused(f"frontend {carried.frontend!r} takes its clients from a proxy: what it said does not cross")
        backend = self._backends.get(record.backend)
        if backend is None or backend.websocket.mode != "session":
            raise Refused(f"no session-mode backend {record.backend!r} in this process")
        crossed = record.backend_socket
        if len(carried.sockets) != (2 if crossed is not None else 1):
            raise Refused("a session carries the client's socket, and the backend's when its connection crosses")
        if crossed is None:
            return record, factory, backend, None
        server = next((server for server in backend.servers if server.name == crossed["server"]), None)
        if server is None:
            raise Refused(f"no server {crossed['server']!r} in backend {backend.name!r} here")
        return record, factory, backend, server



class AdoptedHandoff:
    """A carried session's upgraded request, as :class:`~rubrisproxy.websocket.UpgradeHandoff` describes it:
    what the old process's exchange was to it (the request, the server slot, the access-log line at the end)."""

    def __init__(self, connection: ClientConnection, record: SessionRecord, backend: Backend) -> None:
        frontend: Frontend = connection.frontend
        self._connection = connection
        self._frontend = frontend
        self._backend = backend
        self._log = record.log
        self._server: Server | None = None
        self._holds_slot = False
        request = record.request
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request["headers"]]
        head = RequestHead(request["method"].encode("latin-1"), request["target"].encode("latin-1"),
                           request["version"].encode("latin-1"), headers)
        head.size = request["size"]
        head.upgrade = True
        self.head = head
        self.clock: IReactorTime = frontend.clock
        self.client_address = connection.client_address
        key = next((value for name, value in headers if name.lower() == b"sec-websocket-key"), b"")
        self.upgrade: Upgrade | None = Upgrade(key, tuple(record.protocols), record.origin,
                                               tuple(value.encode("latin-1") for value in record.offered_extensions))
        self.websocket_key: bytes | None = record.key.encode("latin-1")
        self.session_id = record.session_id

    @property
    def client(self) -> ClientConnection:
        return self._connection

    @property
    def server(self) -> Server | None:
        return self._server

    @property
    def backend(self) -> Backend | None:
        return self._backend

    @property
    def timeouts(self) -> Timeouts:
        return self._frontend.timeouts

    @property
    def pool(self) -> ConnectionPool:
        return self._frontend.pool

    @property
    def resume_budget(self) -> ResumeBudget:
        return self._frontend.resume_budget

    @property
    def idle_clock(self) -> IReactorTime:
        return self._frontend.websocket_timer

    @property
    def websockets(self) -> set[Relay]:
        return self._frontend.websockets

    @property
    def frontend(self) -> str:
        return self._frontend.name

    def age(self) -> float:
        return self.clock.seconds() - float(self._log["started"])

    def client_handshake(self) -> bytes:
        head = self.head
        return b"GET %s HTTP/1.1\r\n%s\r\n" % (head.target, serialize_headers(head.headers))

    def release_server(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            assert self._server is not None
            self._backend.release(self._server)

    def switch_server(self, server: Server) -> None:
        self.release_server()
        self._server = server
        self._holds_slot = True

    def fail(self, error: HTTPError, termination: Termination) -> None:
        raise AssertionError("a carried session's client is past HTTP")  # its client leg is open from the start

    def _line(self, now: float, termination: str) -> AccessRecord:
        """The request's access-log line as it stands: the old process's, with this process's part added."""
        log, connection = self._log, self._connection
        line = AccessRecord(**log["line"])
        server = self._server
        return line._replace(
            at=now, bytes_in=line.bytes_in + int(log["bytes_in"]) + connection.bytes_in,
            bytes_out=int(log["bytes_out"]) + connection.bytes_out,
            server=server.name if server is not None else line.server,
            total_ms=(now - float(log["started"])) * 1000, termination=termination,
        )

    def move_record(self) -> dict[str, Any]:
        """Never called: what a tunnel moves with (an adopted session's request moves with :meth:`carried`)."""
        raise AssertionError("an adopted session's request is carried by carried(), not move_record()")

    def carried(self) -> dict[str, object]:
        line = self._line(self.clock.seconds(), "")
        return {"line": {**self._log["line"], "server": line.server}, "started": self._log["started"],
                "bytes_in": line.bytes_in - int(self._log["line"]["bytes_in"]), "bytes_out": line.bytes_out}

    def moved(self) -> None:
        self.release_server()
        self._connection.moved_away()

    def ended(self, termination: Termination) -> None:
        self.release_server()
        self._connection.websocket_ended(termination)
        frontend = self._frontend
        terminations = frontend.terminations
        terminations[termination.value] = terminations.get(termination.value, 0) + 1
        if frontend.access_log.enabled:
            frontend.access_log.write(self._line(self.clock.seconds(), termination.value))
