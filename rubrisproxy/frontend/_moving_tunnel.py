"""The new process's adopter of tunnels (tunnel-mode WebSockets, CONNECT tunnels) carried by a live upgrade: the
client's connection, the server's, and the request they came from, rebuilt so that its end is counted and
logged once, with its whole life."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from ..backend import Backend, Server
from ..http import RequestHead
from ..origin import ConnectionPool, OriginConnection
from ..transfer import Carried, Kind, Refused
from ..websocket import TUNNEL_RECORD, Tunnel
from ._connection import ClientConnection
from ._context import Frontend
from ._exchange import Exchange
from ._forward import Destination
from ._moving import adopt_socket, adopting_factory
from ._upgrade import ExchangeHandoff


class _OriginFactory(Factory):
    """Builds the one origin connection an adopted socket is."""

    def __init__(self, server: Server, pool: ConnectionPool, clock: Any) -> None:
        self.server, self.pool, self.clock = server, pool, clock

    def buildProtocol(self, addr: Any) -> Protocol:
        return OriginConnection(self.server, self.pool, self.clock)


class TunnelAdopter:
    """Rebuilds a tunnel (:class:`~rubrisproxy.transfer.Kind` TUNNEL) on its two adopted sockets: the client's
    connection as its frontend here builds one, the server's as an origin connection to the server of that
    name in the backend of that name here (refused if either is gone), the request as an exchange that holds
    a slot on that server, and a :class:`~rubrisproxy.websocket.Tunnel` relaying first what the old process
    had not sent."""

    kind = Kind.TUNNEL
    versions = frozenset({TUNNEL_RECORD})

    def __init__(self, reactor: Any, factories: Callable[[str], Factory | None],
                 backends: Callable[[str], Backend | None], pool: ConnectionPool) -> None:
        self.reactor = reactor
        self.factories = factories
        self.backends = backends
        self.pool = pool

    def adopt(self, carried: Carried) -> None:
        record: Mapping[str, Any] = carried.record
        exchange_record: Mapping[str, Any] = record["exchange"]
        factory = adopting_factory(self.factories, carried.frontend)
        backend, server = self._server(exchange_record, getattr(factory, "frontend", None))
        client = adopt_socket(self.reactor, carried.sockets[0], factory)
        origin = adopt_socket(self.reactor, carried.sockets[1], _OriginFactory(server, self.pool, self.reactor))
        assert isinstance(client, ClientConnection) and isinstance(origin, OriginConnection)
        client.restore(record["client"])
        request = exchange_record["request"]
        head = RequestHead(request["method"].encode("latin-1"), request["target"].encode("latin-1"),
                           request["version"].encode("latin-1"), [])
        head.size = int(request["size"])
        exchange = Exchange(client, head, 0.0, 0.0)
        exchange.client_address = str(exchange_record["client_address"])
        exchange.restore_timing(exchange_record["timing"])
        exchange.resume_upgraded(backend, server, server in backend.servers)
        client.current = exchange
        handoff = exchange.websocket = ExchangeHandoff(exchange, None)
        tunnel = Tunnel(handoff, origin)
        tunnel.resume(str(record["to_client"]).encode("latin-1"), str(record["to_origin"]).encode("latin-1"))
        client.restore_counts(record["client"])  # its 101 was counted in the old process
        upgraded_in, upgraded_out = exchange_record["upgraded_at"]
        client.upgraded_at = (int(upgraded_in), int(upgraded_out))
        self.pool.upgraded += 1

    def _server(self, record: Mapping[str, Any], frontend: Frontend | None) -> tuple[Backend, Server]:
        forward = frontend.forward if frontend is not None else None
        if frontend is not None and forward is not None and record["backend"] == frontend.backend.name:
            # a forward proxy's CONNECT, made directly: the frontend's own server for the destination
            name, address, port = record["destination"]
            return frontend.backend, forward.server(Destination(str(name), int(port), tunnel=True), str(address))
        backend = self.backends(str(record["backend"])) if record["backend"] is not None else None
        if backend is None:
            raise Refused(f"there is no backend {record['backend']} here")
        for server in backend.servers:
            if server.name == record["server"]:
                return backend, server
        raise Refused(f"backend {backend.name} has no server {record['server']} here")
