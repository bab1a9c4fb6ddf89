"""A backend's servers and the order in which they are tried."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

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

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def key(self) -> tuple[str, int, bool]:
        """What makes two servers' connections interchangeable in a pool."""
        return (self.config.host, self.config.port, self.config.tls)

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

    def attempts(self) -> Iterator[Server]:
        """Servers for one request: the next in turn, then others on failure, ``1 + retries`` in all."""
        count = len(self.servers)
        if not count:
            return
        start = self._next % count
        self._next = start + 1
        for attempt in range(1 + self.retries):
            yield self.servers[(start + attempt) % count]
