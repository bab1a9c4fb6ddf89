"""The new process of a live upgrade as the old one starts it, and twistd's pidfile across the switch."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from ._channel import SOCKET_ENV


class Spawner(Protocol):
    """What starts the new process (a real one, or in tests another proxy in this one)."""

    def spawn(self, socket_path: str, ended: Callable[[str | None], None]) -> None:
        """Start it, telling it ``socket_path``; ``ended(why)`` when it exits (``why`` None: with status 0, as
        twistd's first process does when it daemonizes)."""

    def kill(self) -> None:
        """End it, if it still runs."""


class _Watch(ProcessProtocol):
    def __init__(self, ended: Callable[[str | None], None]) -> None:
        self.ended = ended

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.ended(None)
        else:
            self.ended(f"it exited: {reason.getErrorMessage()}")


class ProcessSpawner:
    """Starts the command line this process was started with (``sys.orig_argv``, the interpreter being this
    one), from the code installed now, in the same directory, with the same standard streams (under ``-n``
    it logs where this one does), and :data:`SOCKET_ENV` in its environment."""

    def __init__(self, reactor: Any, argv: list[str] | None = None) -> None:
        self.reactor = reactor
        self.argv = argv if argv is not None else [sys.executable, *sys.orig_argv[1:]]
        self.process: Any = None

    def spawn(self, socket_path: str, ended: Callable[[str | None], None]) -> None:
        env = dict(os.environ)
        env[SOCKET_ENV] = socket_path
        self.process = self.reactor.spawnProcess(_Watch(ended), self.argv[0], self.argv, env=env,
                                                 childFDs={0: 0, 1: 1, 2: 2})

    def kill(self) -> None:
        if self.process is not None and self.process.pid is not None:
            self.process.signalProcess("KILL")


class Pidfile:
    """twistd's pidfile across an upgrade. The new twistd refuses to start while the file names a running
    process, so it is removed before the new one starts (:meth:`hide`) and written back if the upgrade fails
    (:meth:`restore`); once the new process has taken over, the file is its own and this twistd must not
    remove it as it exits (:meth:`hand_over`). ``options`` are twistd's (``ServerOptions``: ``pidfile``)."""

    def __init__(self, options: MutableMapping[str, Any]) -> None:
        self.options = options
        self._hidden: str | None = None

    def hide(self) -> None:
        path = self.options.get("pidfile")
        if not path:
            return
        try:
            with open(path) as f:
                mine = f.read().strip() == str(os.getpid())
        except (OSError, ValueError):
            return
        if mine:
            os.unlink(path)
            self._hidden = path

    def restore(self) -> None:
        if self._hidden is not None:
            with open(self._hidden, "w") as f:
                f.write(f"{os.getpid()}\n")
            self._hidden = None

    def hand_over(self) -> None:
        self._hidden = None
        self.options["pidfile"] = ""
