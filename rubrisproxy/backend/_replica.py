"""The proxy's side of the shared-state seam (``sharing.StateReceiver``): admin changes made here published,
and every change made elsewhere applied to the backend it names."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime

from ..sharing import Change, Kind, StateTransport
from ._backend import Backend
from ._server import Server
from ._shared import SharedStickStore

#: The admin states a SERVER change carries, and the backend call that puts a server in each.
ADMIN_ACTIONS = {"ready": Backend.ready_server, "drain": Backend.drain_server, "maint": Backend.maint_server}


def admin_state(server: Server) -> str:
    """``maint``, ``drain`` or ``ready``: what an operator last set on ``server``."""
    if server.maintenance:
        return "maint"
    return "drain" if server.draining else "ready"


class SharedBackends:
    """The proxy's side of the shared-state seam (``sharing.StateReceiver``): the admin changes made here are
    published (:meth:`admin_changed`, called by the admin API), and every change made elsewhere is applied to
    the backend it names: a stick or sid entry to its store, an admin state through the same backend calls the
    admin API makes (so it is logged, and sessions move, as if made here). A server's admin state is the last
    one set anywhere (by ``at``)."""

    def __init__(self, backends: dict[str, Backend], transport: StateTransport, clock: IReactorTime) -> None:
        self._backends = backends  # the proxy's own dict: a reload changes it in place
        self._transport = transport
        self._clock = clock
        self._admin: dict[tuple[str, str], Change] = {}  # the last admin change known, per backend and server

    def admin_changed(self, backend: Backend, server: Server) -> None:
        """An operator set ``server``'s admin state or weight here: the others are told."""
        change = Change(Kind.SERVER, backend.name, server.name.encode(), admin_state(server), server.weight,
                        at=self._clock.seconds())
        self._admin[(backend.name, server.name)] = change
        self._transport.publish(change)

    def admin_states(self) -> Iterable[Change]:
        return list(self._admin.values())

    def apply(self, change: Change, only_new: bool = False) -> None:
        backend = self._backends.get(change.backend)
        if backend is None:
            return
        if change.kind is Kind.SERVER:
            self._apply_admin(backend, change)
            return
        store = self._store(backend, change.kind)
        if store is not None:
            store.apply(change, only_new)

    def entry(self, kind: Kind, backend: str, key: bytes) -> Change | None:
        named = self._backends.get(backend)
        store = self._store(named, kind) if named is not None else None
        return store.entry(key) if store is not None else None

    @staticmethod
    def _store(backend: Backend, kind: Kind) -> SharedStickStore | None:
        """``backend``'s shared store of ``kind`` (STICK: its stick table's; SID: its learned sids'), if it has one."""
        store = backend.table.store if kind is Kind.STICK and backend.table is not None else (
            backend.engineio.store if kind is Kind.SID and backend.engineio is not None else None)
        return store if isinstance(store, SharedStickStore) else None

    def _apply_admin(self, backend: Backend, change: Change) -> None:
        name = change.key.decode("utf-8", "replace")
        known = self._admin.get((backend.name, name))
        server = backend.server_named(name)
        if server is None or (known is not None and known.at >= change.at) or change.value not in ADMIN_ACTIONS:
            return
        self._admin[(backend.name, name)] = change
        if admin_state(server) != change.value:
            ADMIN_ACTIONS[change.value](backend, name)
        if 0 <= change.weight <= 256 and change.weight != server.weight:
            backend.set_server_weight(name, change.weight)
