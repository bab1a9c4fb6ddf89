"""Where llhttp is in a chunked body, as the parsers need it for the trailer section after the last chunk.

A parser keeps a *mark*, a small set, and hands llhttp C callables on it (a Python callback per chunk would cost
five times as much): ``on_chunk_header`` is the mark's ``clear``, ``on_chunk_complete`` puts :data:`DATA` back (at
the end of each chunk, the last one's trailer section included), and the parser's ``on_body`` puts it back too. So
the mark lacks :data:`DATA` from a chunk's line to its first data, or to the end of the last chunk's trailer section.
A chunk with data can only be malformed after its data: llhttp failing while the mark lacks :data:`DATA` failed in
the trailer section, and a read that leaves the response incomplete then ended in that section or just past a
chunk's line (whose data comes first in the next read). A set of two small ints keeps its table inline: clearing
and filling it allocate nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

#: The mark's members: data came since the last chunk's line (or no chunk is being read); the trailer section's
#: bytes are being counted (from the read after the one the last chunk's line ended in).
DATA, COUNTING = 0, 1


def new_mark() -> set[int]:
    """A mark outside any chunk."""
    return {DATA}


def chunk_callbacks(mark: set[int]) -> tuple[Callable[[], None], Callable[[], None]]:
    """llhttp's ``on_chunk_header`` and ``on_chunk_complete`` for ``mark``."""
    return mark.clear, partial(mark.add, DATA)


def counted_trailer(mark: set[int], counted: int, size: int) -> int:
    """A read of ``size`` bytes left the message incomplete, ``mark`` lacking :data:`DATA`: the trailer section's bytes
    so far, ``counted`` before it. The read in which the last chunk's line ended is not counted (it may hold the
    chunk before)."""
    if COUNTING in mark:
        return counted + size
    mark.add(COUNTING)
    return 0


class DroppedFields(list[tuple[bytes, bytes]]):
    """Where a response's trailer fields go once its head is read: nowhere (the body is re-framed). One per parser,
    always empty: no list is made per response for them. What bounds them is the response parser's count of the
    trailer section's bytes: an origin sending trailer lines, or one line, without end would grow the proxy. (Not in
    the compiled parser: a subclass of ``list`` cannot be a native class.)"""

    __slots__ = ()

    def append(self, field: tuple[bytes, bytes]) -> None:
        pass
