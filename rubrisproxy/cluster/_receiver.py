"""The proxy's whole side of the shared-state seam: what any transport hands its changes to."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..backend import SharedBackends
from ..frontend import Frontend
from ..sharing import Change, Kind


class ProxyReceiver:
    """A ``sharing.StateReceiver`` for the whole proxy: a client session's change goes to its frontend's registry,
    every other to the backends (:class:`~rubrisproxy.backend.SharedBackends`)."""

    def __init__(self, backends: SharedBackends, frontends: Sequence[Frontend]) -> None:
        self._backends = backends
        self._frontends = frontends  # the proxy's own list: a reload changes it in place

    def apply(self, change: Change, only_new: bool = False) -> None:
        if change.kind is not Kind.CLIENT:
            self._backends.apply(change, only_new)
            return
        for frontend in self._frontends:
            if frontend.name == change.backend and frontend.clients is not None:
                frontend.clients.apply(change)

    def admin_states(self) -> Iterable[Change]:
        return self._backends.admin_states()

    def entry(self, kind: Kind, backend: str, key: bytes) -> Change | None:
        return self._backends.entry(kind, backend, key) if kind is not Kind.CLIENT else None
