"""A backend's WebSocket pieces, built above the backend: its hooks and its session legs' factories."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from ..config import BackendConfig
from ._hooks import IWebSocketHook, build_hooks
from ._legs import LegFactories


class BackendWebSocket:
    """What a backend keeps for the WebSocket upgrades routed to it, built from its configuration: the user's hooks
    (built anew whenever the backend is reconfigured) and its session-mode legs' factories (built on first use,
    kept while its ``[websocket]`` table stays as it was: sessions open already keep theirs)."""

    def __init__(self, clock: IReactorTime, config: BackendConfig, previous: object = None) -> None:
        self.hooks: tuple[IWebSocketHook, ...] = build_hooks(
            f"backends.{config.name}.websocket.hooks", config.websocket.hooks)
        self._clock = clock
        self._config = config.websocket
        self._factories: LegFactories | None = None
        if isinstance(previous, BackendWebSocket) and previous._config == config.websocket:
            self._factories = previous._factories

    def leg_factories(self) -> LegFactories:
        """The Autobahn factories for the backend's session-mode WebSockets."""
        if self._factories is None:
            self._factories = LegFactories(self._config, self._clock)
        return self._factories
