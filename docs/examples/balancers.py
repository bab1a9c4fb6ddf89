"""An example balancing algorithm for rubrisproxy (see docs/extending.md).

Name its class as a backend's ``balance``::

    [backends.app]
    balance = "balancers.HeaderChoice"
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import implementer

from rubrisproxy.backend import IBalancer, RoundRobin, Server
from rubrisproxy.http import RequestHead


@implementer(IBalancer)
class HeaderChoice:
    """A request naming a server in ``X-Server`` goes there (when it may take requests); others, round robin.

    Handy to reproduce a problem on one server. ``candidates`` holds only servers that are
    up, not draining and not full, so a named server that is down falls back to the rest.
    """

    def __init__(self) -> None:
        self._fallback = RoundRobin()

    def choose(self, candidates: Sequence[Server], request: RequestHead, client_address: str) -> Server:
        wanted = next((v for n, v in request.headers if n.lower() == b"x-server"), None)
        if wanted is not None:
            for server in candidates:
                if server.name.encode() == wanted:
                    return server
        return self._fallback.choose(candidates, request, client_address)
