"""Route matching: which backend a request goes to, or which status refuses it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from .backend import Backend
from .config import RouteConfig
from .http import RequestHead, resolve, route_host

Condition = Callable[[RequestHead, bytes, bytes], bool]  # (head, host, path)
#: A route as matched: its conditions, its backend or the status it refuses with, its configuration.
_Entry = tuple[list[Condition], "Backend | int", RouteConfig]


def _target(route: RouteConfig, backends: Mapping[str, Backend]) -> Backend | int:
    if route.backend:
        return backends[route.backend]
    assert route.deny is not None  # the config has one or the other
    return route.deny


class Router:
    """A frontend's ordered routes; the first whose conditions all hold decides, else the default backend."""

    def __init__(self, routes: Sequence[RouteConfig], backends: Mapping[str, Backend], default: Backend) -> None:
        self.default = default
        self.trivial = not routes  # every request goes to ``default``
        self._routes: list[_Entry] = [(_conditions(route), _target(route, backends), route) for route in routes]

    def table(self) -> list[tuple[RouteConfig, Backend | int]]:
        """The routes in order, each with its backend or the status it refuses with (for the stats page)."""
        return [(route, target) for _, target, route in self._routes]

    def route(self, head: RequestHead) -> Backend | int:
        """The backend for ``head``, or the status to refuse it with.

        Raises :class:`~rubrisproxy.http.HTTPError` (400) for a target no route can read.
        """
        if not self._routes:
            return self.default
        match = self._match(head)
        return self.default if match is None else match[1]

    def choose(self, head: RequestHead) -> tuple[Backend | int, int]:
        """As :meth:`route`, with the index of the route that matched (-1: none, the default backend)."""
        index = self._index(head)
        return (self.default, -1) if index < 0 else (self._routes[index][1], index)

    def websocket_rules(self, head: RequestHead, backend: Backend) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The (allowed origins, allowed subprotocols) for an upgrade: the matching route's, else the backend's."""
        match = self._match(head) if self._routes else None
        route = match[2] if match is not None else None
        config = backend.websocket
        origins = route.origins if route is not None and route.origins else config.origins
        subprotocols = route.subprotocols if route is not None and route.subprotocols else config.subprotocols
        return origins, subprotocols

    def _match(self, head: RequestHead) -> _Entry | None:
        index = self._index(head)
        return None if index < 0 else self._routes[index]

    def _index(self, head: RequestHead) -> int:
        """The index of the first route whose conditions all hold, -1 if none does."""
        target = resolve(head)  # the normalised host and path, as the origin will receive them
        host, path = target.route_host, target.route_path
        for index, entry in enumerate(self._routes):
            if all(condition(head, host, path) for condition in entry[0]):
                return index
        return -1


def is_websocket_upgrade(head: RequestHead) -> bool:
    """``Connection: upgrade`` with ``Upgrade: websocket``."""
    if b"upgrade" not in head.connection:
        return False
    return any(name.lower() == b"upgrade" and value.strip().lower() == b"websocket" for name, value in head.headers)


def offered_subprotocols(head: RequestHead) -> list[bytes]:
    """The subprotocols a WebSocket upgrade offers, in order."""
    return [
        token.strip()
        for name, value in head.headers
        if name.lower() == b"sec-websocket-protocol"
        for token in value.split(b",")
        if token.strip()
    ]


def _conditions(route: RouteConfig) -> list[Condition]:
    conditions: list[Condition] = []
    if route.host is not None:
        exact = route_host(route.host.encode())
        conditions.append(lambda head, host, path: host == exact)
    if route.host_suffix is not None:
        suffix = route_host(route.host_suffix.encode())
        conditions.append(lambda head, host, path: host.endswith(suffix))
    if route.host_prefix is not None:
        prefix = route.host_prefix.lower().encode()
        conditions.append(lambda head, host, path: host.startswith(prefix))
    if route.path_prefix is not None:
        path_prefix = route.path_prefix.encode()
        conditions.append(lambda head, host, path: path.startswith(path_prefix))
    if route.path_regex is not None:
        pattern = re.compile(route.path_regex.encode())
        conditions.append(lambda head, host, path: pattern.search(path) is not None)
    if route.header is not None:
        name = route.header.lower().encode()
        wanted = route.value.encode() if route.value is not None else None
        conditions.append(
            lambda head, host, path: any(
                n.lower() == name and (wanted is None or v == wanted) for n, v in head.headers
            )
        )
    if route.methods:
        methods = frozenset(m.encode() for m in route.methods)
        conditions.append(lambda head, host, path: head.method in methods)
    if route.websocket is not None:
        websocket = route.websocket
        conditions.append(lambda head, host, path: is_websocket_upgrade(head) == websocket)
    if route.subprotocol is not None:
        subprotocol = route.subprotocol.encode()
        conditions.append(lambda head, host, path: subprotocol in offered_subprotocols(head))
    return conditions
