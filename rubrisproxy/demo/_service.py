"""The demo's services: two origins that become the servers of the backends with none, and the stats page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ..backend import Backend
from ..config import ServerConfig
from ..listening import ListeningService, ListenSettings
from ._origin import RESTART_DELAY, DemoOrigin, OriginState

#: The demo origins' names; each is the server ``demo-NAME`` of the demo's backends.
ORIGIN_NAMES = ("a", "b")


def http_url(ports: list[IListeningPort]) -> str | None:
    """The URL of the first of ``ports`` that listens on TCP, or None."""
    for port in ports:
        address = port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        if host is not None and number is not None:
            host = "127.0.0.1" if host in ("0.0.0.0", "") else host
            return f"http://[{host}]:{number}/" if ":" in host else f"http://{host}:{number}/"
    return None


class DemoService(service.Service):
    """Runs the demo origins on free loopback ports and makes them the servers of the backends it serves."""

    log = Logger()

    def __init__(self, reactor: Any, public_urls: tuple[str, ...], restart_delay: float = RESTART_DELAY) -> None:
        self.backends: list[Backend] = []
        self.public_urls = public_urls
        self._stats_ports: Callable[[], list[IListeningPort]] = list
        self.origins = [
            DemoOrigin(name, reactor, restart_delay, lambda: http_url(self._stats_ports()))
            for name in ORIGIN_NAMES
        ]
        self.setName("demo")

    def serve(self, backends: list[Backend]) -> None:
        """Make the demo origins the only servers of ``backends`` (once they start)."""
        for backend in backends:
            backend.servers.clear()
        self.backends = backends

    def link_stats(self, admin: Any) -> None:
        """Link the page to the stats page of ``admin`` (a service whose ``ports`` are its listeners)."""
        self._stats_ports = lambda: admin.ports

    def privilegedStartService(self) -> None:
        # Listen before the frontends start so the first request already has a server.
        self._start_origins()
        super().privilegedStartService()

    def startService(self) -> None:
        if any(origin.state is OriginState.IDLE for origin in self.origins):  # not started by twistd
            self._start_origins()
        super().startService()

    def _start_origins(self) -> None:
        for origin in self.origins:
            port = origin.start()
            for backend in self.backends:
                backend.add_server(ServerConfig(name=f"demo-{origin.name}", host="127.0.0.1", port=port))
            self.log.info("no backend configured: proxying to the built-in demo origin {name} on 127.0.0.1:{port}",
                          name=origin.name, port=port)
        for url in self.public_urls:
            self.log.info("demo: open {url}", url=url)

    def stopService(self):
        super().stopService()
        return defer.gatherResults([origin.shut() for origin in self.origins])


class DemoAdminService(ListeningService):
    """The admin listener the demo opens when none is configured; a port already taken is a warning, not an
    exit (the demo works without its stats page)."""

    def __init__(self, reactor: Any, site: Any, endpoint: str) -> None:
        super().__init__(reactor, "admin", site, ListenSettings((endpoint,), key="admin"), required=False)

    def said_listening(self, port: IListeningPort, description: str) -> None:
        self.log.info("demo: stats page and admin API on {url} (only in demo mode; --admin sets another)",
                      url=http_url(self.ports))

    def unavailable(self, description: str, why: str) -> None:
        self.log.warn("demo: no stats page: cannot listen on {endpoint}: {why} (--admin sets another)",
                      endpoint=description, why=why)
