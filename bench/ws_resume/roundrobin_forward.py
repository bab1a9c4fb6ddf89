"""Baseline relay for bench/ws_resume.py: a TCP forwarder alternating new connections over two backends.

    python bench/ws_resume/roundrobin_forward.py PORT A_PORT B_PORT

twisted.protocols.portforward with a round-robin choice of origin per connection: like HAProxy or
nginx in TCP mode, a client whose backend dies is dropped with it. Prints one line per accepted
connection, ``CLIENT_PORT A|B``, so the bench can tell which backend each client was on.
"""

from __future__ import annotations

import sys
from itertools import cycle

from twisted.internet import reactor
from twisted.internet.interfaces import IAddress
from twisted.protocols import portforward


class NoDelayServer(portforward.ProxyServer):
    """portforward.ProxyServer with TCP_NODELAY on both its connections, as HAProxy and nginx set it."""

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
        super().connectionMade()

    def setPeer(self, peer: portforward.Proxy | None) -> None:
        super().setPeer(peer)
        if peer is not None and peer.transport is not None:
            peer.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]


class RoundRobinFactory(portforward.ProxyFactory):
    """portforward.ProxyFactory whose origin alternates between two ports, one per new connection."""

    protocol = NoDelayServer

    def __init__(self, ports: dict[str, int]) -> None:
        super().__init__("127.0.0.1", 0)
        self.choices = cycle(ports.items())

    def buildProtocol(self, addr: IAddress | None) -> portforward.ProxyServer | None:
        name, self.port = next(self.choices)  # ProxyServer.connectionMade, right after, connects to factory.port
        print(getattr(addr, "port", "?"), name, flush=True)
        return super().buildProtocol(addr)


def main(port: int, a_port: int, b_port: int) -> None:
    factory = RoundRobinFactory({"A": a_port, "B": b_port})
    reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=1024)  # type: ignore[arg-type]
    reactor.run()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
