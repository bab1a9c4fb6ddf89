"""Where llhttp is in a chunked body, as the parsers need it for the trailer section after the last chunk.

A parser keeps a *mark*, a plain dict: llhttp's ``on_chunk_header`` is the mark's own ``clear`` (a C call; a Python
callback per chunk costs five times as much), the parser's ``on_body`` puts :data:`DATA` back. From a chunk's line
to its first data the mark lacks :data:`DATA`; a chunk with data can only be malformed after its data, so llhttp
failing then failed in the trailer section after the last chunk, and a read ending then ended in that section or just
past a chunk's line (whose data comes first in the next read).
"""

from __future__ import annotations

#: The mark's keys: data came since the last chunk's line; the trailer section's bytes counted so far.
DATA, COUNTED = 0, 1


def new_mark() -> dict[int, int]:
    """A mark outside a chunk's line (as before any chunked body)."""
    return {DATA: 0}


def trailer_bytes(mark: dict[int, int], size: int) -> int:
    """A read of ``size`` bytes ended with ``mark`` lacking :data:`DATA`: the trailer section's bytes so far. The
    read in which a chunk's line ended is not counted (it may hold the chunk before), only those after it."""
    counted = mark.get(COUNTED)
    mark[COUNTED] = counted = 0 if counted is None else counted + size
    return counted
