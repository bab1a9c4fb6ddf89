"""What an operator does to a backend's servers at run time (the admin API, and a cluster's other nodes):
drain, maintenance, weight, removal, ready."""

from __future__ import annotations

from twisted.logger import Logger

from ._server import USABILITY, Server


class ServerActions:
    """The operator's actions on the servers of a :class:`~rubrisproxy.backend.Backend`, by server name; an
    unknown name raises KeyError."""

    name: str
    servers: list[Server]
    log: Logger

    def drain_server(self, name: str) -> Server:
        """Drain server ``name``: it takes no new requests or sessions, and its WebSocket sessions move to
        other servers without losing a message. Raises KeyError for an unknown name."""
        server = self._named(name)
        server.set_draining(True)
        self.log.info("server {backend}/{server} is DRAINING: moving {count} sessions",
                      backend=self.name, server=name, count=len(server.watchers))
        return server

    def maint_server(self, name: str) -> Server:
        """Put server ``name`` in maintenance: drained as :meth:`drain_server` does, and shown as ``maint``."""
        server = self._named(name)
        server.set_draining(True, maintenance=True)
        self.log.info("server {backend}/{server} is in MAINT: moving {count} sessions",
                      backend=self.name, server=name, count=len(server.watchers))
        return server

    def set_server_weight(self, name: str, weight: object) -> Server:
        """Change server ``name``'s weight (0..256; 0 takes no new requests); anything else is a ValueError."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256:
            raise ValueError(f"weight must be an integer from 0 to 256, got {weight!r}")
        server = self._named(name)
        server.set_weight(weight)
        self.log.info("server {backend}/{server} weight is now {weight}", backend=self.name, server=name, weight=weight)
        return server

    def remove_server(self, name: str) -> Server:
        """Take server ``name`` out: nothing new goes to it, its sessions move, what it is serving finishes."""
        server = self._named(name)
        self.servers.remove(server)
        USABILITY.bump()
        server.set_draining(True)
        self.log.info("server {backend}/{server} REMOVED", backend=self.name, server=name)
        return server

    def ready_server(self, name: str) -> Server:
        """Let a drained server take requests and sessions again."""
        server = self._named(name)
        server.set_draining(False)
        self.log.info("server {backend}/{server} is READY", backend=self.name, server=name)
        return server

    def _named(self, name: str) -> Server:
        server = self.server_named(name)
        if server is None:
            raise KeyError(f"backend {self.name} has no server {name!r}")
        return server

    def server_named(self, name: str) -> Server | None:
        for server in self.servers:
            if server.name == name:
                return server
        return None
