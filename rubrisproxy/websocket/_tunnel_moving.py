"""A tunnel carried to a new process in a live upgrade (docs/upgrade.md): both sockets, and the bytes each
side's transport had not sent yet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._compat import let_go, take_unsent, tcp_buffered
from ..deadline import Deadline
from ..flow import backed_up
from ..transfer import CARRYING, Carried, Carrier, Kind

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from ..origin import OriginConnection
    from ._handoff import ClientSide, UpgradeHandoff

#: The version of a tunnel's record (:meth:`TunnelMoving.move`; read by ``frontend``'s ``TunnelAdopter``).
TUNNEL_RECORD = 1


class TunnelMoving:
    """The part of :class:`~rubrisproxy.websocket.Tunnel` that moves it: :meth:`move` in the old process (both
    sides' reads paused, what their transports held taken out and carried with the sockets), :meth:`resume` in
    the new one. A tunnel half-closed on either side, or over TLS (either side) or an HTTP/2 stream, stays."""

    __slots__ = ()

    _handoff: UpgradeHandoff
    _client: ClientSide
    _origin: OriginConnection
    _deadline: Deadline
    _idle_limit: float
    _client_fin: bool
    _origin_fin: bool
    _ended: bool
    _leaving: IDelayedCall | None

    if TYPE_CHECKING:  # the tunnel's own
        def _leave(self) -> bool: ...

    @property
    def tunnel(self) -> Any:
        """The :class:`~rubrisproxy.websocket.Tunnel` this is a base of: the relay its connections report to."""
        return self

    def move(self, carrier: Carrier) -> None:
        """Move through ``carrier`` now, or stay (said to ``carrier``)."""
        if self._ended:
            return
        client, origin = self._client, self._origin
        if self._client_fin or self._origin_fin:
            carrier.keep(Kind.TUNNEL, "half-closed")
            return
        if not (tcp_buffered(client.transport) and tcp_buffered(origin.transport)):
            carrier.keep(Kind.TUNNEL, "tls or http2")
            return
        if self._leaving is not None:
            carrier.keep(Kind.TUNNEL, "server leaving")
            return
        gate = origin.gate
        assert gate is not None  # connected
        client.gate.pause(CARRYING)
        gate.pause(CARRYING)
        self._deadline.clear()
        client.download.detach()
        origin.upload.detach()
        to_client, to_origin = take_unsent(client.transport), take_unsent(origin.transport)
        exchange = self._handoff.move_record()
        record = {"exchange": exchange, "client": exchange.pop("client"), "idle_limit": self._idle_limit,
                  "to_client": to_client.decode("latin-1"), "to_origin": to_origin.decode("latin-1")}
        sockets: tuple[Any, Any] = (client.transport, origin.transport)  # TCP connections (tcp_buffered)
        carried = Carried(Kind.TUNNEL, TUNNEL_RECORD, str(exchange["frontend"]), record,
                          (sockets[0].fileno(), sockets[1].fileno()))
        carrier.carry(carried).addCallback(self._carried, to_client, to_origin)

    def _carried(self, moved: bool, to_client: bytes, to_origin: bytes) -> None:
        client, origin = self._client, self._origin
        if self._ended:
            return
        if not moved:  # it goes on here, as it was
            self._send(to_client, to_origin)
            client.gate.resume(CARRYING)
            assert origin.gate is not None
            origin.gate.resume(CARRYING)
            self._deadline.set(self._idle_limit)
            return
        if self._leave():
            let_go(client.transport)
            let_go(origin.transport)
            self._handoff.moved()

    def resume(self, to_client: bytes, to_origin: bytes) -> None:
        """In the new process: relay again, on the adopted connections, first what the old one had not sent."""
        handoff, tunnel = self._handoff, self.tunnel
        handoff.websockets.add(tunnel)
        server = handoff.server
        if server is not None:
            server.watchers.add(tunnel)
        self._client.take_over(tunnel)
        self._origin.take_over(tunnel)
        self._deadline.set(self._idle_limit)
        self._send(to_client, to_origin)

    def _send(self, to_client: bytes, to_origin: bytes) -> None:
        """Write what a transport held back (counted when it was first written), with the producers as a
        relay's writes set them."""
        client, origin = self._client, self._origin
        if to_client:
            client.transport.write(to_client)
            if client.download.producer is None and backed_up(client.transport):
                assert origin.gate is not None
                client.download.attach(origin.gate)
        if to_origin:
            origin.transport.write(to_origin)
            if origin.upload.producer is None and backed_up(origin.transport):
                origin.upload.attach(client.gate)
