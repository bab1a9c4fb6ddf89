"""A transport that writes nothing, for a client leg opened again in the process a session was carried to."""

from __future__ import annotations

from typing import Any


class _Silent:
    """What a client leg made again in the new process answers the client's replayed handshake on: the client
    had its answer long ago, so nothing is written, and a leg that fails to open closes nothing (the old process
    keeps the connection); everything else is the real transport's."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: list[bytes]) -> None:
        pass

    def loseConnection(self) -> None:
        pass  # a leg that fails to open again must not close the connection: the old process may keep it

    def abortConnection(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def silent(transport: Any) -> Any:
    """``transport``, writing nothing."""
    return _Silent(transport)
