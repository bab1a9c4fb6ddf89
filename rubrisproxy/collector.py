"""Python's garbage collector set for a long-running proxy: what start built is left out of its passes, and its
young passes come less often than its default."""

from __future__ import annotations

import gc

#: Allocations (net of what was freed meanwhile) between two of the collector's young passes; Python's default is
#: 700. Each pass walks every object allocated since the last one that is still alive: with a connection per
#: request, those of the connections in flight. A proxy frees what it allocates by reference counting (a closed
#: connection leaves no cycle: tests/test_leaks.py), so a pass every 700 allocations found nothing to free yet
#: cost about 4% of a new connection's instructions (bench/results/close.txt); at this spacing, what a cycle
#: would leave waits for at most this many allocations.
YOUNG_PASS_EVERY = 10_000


def settle_collector() -> None:
    """Once started: freeze what start built (imports, configuration, listeners), which lives as long as the
    process and is then left out of the full passes (one every few thousand new connections, which walk ~2k
    objects, not ~70k: 0.3 ms, not 70-150 ms; the cost: cycles among these objects that a reload drops stay,
    once), and space the young passes out to :data:`YOUNG_PASS_EVERY` allocations."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_PASS_EVERY, middle, old)
