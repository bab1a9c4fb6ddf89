"""Live connections carried to another rubrisproxy process in an upgrade: the seam's plain data and protocols.

The old process offers each connection, at a point where it may move, to a :class:`Carrier` (the
upgrade's channel) as a :class:`Carried`: its kind, the version of its record, the frontend it belongs
to, the record (JSON-encodable) and its sockets. The new process gives it to the :class:`Adopter` of its
kind, which rebuilds the connection or refuses it (:class:`Refused`); a refused connection stays, and
goes on being served, where it was. Bottom layer: plain data and typing protocols only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from twisted.internet.defer import Deferred

#: A read gate's reason while its connection is being carried to another process: nothing more is read here
#: (what was read goes in the record); a refused carry resumes it.
CARRYING = "carrying"


class Kind(StrEnum):
    """What a carried connection is."""

    HTTP = "http"  # an HTTP/1.1 keep-alive connection between requests
    TUNNEL = "tunnel"  # a tunnel-mode WebSocket or a CONNECT tunnel: the client's and the server's sockets
    SESSION = "session"  # a session-mode WebSocket at a message boundary


class Outcome(StrEnum):
    """What became of a connection in an upgrade: counted per kind."""

    MOVED = "moved"  # adopted by the new process
    KEPT = "kept"  # served on by the old process (refused, or it could not move) until it ended
    CLOSED = "closed"  # still in the old process at the deadline, closed as a graceful stop closes it


@dataclass(frozen=True)
class Carried:
    """One connection as it crosses between processes.

    ``sockets`` are file descriptors, the client's first; ``record`` is what the
    kind's adopter needs to rebuild it (JSON-encodable: str, int, float, bool, None,
    lists, dicts; bytes as latin-1 strings or base64, as the kind's record says).
    """

    kind: Kind
    version: int
    frontend: str
    record: Mapping[str, object]
    sockets: tuple[int, ...]


class Refused(Exception):
    """The new process cannot take this connection (an unknown kind or version, a frontend it lacks)."""


class Carrier(Protocol):
    """Where the old process sends a connection it hands over.

    It guarantees: ``carried.sockets`` stay open in this process until the Deferred fires (they are
    sent with the record); the Deferred never fails; a True means the new process holds its copies
    and has rebuilt the connection, and the connection is counted moved; a False (refused, the channel
    gone) means nothing changed in the new process, and the connection is counted kept.
    """

    def carry(self, carried: Carried) -> Deferred[bool]:
        """Send ``carried``: True once the new process adopted it (this process then lets go of its sockets
        without shutting them down), False if it was refused (this process keeps serving it)."""

    def keep(self, kind: Kind, why: str) -> None:
        """A connection of ``kind`` that cannot move (TLS, HTTP/2, a half-closed tunnel...) stays: counted kept."""


@runtime_checkable
class Movable(Protocol):
    """A live connection that can be asked to move (a client connection, a tunnel, a session)."""

    def move(self, carrier: Carrier) -> None:
        """Move through ``carrier`` at its next point where it may, or stay (and say so through ``carrier``'s
        owner) if it cannot."""


class Adopter(Protocol):
    """The new process's side of one kind: a connection rebuilt from its record and sockets."""

    kind: Kind

    @property
    def versions(self) -> frozenset[int]:
        """The record versions it reads."""

    def adopt(self, carried: Carried) -> None:
        """Take ``carried`` over (its sockets are this process's now), or raise :class:`Refused`."""


class Adopters:
    """The new process's adopters, one per kind: the one place a kind is registered (``add``), and what the
    channel asks (``reads`` for the hand-over's greeting, ``adopt`` for each connection)."""

    def __init__(self) -> None:
        self.by_kind: dict[Kind, Adopter] = {}

    def add(self, adopter: Adopter) -> None:
        """Register ``adopter`` for its kind (a second one for a kind replaces the first)."""
        self.by_kind[adopter.kind] = adopter

    def reads(self) -> dict[str, list[int]]:
        """The record versions read, by kind: what the new process tells the old one first."""
        return {kind.value: sorted(adopter.versions) for kind, adopter in self.by_kind.items()}

    def adopt(self, carried: Carried) -> None:
        """Hand ``carried`` to its kind's adopter; :class:`Refused` for a kind or version none reads."""
        adopter = self.by_kind.get(carried.kind)
        if adopter is None:
            raise Refused(f"no adopter for {carried.kind.value} connections")
        if carried.version not in adopter.versions:
            raise Refused(f"{carried.kind.value} record version {carried.version} is not read here")
        adopter.adopt(carried)


class UpgradeUnderWay(Exception):
    """An upgrade was asked for while one is under way: only one at a time (the admin API's 409)."""


class Upgrades(Protocol):
    """What the admin API and metrics read and ask of the live upgrade (the wiring's ``upgrade.Upgrader``)."""

    def start(self) -> Deferred[dict[str, Any]]:
        """Start an upgrade: fires with ``{"pid": NEW}`` once the new process has taken the listeners, fails
        with the reason it could not (:class:`UpgradeUnderWay` if one is under way already)."""

    def status(self) -> dict[str, Any]:
        """Its state and counts, as ``GET /upgrade`` shows them."""

    def counts(self) -> Mapping[tuple[Kind, Outcome], int]:
        """Connections by kind and outcome: this process's hand-over, or the one that started it."""
