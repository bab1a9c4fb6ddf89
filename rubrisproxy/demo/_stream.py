"""A streamed response body that is written only as fast as the connection takes it."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

#: The most ``/stream`` sends: 64 MiB.
MAX_KIB = 1 << 16
_LINE = b"x" * 1023 + b"\n"
_LINES_PER_WRITE = 64  # 64 KiB a write


@implementer(IPullProducer)
class BlockProducer:
    """Writes ``kib`` lines of 1 KiB to ``request`` (a pull producer: one 64 KiB write each time the
    transport has sent the last), then finishes it; stops if the client goes away."""

    def __init__(self, request: Any, kib: int) -> None:
        self.request = request
        self.left = kib
        self.done = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.done:
            return
        if self.left == 0:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()
            return
        lines = min(self.left, _LINES_PER_WRITE)
        self.left -= lines
        self.request.write(_LINE * lines)

    def stopProducing(self) -> None:
        self.done = True
