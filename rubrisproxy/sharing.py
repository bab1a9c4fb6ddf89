"""The shared-state seam: what the proxy's balancing state hands to, and takes from, other proxies.

Some state is worth sharing between the processes that serve one site (several worker processes, or several
nodes): stick-table entries, the Engine.IO sids learned from handshakes, the admin state operators set on
servers (drain, maint, ready, weight), and client sessions (whose end one process reports). Each local change becomes a :class:`Change`, given to a
:class:`StateTransport`'s ``publish``, which never blocks and never fails (a transport that cannot send keeps
what it can, bounded, and drops the rest); each change made elsewhere reaches the :class:`StateReceiver`'s
``apply``. State is pushed: nothing on a request's path waits for a transport, but for a request carrying an Engine.IO sid
this proxy does not know, which may ask (``lookup``; once per sid, bounded in time and number) in case its
handshake was answered elsewhere an instant before the push could arrive.

A transport (Redis, the worker channel) implements :class:`StateTransport`; the proxy's side is
``cluster.ProxyReceiver`` (backends' state to ``backend.SharedBackends``, client sessions to their
``clients.ClientRegistry``). The wiring layer builds the transport and connects the two:
``transport.attach(receiver)`` then ``transport.start()``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol


class Kind(enum.Enum):
    """What a change is about."""

    STICK = "stick"  # a stick-table entry: key -> server name
    SID = "sid"  # a learned Engine.IO sid: sid -> server name ("" once its server is gone)
    SERVER = "server"  # a server's admin state and weight
    CLIENT = "client"  # a client session's owner, or its end (``clients.ClientRegistry``)


@dataclass(frozen=True, slots=True)
class Change:
    """One change of shared state.

    ``backend`` is the backend's name (the frontend's for CLIENT). ``key`` is the stick key or the sid (bytes as the
    request carried them), the server's name (SERVER) or the session's id (CLIENT). ``value`` is the server's name
    (STICK, SID), the admin state ``ready``, ``drain`` or ``maint`` (SERVER), or what ``clients`` says (CLIENT).
    ``weight`` is a SERVER change's weight; ``expire`` how long a STICK or SID entry lives (seconds);
    ``at`` when the change was made (the clock's wall time: between SERVER changes, the later one wins).
    """

    kind: Kind
    backend: str
    key: bytes
    value: str
    weight: int = -1
    expire: float = 0.0
    at: float = 0.0


class StateReceiver(Protocol):
    """The proxy's side of the seam: applies changes made elsewhere, and says what it holds."""

    def apply(self, change: Change, only_new: bool = False) -> None:
        """A change made by another proxy: applied locally, never published again. ``only_new``: a STICK or SID
        entry read back when a transport (re)connects, kept only where this proxy has none for its key."""

    def admin_states(self) -> Iterable[Change]:
        """The SERVER changes this proxy knows of (its own and others'), for a transport to compare with what it
        finds when it (re)connects: the later of each pair wins."""

    def entry(self, kind: Kind, backend: str, key: bytes) -> Change | None:
        """The STICK or SID entry this proxy holds for ``key`` of ``backend`` (made here or elsewhere), for a
        transport that answers the others' lookups itself; None if it holds none."""


class StateTransport(Protocol):
    """Carries changes between proxies (Redis for several nodes; the worker channel for one machine's workers)."""

    def attach(self, receiver: StateReceiver) -> None:
        """Where changes made elsewhere go (once, before :meth:`start`)."""

    def publish(self, change: Change) -> None:
        """Send a local change to the others: returns at once, never raises; bounded (when it cannot keep up or
        is cut off, the oldest unsent changes are dropped, and counted)."""

    def lookup(self, kind: Kind, backend: str, key: bytes, answer: Callable[[Change | None], None]) -> bool:
        """Ask for an entry this proxy does not hold (a sid whose handshake another proxy answered an instant
        ago, before its push arrived): ``answer`` gets it, or None, within a bounded wait. Returns False, and
        never calls ``answer``, when it cannot ask now (cut off, or too many questions in flight)."""

    def start(self) -> None:
        """Connect (and keep reconnecting): from then on, changes flow both ways."""

    def stop(self) -> None:
        """Disconnect for good."""
