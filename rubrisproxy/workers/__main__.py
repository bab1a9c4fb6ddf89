"""A worker process, as the supervisor spawns it: ``python -m rubrisproxy.workers``, the channel its fd 3."""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.logger import globalLogBeginner

from ..logoutput import StreamOutput
from ..mainlog import MainLogObserver
from ._channel import CHANNEL_FD
from ._worker import Worker, WorkerChannelFactory


def main() -> None:
    """Serve as the supervisor says over the channel, until it says stop (``SIGTERM``) or goes away."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor reloads; a stray SIGHUP must not end a worker
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the proxy runs: then it reopens the access log
    observer = MainLogObserver(StreamOutput(sys.stdout))  # the supervisor writes these lines to its log
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    reactor: Any = default_reactor
    worker = Worker(reactor, observer)
    reactor.adoptStreamConnection(CHANNEL_FD, socket.AF_UNIX, WorkerChannelFactory(worker))
    os.close(CHANNEL_FD)  # adopted: the reactor has its own copy

    def terminate(signum: int, frame: object) -> None:
        reactor.callFromThread(worker.terminate)

    def take_signals() -> None:  # after the reactor's own: the supervisor's SIGTERM and systemd's may both come
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, terminate)

    reactor.callWhenRunning(take_signals)
    reactor.run()
    # Stopped: a later SIGTERM (the supervisor's and systemd's both come) must not kill a worker exiting cleanly,
    # and Python's finalisation puts the default action back for signals that have a Python handler.
    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, signal.SIG_IGN)


if __name__ == "__main__":
    main()
