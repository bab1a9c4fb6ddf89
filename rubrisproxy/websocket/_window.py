"""The last window of plaintext a peer compressed, for an inflater made again in another process."""

from __future__ import annotations

from collections import deque


class InflateWindow:
    """The plaintext of the compressed messages a leg received, as far back as the peer's deflate window reaches
    (``size`` bytes): what the peer's compressor may still refer to. Kept as the messages themselves, trimmed as
    it grows (nothing copied per message), joined only when it is carried."""

    __slots__ = ("_parts", "_held", "size")

    def __init__(self, size: int) -> None:
        self._parts: deque[bytes] = deque()
        self._held = 0
        self.size = size

    def add(self, payload: bytes) -> None:
        parts = self._parts
        parts.append(payload)
        self._held += len(payload)
        while self._held - len(parts[0]) >= self.size:
            self._held -= len(parts.popleft())

    def value(self) -> bytes:
        """The last ``size`` bytes (fewer, early on)."""
        return b"".join(self._parts)[-self.size:]
