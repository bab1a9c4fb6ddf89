"""A session's two legs and the connections under them: how each leg is opened, and their flow control."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._compat import slim_transport
from ..http import ResponseHead, serialize_headers
from ._handshake import HANDSHAKE_HEADERS
from ._silent import silent

if TYPE_CHECKING:
    from ..origin import OriginConnection
    from ._handoff import ClientSide, UpgradeHandoff
    from ._legs import BackendLeg, ClientLeg, LegFactories
    from ._session import WebSocketSession


class LegPair:
    """A session's legs: the client leg, on the client's connection for its whole WebSocket, and one backend
    leg at a time, on an origin connection. Opens each (a backend leg on a 101 the proxy received, the client
    leg once the first backend leg opened, answering with that backend's subprotocol and headers) and makes
    each side's transport the other's streaming producer. The session decides when; its legs report to it."""

    __slots__ = ("_session", "_handoff", "_factories", "_connection", "origin", "client", "backend", "_headers",
                 "protocol")

    def __init__(self, session: WebSocketSession, handoff: UpgradeHandoff, origin: OriginConnection | None,
                 factories: LegFactories) -> None:
        self._session = session
        self._handoff = handoff
        self._factories = factories
        self._connection: ClientSide = handoff.client
        #: Under the backend leg, or the last one (None in a session adopted from another process, until its first).
        self.origin = origin
        self.client: ClientLeg | None = None
        self.backend: BackendLeg | None = None
        self._headers: dict[str, list[str]] = _NO_HEADERS  # the first backend's 101 headers, for the client's answer
        self.protocol: str | None = None  # the subprotocol the first backend chose: every later one must too

    @property
    def backend_open(self) -> bool:
        leg = self.backend
        return leg is not None and leg.state == leg.STATE_OPEN

    def keep_headers(self, head: ResponseHead) -> None:
        """The first backend's 101: its headers but the handshake's own answer the client's handshake."""
        headers: dict[str, list[str]] = {}
        for name, value in head.forward:
            if name.lower() not in HANDSHAKE_HEADERS and name.lower() != b"sec-websocket-accept":
                headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        if headers:
            self._headers = headers

    def answer(self) -> tuple[str | None, dict[str, list[str]]]:
        """The answer to the client's handshake: the backend's subprotocol and headers."""
        return self.protocol, self._headers

    def open_backend(self, origin: OriginConnection, head: ResponseHead, key: bytes, offered: list[str]) -> BackendLeg:
        """A backend leg on ``origin``, handed the 101 it answered the handshake with ``key`` with (Autobahn
        checks it as if it had sent the request)."""
        self.origin = origin
        factories = self._factories
        leg = factories.backend_leg()
        leg.factory = factories.client
        self.backend = leg
        chosen = False if factories.offers else _plain_switch(head)
        switch: bytes | str | None
        if chosen is False:  # extensions to negotiate, or a subprotocol header twice: Autobahn's to judge
            switch = b"HTTP/1.1 101 Switching Protocols\r\n%s\r\n" % serialize_headers(head.headers)
        else:
            switch = chosen if isinstance(chosen, str) else None
        leg.attach(self._session, origin, switch, key, offered)
        return leg

    def open_client(self, backend_leg: BackendLeg) -> None:
        """The first backend leg opened: take the client's connection over and answer its handshake."""
        connection = self._connection
        leg = self._factories.client_leg()
        leg.factory = self._factories.server
        leg.session = self._session
        leg.gate = connection.gate
        leg.meter = connection
        self.client = leg
        self.protocol = backend_leg.websocket_protocol_in_use
        from_client = connection.take_over(self._session)
        leg.makeConnection(connection.transport)
        self.wire()
        upgrade = self._handoff.upgrade
        assert upgrade is not None  # a session's
        if upgrade.extensions or self._factories.offers:  # extension offers to judge and answer: Autobahn's
            leg.dataReceived(self._handoff.client_handshake() + from_client)
            return
        leg.answer_handshake(upgrade.key)
        slim_transport(connection.transport)  # its 101 written: what it keeps while the WebSocket idles
        if from_client:
            leg.dataReceived(from_client)

    def wire(self) -> None:
        """Each side's transport the other's producer: a slow reader pauses the other side. Both connections are
        then done with their handshakes, and what they keep for a long, mostly idle life is slimmed."""
        origin = self.origin
        assert origin is not None and origin.gate is not None  # it is connected: it answered with a 101
        self._connection.download.attach(origin.gate)
        origin.upload.attach(self._connection.gate)
        slim_transport(self._connection.transport)
        slim_transport(origin.transport)

    def unwire(self) -> None:
        self._connection.download.detach()
        if self.origin is not None:
            self.origin.upload.detach()

    def release(self) -> None:
        """The session has ended: let go of it, its legs and the origin connection, which all refer back to it, so
        that reference counting frees them (a mass disconnect leaves nothing for the cyclic collector)."""
        self.client = self.backend = self.origin = None
        del self._session

    def abort(self) -> None:
        """Cut the client's connection, and the backend's if a leg is on it."""
        self._connection.transport.abortConnection()
        if self.backend is not None and self.origin is not None:
            self.origin.transport.abortConnection()

    def adopt_backend(self, opening: WebSocketSession, origin: OriginConnection, switch: bytes | str | None, key: bytes,
                      offered: list[str]) -> BackendLeg:
        """The backend leg of a session carried with its backend connection from another process, open again on
        ``origin`` (the adopted socket) from the 101 it opened on there, with nothing written (``opening`` hears of
        its opening; the caller then gives it to the session)."""
        self.origin = origin
        leg = self._factories.backend_leg()
        leg.factory = self._factories.client
        self.backend = leg
        leg.prepare(opening, origin, switch, key, offered)
        leg.makeConnection(silent(origin.transport))
        leg.transport = origin.transport
        return leg

    def adopt_client(self, protocol: str | None, headers: dict[str, list[str]]) -> ClientLeg:
        """The client leg of a session carried from another process, open on the adopted connection: the client's
        handshake (as it was answered, with ``protocol`` and ``headers``) is replayed to it with nothing written
        back, so Autobahn negotiates what it did then (the caller checks it did)."""
        connection = self._connection
        leg = self._factories.client_leg()
        leg.factory = self._factories.server
        leg.session = self._session
        self.client = leg
        self.protocol, self._headers = protocol, headers
        connection.take_over(self._session)
        leg.makeConnection(silent(connection.transport))
        leg.dataReceived(self._handoff.client_handshake())
        leg.transport = connection.transport
        leg.gate = connection.gate
        leg.meter = connection
        return leg


#: The headers of a 101 with none but the handshake's own (shared: never changed, only replaced).
_NO_HEADERS: dict[str, list[str]] = {}


def _plain_switch(head: ResponseHead) -> str | None | bool:
    """The subprotocol a backend's 101 (checked by check_switch) chose, None for none; False if Autobahn must read it
    (an extension in it, or Sec-WebSocket-Protocol more than once)."""
    protocol: str | None = None
    seen = False
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"sec-websocket-extensions":
            return False
        if lower == b"sec-websocket-protocol":
            if seen:
                return False
            seen = True
            protocol = value.strip().decode("latin-1") or None
    return protocol
