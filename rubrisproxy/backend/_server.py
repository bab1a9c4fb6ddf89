"""A backend's servers and the order in which they are tried."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import BackendConfig, ServerConfig


@dataclass(eq=False, slots=True)
class Server:
    """One origin server, with the counters logs and metrics read."""

    config: ServerConfig
    backend_name: str
    active: int = 0
    total: int = 0
    connect_failures: int = 0
    responses: dict[int, int] = field(default_factory=dict)
    #: What makes two servers' connections interchangeable in a pool.
    key: tuple[str, int, bool] = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.config.host, self.config.port, self.config.tls)
        self.name = self.config.name

    def __repr__(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"<Server {self.backend_name}/{self.name} {scheme}://{self.config.host}:{self.config.port}>"


class Backend:
    """A named group of servers that requests are balanced over (round robin)."""

    def __init__(self, config: BackendConfig) -> None:
        self.name = config.name
        self.retries = config.retries
        self.servers: list[Server] = [Server(s, config.name) for s in config.servers]
        self._next = 0

    def add_server(self, config: ServerConfig) -> Server:
        server = Server(config, self.name)
        self.servers.append(server)
        return server

    def pick(self) -> Server | None:
        """The server for a new request: the next in turn."""
        servers = self.servers
        if not servers:
            return None
        index = self._next % len(servers)
        self._next = index + 1
        return servers[index]

    def next_after(self, server: Server) -> Server | None:
        """The server to try when ``server`` could not be reached (the next one along)."""
        servers = self.servers
        if not servers:
            return None
        try:
            return servers[(servers.index(server) + 1) % len(servers)]
        except ValueError:
            return self.pick()
