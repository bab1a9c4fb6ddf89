"""AMP argument types the processes' channels share (the workers' supervisor channel, the upgrade's hand-over)."""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp

#: An AMP value holds at most 65,535 bytes: longer ones travel in pieces of this size.
_PIECE = 60_000


class BigBytes(amp.Argument):
    """Bytes of any length: AMP's values are at most 64 KiB, so a longer one is split over the keys ``NAME``
    (the number of pieces), ``NAME.0``, ``NAME.1``..."""

    def toBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        value: bytes = objects.pop(name.decode())  # the names used here are Python identifiers as they are
        pieces = [value[i:i + _PIECE] for i in range(0, len(value), _PIECE)] or [b""]
        strings[name] = str(len(pieces)).encode()
        for index, piece in enumerate(pieces):
            strings[name + b".%d" % index] = piece

    def fromBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        count = int(strings.pop(name))
        pieces = [strings.pop(name + b".%d" % index) for index in range(count)]
        objects[name.decode()] = b"".join(pieces)
