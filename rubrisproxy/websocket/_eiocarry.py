"""A Socket.IO session's Engine.IO state as it crosses to another process with its session (an upgrade).

:class:`EngineIOCarrying` is the base of :class:`~rubrisproxy.websocket._eioledger.EngineIOLedger` that writes
that state into the session's record (:meth:`carried`) and reads it back in the new process (:meth:`restore`);
its heartbeat goes along too, written and read by :class:`~rubrisproxy.websocket._eioresume.EngineIOResume`; the
rest (its version, whether it came from polling) is learned again from the upgrade request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backend import EngineIOStickiness


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _data(text: str) -> bytes:
    return text.encode("latin-1")


class EngineIOCarrying:
    """What of an :class:`~rubrisproxy.websocket._eioledger.EngineIOLedger` a carried session takes along."""

    __slots__ = ("sid", "interval", "timeout", "joined", "server_sids", "_acks", "_held_acks", "_complete",
                 "_seen_traffic", "_polling")

    # Its slots, set by EngineIOLedger (see there).
    sid: str | None
    interval: float
    timeout: float
    joined: dict[bytes, bytes]
    server_sids: dict[bytes, bytes]
    _acks: set[tuple[bytes, int]]
    _held_acks: set[tuple[bytes, int]]
    _complete: bool
    _seen_traffic: bool
    _polling: EngineIOStickiness | None

    if TYPE_CHECKING:
        def take_polled(self) -> None: ...

    def carried(self) -> dict[str, object]:
        """Its state, JSON-encodable."""
        self.take_polled()
        return {
            "sid": self.sid, "interval": self.interval, "timeout": self.timeout,
            "joined": [(_text(namespace), _text(connect)) for namespace, connect in self.joined.items()],
            "server_sids": [(_text(namespace), _text(answer)) for namespace, answer in self.server_sids.items()],
            "acks": [(_text(namespace), ack) for namespace, ack in sorted(self._acks)],
            "held_acks": [(_text(namespace), ack) for namespace, ack in sorted(self._held_acks)],
            "complete": self._complete, "seen_traffic": self._seen_traffic,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take the state :meth:`carried` wrote, before the session's move goes on here."""
        self.sid = state["sid"]
        self.interval, self.timeout = float(state["interval"]), float(state["timeout"])
        self.joined = {_data(namespace): _data(connect) for namespace, connect in state["joined"]}
        self.server_sids = {_data(namespace): _data(answer) for namespace, answer in state["server_sids"]}
        self._acks = {(_data(namespace), int(ack)) for namespace, ack in state["acks"]}
        self._held_acks = {(_data(namespace), int(ack)) for namespace, ack in state["held_acks"]}
        self._complete, self._seen_traffic = bool(state["complete"]), bool(state["seen_traffic"])
        self._polling = None
