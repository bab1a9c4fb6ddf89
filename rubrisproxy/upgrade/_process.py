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

STDERR_ENV = "RUBRISPROXY_UPGRADE_STDERR"
"""Names the descriptor holding the old process's standard error, which the new process makes its own once it
has started (:func:`restore_stderr`); until then its standard error is a pipe the old process reads."""

_TAIL = 4096  # what is kept of the new process's standard error: its last line is the failure's reason


class Spawner(Protocol):
    """What starts the new process (a real one, or in tests another proxy in this one)."""

    def spawn(self, socket_path: str, ended: Callable[[str | None], None]) -> None:
        """Start it, telling it ``socket_path``; ``ended(why)`` when it exits (``why`` None: with status 0, as
        twistd's first process does when it daemonizes)."""

    def kill(self) -> None:
        """End it, if it still runs."""


class _Watch(ProcessProtocol):
    """Watches the new process: passes on what it writes to standard error while it starts, and names its last
    line when it fails (the key that does not validate, the exception), whatever this process's stderr is."""

    def __init__(self, ended: Callable[[str | None], None], stderr: int = 2) -> None:
        self.ended = ended
        self.stderr = stderr
        self.tail = b""

    def errReceived(self, data: bytes) -> None:
        try:
            os.write(self.stderr, data)
        except OSError:
            pass  # the reason is kept below even when this process's stderr is gone
        self.tail = (self.tail + data)[-_TAIL:]

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.ended(None)
            return
        why = f"it exited: {reason.getErrorMessage()}"
        lines = [line.strip() for line in self.tail.decode("utf-8", "replace").splitlines() if line.strip()]
        self.ended(f"{why} {lines[-1]}" if lines else why)


def restore_stderr(environ: MutableMapping[str, str]) -> None:
    """In a new process started by a live upgrade, once it has started: make the old process's standard error
    its own again (the pipe the old process reads while it starts would break as that process exits)."""
    fd = environ.pop(STDERR_ENV, None)
    if fd is None or not fd.isdigit():
        return
    try:
        os.dup2(int(fd), 2)
        os.close(int(fd))
    except OSError:
        pass  # not inherited (started by hand with the variable set): keep the stderr it has


class ProcessSpawner:
    """Starts the command line this process was started with (``sys.orig_argv``, the interpreter being this
    one), from the code installed now, in the same directory, with the same standard streams (under ``-n``
    it logs where this one does; while it starts, its standard error passes through this process, whose log
    names its last line if it fails), and :data:`SOCKET_ENV` in its environment."""

    def __init__(self, reactor: Any, argv: list[str] | None = None) -> None:
        self.reactor = reactor
        self.argv = argv if argv is not None else [sys.executable, *sys.orig_argv[1:]]
        self.process: Any = None

    def spawn(self, socket_path: str, ended: Callable[[str | None], None]) -> None:
        env = dict(os.environ)
        env[SOCKET_ENV] = socket_path
        env[STDERR_ENV] = "3"
        self.process = self.reactor.spawnProcess(_Watch(ended), self.argv[0], self.argv, env=env,
                                                 childFDs={0: 0, 1: 1, 2: "r", 3: 2})

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
