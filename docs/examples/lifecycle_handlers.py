"""Example lifecycle handlers for rubrisproxy (see docs/extending.md).

Name them in a frontend's ``handlers`` list::

    [frontends.web]
    handlers = [
        { class = "lifecycle_handlers.SourceLimit", limit = 100, networks = ["10.0.0.0/8"] },
        "lifecycle_handlers.SessionAudit",
    ]
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from twisted.logger import Logger
from zope.interface import implementer

from rubrisproxy.lifecycle import (
    ConnectionEnd,
    ConnectionInfo,
    IClientHandler,
    IConnectionHandler,
    ITerminationHandler,
    RefuseConnection,
    SessionEnd,
)


@implementer(IConnectionHandler, ITerminationHandler)
class SourceLimit:
    """Refuse connections whose TCP peer (``info.peer``) is outside ``networks`` (when given), or already has
    ``limit`` connections open.

    It keys on the peer, not the client: on a proxied frontend (a load balancer in front, with or without the
    PROXY protocol) the peer is the balancer, so the networks and the limit apply to it; the source a PROXY
    header names is ``info.source``.

    The termination handler is what makes the count right: it is called exactly once per
    connection, refused ones included.
    """

    def __init__(self, limit: int = 100, networks: list[str] | None = None) -> None:
        self.limit = limit
        self.networks = [ipaddress.ip_network(n) for n in networks or ()]
        self.open: Counter[str] = Counter()

    def connection_opened(self, connection: ConnectionInfo) -> None:
        source = connection.peer
        self.open[source] += 1  # counted even if refused: its end is reported too
        if self.networks and not any(ipaddress.ip_address(source) in n for n in self.networks):
            raise RefuseConnection(f"{source} is not in an allowed network")
        if self.open[source] > self.limit:
            raise RefuseConnection(f"{source} already has {self.limit} connections")

    def connection_ended(self, connection: ConnectionInfo, reason: ConnectionEnd) -> None:
        self.open[connection.peer] -= 1
        if not self.open[connection.peer]:
            del self.open[connection.peer]


@implementer(IClientHandler)
class SessionAudit:
    """Log each client session that ends, with how long it lived and how many requests it made."""

    log = Logger()

    def __init__(self) -> None:
        self.ended: Counter[str] = Counter()

    def client_destroyed(self, session, reason: SessionEnd) -> None:  # type: ignore[no-untyped-def]
        self.ended[reason.value] += 1
        self.log.info(
            "client {id} ended ({reason}) after {seconds:.1f}s, {requests} requests on {connections} connections",
            id=session.id, reason=reason.value, seconds=session.last_activity - session.created_at,
            requests=session.requests, connections=session.connections,
        )
