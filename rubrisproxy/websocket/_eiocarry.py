"""A Socket.IO session's Engine.IO state as it crosses to another process with its session (an upgrade).

:class:`EngineIOCarrying` is the base of :class:`~rubrisproxy.websocket._eioresume.EngineIOResume` that writes
that state into the session's record (:meth:`carried`) and reads it back in the new process (:meth:`restore`);
the rest (its version, whether it came from polling) is learned again from the upgrade request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from ..backend import EngineIOStickiness
    from ._eioresume import RejoiningSession


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _data(text: str) -> bytes:
    return text.encode("latin-1")


class EngineIOCarrying:
    """What of an :class:`~rubrisproxy.websocket._eioresume.EngineIOResume` a carried session takes along."""

    __slots__ = ("sid", "interval", "timeout", "_last_ping", "joined", "server_sids", "_acks", "_held_acks",
                 "_complete", "_seen_traffic", "_owed_pongs", "_polling", "_beat")

    _session: RejoiningSession
    # Its slots, set by EngineIOResume (see there).
    sid: str | None
    interval: float
    timeout: float
    _last_ping: float | None
    joined: dict[bytes, bytes]
    server_sids: dict[bytes, bytes]
    _acks: set[tuple[bytes, int]]
    _held_acks: set[tuple[bytes, int]]
    _complete: bool
    _seen_traffic: bool
    _owed_pongs: int
    _polling: EngineIOStickiness | None
    _beat: IDelayedCall | None

    if TYPE_CHECKING:
        def _take_polled(self) -> None: ...

    def carried(self) -> dict[str, object]:
        """Its state, JSON-encodable; its heartbeat to the client stops here (the new process goes on with it)."""
        if self._polling is not None:
            self._take_polled()
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None
        now = self._session.clock.seconds()
        return {
            "sid": self.sid, "interval": self.interval, "timeout": self.timeout,
            "since_ping": None if self._last_ping is None else now - self._last_ping,
            "joined": [(_text(namespace), _text(connect)) for namespace, connect in self.joined.items()],
            "server_sids": [(_text(namespace), _text(answer)) for namespace, answer in self.server_sids.items()],
            "acks": [(_text(namespace), ack) for namespace, ack in sorted(self._acks)],
            "held_acks": [(_text(namespace), ack) for namespace, ack in sorted(self._held_acks)],
            "complete": self._complete, "seen_traffic": self._seen_traffic, "owed_pongs": self._owed_pongs,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take the state :meth:`carried` wrote, before the session's move goes on here."""
        self.sid = state["sid"]
        self.interval, self.timeout = float(state["interval"]), float(state["timeout"])
        since = state["since_ping"]
        self._last_ping = None if since is None else self._session.clock.seconds() - float(since)
        self.joined = {_data(namespace): _data(connect) for namespace, connect in state["joined"]}
        self.server_sids = {_data(namespace): _data(answer) for namespace, answer in state["server_sids"]}
        self._acks = {(_data(namespace), int(ack)) for namespace, ack in state["acks"]}
        self._held_acks = {(_data(namespace), int(ack)) for namespace, ack in state["held_acks"]}
        self._complete, self._seen_traffic = bool(state["complete"]), bool(state["seen_traffic"])
        self._owed_pongs = int(state["owed_pongs"])
        self._polling = None
