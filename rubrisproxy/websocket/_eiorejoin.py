"""A Socket.IO session's rejoin on the new server a move found: the exchange that gets it its namespaces back.

An :class:`EngineIORejoin` is made for each new backend leg a rejoining move opens (by
:class:`~rubrisproxy.websocket._eioresume.EngineIOResume`). It reads what the new server sends first: consumes its
open packet, sends the CONNECT packets the client sent (its :class:`~rubrisproxy.websocket._eioledger.EngineIOLedger`
kept them), consumes their answers and tells its owner it is done; a namespace refused, an open packet that cannot
be read or no answers within the open handshake's timeout, and it tells its owner it failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..engineio import CONNECT, CONNECT_ERROR, MESSAGE, OPEN, socketio_packet

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from ._eioledger import EngineIOLedger


class NewLeg(Protocol):
    """The new backend leg a rejoin speaks on."""

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None: ...


class RejoinOwner(Protocol):
    """What :class:`EngineIORejoin` needs of the hook that made it."""

    def rejoin_done(self) -> None:
        """The new server answered every CONNECT: the session can send what it held."""

    def rejoin_failed(self, why: str) -> None:
        """The new server did not take the Engine.IO session (``why``, as the log says it)."""


class EngineIORejoin:
    """One rejoin on a new backend leg (see the module docstring); its deadline is armed as it is made."""

    __slots__ = ("_owner", "_ledger", "leg", "_expected", "_deadline")

    def __init__(self, owner: RejoinOwner, ledger: EngineIOLedger, leg: NewLeg, clock: IReactorTime,
                 timeout: float) -> None:
        self._owner = owner
        self._ledger = ledger
        self.leg = leg
        self._expected: set[bytes] = set()  # the namespaces whose CONNECT answer is still to come
        self._deadline = clock.callLater(timeout, owner.rejoin_failed,
                                         "no Engine.IO open packet and CONNECT answers in time")

    def read(self, payload: bytes) -> bool:
        """A text message from the new server: consumed (False) or to be passed on to the client (True)."""
        kind = payload[0]
        if kind == OPEN and not self._expected:
            if self._ledger.learn_open(payload, first=False):
                self._send_connects()
            else:
                self._owner.rejoin_failed("its open packet could not be read")
            return False
        packet = socketio_packet(payload) if kind == MESSAGE else None
        if packet is None or packet.namespace not in self._expected:
            return True  # pings, and what its connection handlers send: the client is in those namespaces
        if packet.kind == CONNECT:
            self._ledger.server_sids[packet.namespace] = payload
            self._expected.discard(packet.namespace)
            if not self._expected:
                self._owner.rejoin_done()
        elif packet.kind == CONNECT_ERROR:
            self._owner.rejoin_failed(f"it refused namespace {packet.namespace.decode('utf-8', 'replace')}: "
                                      f"{payload[2:200].decode('utf-8', 'replace')}")
        else:
            return True
        return False

    def _send_connects(self) -> None:
        joined = self._ledger.joined
        self._expected = set(joined)
        for connect in joined.values():
            if connect:  # v3's default namespace is joined by the server itself
                self.leg.sendMessage(connect, False)
        if not self._expected:
            self._owner.rejoin_done()

    def stop(self) -> None:
        """Its deadline is no longer needed (done, failed or its move over)."""
        if self._deadline.active():
            self._deadline.cancel()
