"""A backend's servers, their state and counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from ..config import ServerConfig, TLSConfig
from ..counters import Histogram


class ServerWatcher(Protocol):
    """Something bound to a server (a session-mode WebSocket) that must move when the server goes away."""

    def server_leaving(self, server: Server, why: str) -> None: ...


class Generation:
    """A count bumped whenever any server's up state or weight changes, so backends know to recompute who is usable.
    (An object's attribute, not a class's: a compiled class's attributes are fixed.)"""

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


USABILITY = Generation()


@dataclass(eq=False, slots=True)
class Server:
    """One origin server: its settings, whether it takes requests, and the counters logs and metrics read."""

    config: ServerConfig
    backend_name: str
    clock: IReactorTime | None = None
    slow_start: float = 0.0
    up: bool = True
    up_since: float = -1.0  # when it last came up; -1: up from the start (no ramp)
    active: int = 0  # requests assigned and not yet finished
    max_active: int = 0  # the most ``active`` has been
    total: int = 0
    connect_failures: int = 0
    retries: int = 0  # connection attempts that failed here and were tried again
    redispatches: int = 0  # of those, the ones sent on to another server
    bytes_in: int = 0  # bytes written to it for clients: request heads and bodies, WebSocket frames
    bytes_out: int = 0  # bytes read from it: response heads and bodies, WebSocket frames
    responses: dict[int, int] = field(default_factory=dict)
    check_successes: int = 0  # consecutive, from active checks
    check_failures: int = 0
    last_check_problem: str = ""
    last_check: str = ""  # the last active check's result: "passed", "failed", or "" before the first
    last_check_seconds: float = 0.0  # how long it took
    check_results: dict[str, int] = field(default_factory=dict)  # active checks by result, in all
    check_seconds: Histogram = field(default_factory=Histogram, repr=False)
    state_since: float = 0.0  # when ``state`` last changed (the clock's time; 0 without a clock)
    consecutive_errors: int = 0  # from real traffic (passive checks)
    ejected: bool = False  # out for a passive-check cool-off
    draining: bool = False  # set by an operator: takes nothing new, and its WebSocket sessions move away
    maintenance: bool = False  # set by an operator: as draining, and shown as out for maintenance
    watchers: set[ServerWatcher] = field(default_factory=set)  # session-mode WebSockets on this server
    tls: TLSConfig | None = None  # its backend's TLS settings (for a TLS server); None: the defaults
    on_change: Callable[[], None] | None = field(default=None, repr=False)  # told when it may take more or less
    #: What makes two servers' connections interchangeable in a pool (TLS settings included).
    key: tuple[object, ...] = field(init=False)
    name: str = field(init=False)
    weight: int = field(init=False)

    def __post_init__(self) -> None:
        self.set_tls(self.tls)
        self.name = self.config.name
        self.weight = self.config.weight
        if self.clock is not None:
            self.state_since = self.clock.seconds()

    def set_tls(self, tls: TLSConfig | None) -> None:
        """Use ``tls`` for new connections; connections made under other settings are never reused for it."""
        self.tls = tls
        config = self.config
        self.key = (config.host, config.port, config.tls, tls if config.tls else None)

    @property
    def backup(self) -> bool:
        return self.config.backup

    @property
    def maxconn(self) -> int:
        return self.config.maxconn

    @property
    def full(self) -> bool:
        return 0 < self.config.maxconn <= self.active

    @property
    def effective_weight(self) -> float:
        """The weight balancing uses: ramped up over ``slow_start`` after the server comes up."""
        if self.up_since < 0 or not self.slow_start or self.clock is None:
            return float(self.weight)
        ramp = (self.clock.seconds() - self.up_since) / self.slow_start
        if ramp >= 1:
            self.up_since = -1.0
            return float(self.weight)
        return self.weight * max(ramp, 0.05)

    def set_up(self, up: bool) -> None:
        """Mark the server up or down; coming up starts its slow start, going down moves its sessions."""
        if up and not self.up and self.clock is not None:
            self.up_since = self.clock.seconds()
        was_up, before, self.up = self.up, self.state, up
        self._note_state(before)
        USABILITY.bump()
        if was_up and not up:
            self._move_watchers("it is down")
        self._changed()

    def set_draining(self, draining: bool, maintenance: bool = False) -> None:
        """Drain (or stop draining) the server: while draining it takes nothing new and its sessions move.

        ``maintenance`` marks the drain as the operator's "maint" state (HAProxy's word).
        """
        before = self.state
        self.draining = draining
        self.maintenance = maintenance and draining
        self._note_state(before)
        USABILITY.bump()
        if draining:
            self._move_watchers("it is in maintenance" if self.maintenance else "it is draining")
        self._changed()

    @property
    def state(self) -> str:
        """``maint``, ``drain``, ``down`` or ``up``."""
        if self.maintenance:
            return "maint"
        if self.draining:
            return "drain"
        return "up" if self.up else "down"

    def state_seconds(self) -> float:
        """How long the server has been in its current ``state``."""
        return max(0.0, self.clock.seconds() - self.state_since) if self.clock is not None else 0.0

    def take_slot(self) -> None:
        """Count a request or WebSocket assigned to the server."""
        self.active += 1
        self.total += 1
        self.max_active = max(self.max_active, self.active)

    def check_done(self, problem: str | None, seconds: float) -> None:
        """Record an active check's result (None: it passed) and how long it took."""
        result = "passed" if problem is None else "failed"
        self.last_check, self.last_check_seconds = result, seconds
        self.check_results[result] = self.check_results.get(result, 0) + 1
        self.check_seconds.observe(seconds)

    def _note_state(self, before: str) -> None:
        if self.state != before and self.clock is not None:
            self.state_since = self.clock.seconds()

    def _move_watchers(self, why: str) -> None:
        for watcher in list(self.watchers):
            watcher.server_leaving(self, why)

    def set_weight(self, weight: int) -> None:
        self.weight = weight
        USABILITY.bump()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def __str__(self) -> str:
        """``backend/name (http://host:port)``, as log lines and error messages name it."""
        scheme = "https" if self.config.tls else "http"
        return f"{self.backend_name}/{self.name} ({scheme}://{self.config.host}:{self.config.port})"

    def __repr__(self) -> str:
        return f"<Server {self}>"
