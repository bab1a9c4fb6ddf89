"""The running proxy's settings behind one reference, so a reload swaps one object."""

from __future__ import annotations

from dataclasses import replace

from .config import Limits, ProxyConfig, Timeouts

#: The configuration of a proxy with nothing in it: every setting as the config model has it.
EMPTY = ProxyConfig(frontends=(), backends={})


class LiveSettings:
    """The configuration in force: frontends, the connector, the pool, backends and the resume budget hold this
    one object and read ``current.timeouts`` and ``current.limits`` when they need a value; a reload sets
    ``current`` once. (Settings a reload does not change are taken from it when a part is built.)"""

    __slots__ = ("current",)

    def __init__(self, current: ProxyConfig = EMPTY) -> None:
        self.current = current

    @classmethod
    def of(cls, timeouts: Timeouts | None = None, limits: Limits | None = None) -> LiveSettings:
        """Settings with these timeouts and limits, the rest as the config model has them."""
        return cls(replace(EMPTY, timeouts=timeouts or EMPTY.timeouts, limits=limits or EMPTY.limits))
