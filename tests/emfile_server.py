"""Run as a script by a test: a listener that runs out of file descriptors while clients keep arriving.

``python -m tests.emfile_server guarded|plain SECONDS``: listens on 127.0.0.1 and prints its port; lowers
RLIMIT_NOFILE to a few descriptors more than are open; holds every connection it accepts until half time, then
lets them go; runs for SECONDS and prints {"accepted": n, "lines": [...]} (every log line, as text) as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher

from rubrisproxy.accepting import back_off_when_exhausted


def main() -> None:
    mode, seconds = sys.argv[1], float(sys.argv[2])
    lines: list[str] = []
    globalLogPublisher.addObserver(lambda event: lines.append(formatEvent(event)))
    held: list[Protocol] = []
    count = [0]

    class Held(Protocol):
        def connectionMade(self) -> None:
            count[0] += 1
            held.append(self)  # its descriptor stays taken

    def let_go() -> None:
        for protocol in held:
            protocol.transport.abortConnection()
        held.clear()
        Held.connectionMade = lambda self: (count.__setitem__(0, count[0] + 1), self.transport.loseConnection())

    factory = Factory.forProtocol(Held)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1000)
    if mode == "guarded":
        back_off_when_exhausted(port, reactor, "test listener")
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(port.getHost().port, flush=True)
    reactor.callLater(seconds / 2, let_go)
    reactor.callLater(seconds, reactor.stop)
    reactor.run()
    print(json.dumps({"accepted": count[0], "lines": lines}))


if __name__ == "__main__":
    main()
