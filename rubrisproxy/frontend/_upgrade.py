"""An exchange's WebSocket upgrade: its checks, its backend handshake, and its hand-off to a tunnel or a session."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from ..http import NONE, HTTPError, ResponseHead, serialize_headers
from ..lifecycle import Termination
from ..websocket import (
    Handshake,
    RefuseHandshake,
    Tunnel,
    Upgrade,
    WebSocketSession,
    backend_handshake,
    check_upgrade,
    new_key,
)
from ._heads import VIA

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ..backend import Backend, Server
    from ..config import Timeouts
    from ..http import Headers, RequestHead
    from ..origin import ConnectionPool, OriginConnection
    from ..routing import Router
    from ..websocket import Relay, ResumeBudget
    from ._client import UpgradedClient
    from ._exchange import Exchange

#: A session keeps its request's head (its re-dials and a carry read it) for its whole life: the Connection tokens
#: clients send (a set of its own each, 216 bytes) are kept as one of these when equal.
_CONNECTION_TOKENS = {tokens: tokens for tokens in (frozenset((b"upgrade",)), frozenset((b"keep-alive", b"upgrade")))}


def accept_upgrade(exchange: Exchange, router: Router, backend: Backend) -> ExchangeHandoff | None:
    """Check a WebSocket upgrade (RFC 6455, the allowlists, the hooks): its hand-off, or None if it was refused
    (the exchange has answered)."""
    head = exchange.head
    origins, subprotocols = router.websocket_rules(head, backend)
    try:
        upgrade = check_upgrade(head, origins, subprotocols)
    except HTTPError as error:
        exchange.fail(error, Termination.DENIED if error.status == 403 else Termination.BAD_REQUEST)
        return None
    if backend.websocket_hooks:
        target = head.resolved.origin_form if head.resolved is not None else head.target  # as the origin gets it
        request = Handshake(exchange.client_address, target, head.headers, upgrade.protocols, upgrade.origin)
        for hook in backend.websocket_hooks:
            try:
                hook.handshake(request)
            except RefuseHandshake as refusal:
                exchange.fail(HTTPError(refusal.status, f"refused by {type(hook).__name__}: {refusal.reason}"),
                              Termination.DENIED)
                return None
    return ExchangeHandoff(exchange, upgrade, session=backend.websocket.mode == "session")


class ExchangeHandoff:
    """An exchange's WebSocket, as :class:`~rubrisproxy.websocket.UpgradeHandoff` describes it.

    Made when the client's upgrade passes its checks (or a forward proxy's CONNECT tunnel opens, with no
    ``upgrade``): it adds the backend handshake to the request and, at the backend's 101, hands both
    connections to a :class:`~rubrisproxy.websocket.Tunnel` or a :class:`~rubrisproxy.websocket.WebSocketSession`,
    which report through it until they end.
    """

    __slots__ = ("exchange", "client", "head", "clock", "client_address", "upgrade", "websocket_key", "session_id")

    def __init__(self, exchange: Exchange, upgrade: Upgrade | None, session: bool = False) -> None:
        self.exchange = exchange
        self.client: UpgradedClient = exchange.client.upgraded()
        self.head: RequestHead = exchange.head
        self.clock: IReactorTime = exchange.clock
        self.client_address = exchange.client_address
        self.upgrade = upgrade
        self.websocket_key = new_key() if session else None  # session mode: the proxy's own key
        self.session_id = secrets.token_hex(8) if session else ""  # session mode: every backend handshake carries it

    # What the request to the backend carries

    def handshake_lines(self, forward: Headers, backend: Backend) -> tuple[Headers, bytes]:
        """The request's end-to-end headers without the client's handshake, and the backend handshake's lines."""
        upgrade = self.upgrade
        assert upgrade is not None
        key = self.websocket_key
        offers = backend.leg_factories().offers if key is not None else b""
        forward, extra = backend_handshake(forward, upgrade, key, offers)
        if self.session_id:
            extra += b"%s: %s; resume=0\r\n" % (backend.websocket.session_header.encode(), self.session_id.encode())
        return forward, extra

    def switched(self, head: ResponseHead, rest: bytes, origin: OriginConnection, handshake: bytes) -> None:
        """The backend's 101 passed its checks: hand both connections to a tunnel or a session (``handshake``:
        the request that asked for it, ``rest``: what followed the 101)."""
        if self.websocket_key is None:
            switch = b"HTTP/1.1 101 Switching Protocols\r\n%sConnection: Upgrade\r\nUpgrade: websocket\r\n%s\r\n" % (
                serialize_headers(head.forward), VIA.get(head.version, VIA[b"1.1"]),
            )
            Tunnel(self, origin).start(switch, rest)
            self.upgrade = None  # a tunnel needs nothing more of the handshake
            request = self.head  # only its request line is logged from here on
            request.headers = request.forward = []  # what a tunnelled request keeps of its headers: none
            request.connection = NONE
            request.host = None
        else:
            backend = self.backend
            assert backend is not None
            request = self.head  # kept for the session's life: its re-dials choose a server by it, a carry sends it
            request.connection = _CONNECTION_TOKENS.get(request.connection, request.connection)
            request.forward = request.headers  # what was forwarded is sent (a re-dial sends the session's template)
            WebSocketSession(self, origin, backend, handshake).start(head, rest)

    # websocket.UpgradeHandoff

    @property
    def server(self) -> Server | None:
        return self.exchange.server

    @property
    def backend(self) -> Backend | None:
        return self.exchange.backend

    @property
    def timeouts(self) -> Timeouts:
        return self.exchange.client.frontend.timeouts

    @property
    def pool(self) -> ConnectionPool:
        return self.exchange.client.frontend.pool

    @property
    def resume_budget(self) -> ResumeBudget:
        return self.exchange.client.frontend.resume_budget

    @property
    def idle_clock(self) -> IReactorTime:
        return self.exchange.client.frontend.websocket_timer

    @property
    def websockets(self) -> set[Relay]:
        return self.exchange.client.frontend.websockets

    def age(self) -> float:
        return self.clock.seconds() - self.exchange.started_at

    def client_handshake(self) -> bytes:
        # What Autobahn reads of it, already checked by check_upgrade: not the application's headers (cookies...),
        # which it would parse and validate again for nothing.
        upgrade = self.upgrade
        assert upgrade is not None  # a session's
        lines = [b"GET / HTTP/1.1\r\nHost: rubrisproxy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n" % upgrade.key]
        if upgrade.protocols:
            lines.append(b"Sec-WebSocket-Protocol: %s\r\n" % ", ".join(upgrade.protocols).encode("latin-1"))
        lines.extend(b"Sec-WebSocket-Extensions: %s\r\n" % offer for offer in upgrade.extensions)
        if upgrade.origin is not None:
            lines.append(b"Origin: %s\r\n" % upgrade.origin.encode("latin-1"))
        lines.append(b"\r\n")
        return b"".join(lines)

    def release_server(self) -> None:
        self.exchange.release_server()

    def switch_server(self, server: Server) -> None:
        self.exchange.switch_server(server)

    def fail(self, error: HTTPError, termination: Termination) -> None:
        self.exchange.fail(error, termination)

    def move_record(self) -> dict[str, Any]:
        exchange, head = self.exchange, self.head
        return {
            "frontend": self.exchange.client.frontend.name, "client": self.client.move_record(True, b""),
            "request": {"method": head.method.decode("latin-1"), "target": head.target.decode("latin-1"),
                        "version": head.version.decode("latin-1"), "size": head.size},
            "client_address": exchange.client_address, "timing": exchange.timing_record(),
            "upgraded_at": list(self.client.upgraded_at),
            "backend": exchange.backend.name if exchange.backend is not None else None,
            "server": exchange.server.name if exchange.server is not None else None,
            # where a forward proxy's CONNECT tunnel made directly goes: the destination's name, address and port
            "destination": [exchange.server.name, exchange.server.config.host, exchange.server.config.port]
            if exchange.server is not None else None,
        }

    def ended(self, termination: Termination) -> None:
        bytes_in, bytes_out = self._since_upgrade()
        self.exchange.upgrade_ended(termination, bytes_in, bytes_out)
        self.exchange.websocket = None  # it refers to this: a cycle
        self.client.websocket_left()

    def _since_upgrade(self) -> tuple[int, int]:
        client = self.client
        bytes_in, bytes_out = client.upgraded_at  # what crossed the client's connection before the WebSocket
        return client.bytes_in - bytes_in, client.bytes_out - bytes_out

    @property
    def frontend(self) -> str:
        return self.exchange.client.frontend.name

    def carried(self) -> dict[str, object]:
        exchange = self.exchange
        bytes_in, bytes_out = self._since_upgrade()
        record = exchange.record(self.clock.seconds(), self.frontend, Termination.OK)
        return {"line": record._asdict(), "started": exchange.started_at, "bytes_in": bytes_in,
                "bytes_out": exchange.bytes_out + bytes_out}

    def moved(self) -> None:
        self.exchange.upgrade_moved()
        self.client.moved_away()
