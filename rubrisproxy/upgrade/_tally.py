"""What became of the connections of a live upgrade: counts by kind and outcome, and the log line of a batch."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from ..transfer import Kind, Outcome


class UpgradeState(Enum):
    """Where a process is in a live upgrade it started (``Upgrader.state``).

    ``IDLE`` until one starts; ``STARTING`` while the new process starts and takes the listeners (a
    failure goes back to ``IDLE``, everything as it was); ``HANDING_OVER`` once it took them: this
    process accepts nothing more, moves what can move and serves what stays; ``DONE`` when nothing is
    left (or the deadline closed it), as it reports to the new process and exits.
    """

    IDLE = "idle"
    STARTING = "starting"
    HANDING_OVER = "handing-over"
    DONE = "done"


class Tally:
    """Connections by (kind, outcome), and why those kept stayed (by kind and reason)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Kind, Outcome], int] = {}
        self.reasons: dict[tuple[Kind, str], int] = {}

    def add(self, kind: Kind, outcome: Outcome, why: str = "") -> None:
        key = (kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        if why:
            self.reasons[(kind, why)] = self.reasons.get((kind, why), 0) + 1

    def merge(self, other: Tally) -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        for why, count in other.reasons.items():
            self.reasons[why] = self.reasons.get(why, 0) + count

    def __bool__(self) -> bool:
        return bool(self.counts)

    def as_json(self) -> dict[str, dict[str, int]]:
        """``{outcome: {kind: count}}``, every outcome present."""
        return {outcome.value: {kind.value: count for (kind, out), count in sorted(self.counts.items()) if out is outcome}
                for outcome in Outcome}

    @classmethod
    def from_json(cls, value: Mapping[str, Mapping[str, int]]) -> Tally:
        tally = cls()
        for outcome, kinds in value.items():
            for kind, count in kinds.items():
                tally.counts[(Kind(kind), Outcome(outcome))] = int(count)
        return tally

    def line(self) -> str:
        """``moved 120 http, 40 tunnel; kept 3 http (tls 2, http2 1); closed 0``."""
        parts = []
        for outcome in Outcome:
            counts = [f"{count} {kind.value}" for (kind, out), count in sorted(self.counts.items()) if out is outcome]
            text = f"{outcome.value} {', '.join(counts) or '0'}"
            if outcome is Outcome.KEPT and self.reasons:
                text += " (" + ", ".join(f"{why} {count}" for (_, why), count in sorted(self.reasons.items())) + ")"
            parts.append(text)
        return "; ".join(parts)
