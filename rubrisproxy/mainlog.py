"""The main log under twistd: one line per event, as text or as one JSON object, with access-log lines as they are.

rubrisproxy gives twistd this observer (twistd takes an application's ``ILogObserver``
component over its own), writing where twistd would have written: standard output with
``-n`` and no ``--logfile`` (or ``--logfile -``), else the ``--logfile`` file
(``twistd.log`` by default). ``--logger`` and ``--syslog`` keep twistd's own observer.
The file is not rotated by size as twistd's is: ``SIGUSR1`` reopens it, and the
access-log file, for logrotate.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.logger import ILogObserver, Logger, eventAsText
from zope.interface import implementer

from .accesslog import NAMESPACE
from .config import LogSettings
from .logoutput import ACCESS_LINES, FileOutput, LineOutput, StreamOutput, Timestamps, compact_json
from .signals import SignalService


@implementer(ILogObserver)
class MainLogObserver:
    """Writes each event as one line, ``time [namespace#level] message`` (further lines of a message or a
    traceback start with a tab), or in ``json`` format as one JSON object; a batch of access-log lines as they
    are (text access lines in a JSON main log become objects with the line as their ``message``)."""

    def __init__(self, output: LineOutput, format: str = LogSettings().format) -> None:
        self.output = output
        self.json = format == "json"
        self._timestamp = Timestamps()

    def __call__(self, event: dict[str, Any]) -> None:
        lines = event.get(ACCESS_LINES)
        if lines is not None:
            if self.json and lines and lines[0][:1] != "{":
                at = self._timestamp(event.get("log_time", 0.0))
                lines = [compact_json({"time": at, "level": "info", "namespace": NAMESPACE, "message": line}) for line in lines]
            self.output.write_lines(lines)
            return
        self.output.write_lines([self.format(event)])

    def format(self, event: dict[str, Any]) -> str:
        """One event as its line."""
        at = self._timestamp(event.get("log_time", 0.0))
        level = event.get("log_level")
        level_name = level.name if level is not None else "info"
        namespace = event.get("log_namespace", "-")
        message = _message(event)
        failure = event.get("log_failure")
        if self.json:
            fields = {"time": at, "level": level_name, "namespace": namespace, "message": message}
            if failure is not None:
                fields["traceback"] = failure.getTraceback()
            return compact_json(fields)
        system = event.get("log_system") or f"{namespace}#{level_name}"
        line = f"{at} [{system}] {message}".replace("\n", "\n\t")  # a line of its own starts with a time
        if failure is not None:
            line += "\n\t" + failure.getTraceback().rstrip("\n").replace("\n", "\n\t")
        return line


def _message(event: dict[str, Any]) -> str:
    """``eventAsText`` of ``event`` without time, system or traceback: for a plain format whose fields are all in the
    event, ``str.format_map`` (in C: a twentieth of the time, and the same text); else Twisted's own (``{f()}`` calls,
    flattened events, one that cannot be formatted)."""
    format = event.get("log_format")
    if format.__class__ is str and "log_flattened" not in event:
        try:
            return format.format_map(event)
        except Exception:  # what Twisted's formatter makes of it follows
            pass
    return eventAsText(event, includeTimestamp=False, includeSystem=False, includeTraceback=False)


def twistd_output(twistd_options: Mapping[str, Any]) -> LineOutput | None:
    """Where twistd would write its log for these (twistd's own) options; None when twistd is to keep its own
    observer (``--logger``, ``--syslog``). SystemExit for a daemon asked to log to standard output, as twistd, and
    for a log file that cannot be opened."""
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    path = twistd_options.get("logfile")
    daemon = not twistd_options.get("nodaemon")
    if path == "-":
        if daemon:
            raise SystemExit("Daemons cannot log to stdout, exiting!")
        return StreamOutput(sys.stdout)
    if not path and not daemon:
        return StreamOutput(sys.stdout)
    path = os.path.abspath(path or "twistd.log")  # twistd may change directory (--rundir) later
    try:
        return FileOutput(path)
    except OSError as e:
        raise SystemExit(f"rubrisproxy: cannot open the log file {path}: {e.strerror}") from None


class LoggedService(service.MultiService):
    """The proxy's services as twistd gets them, bringing the main log's observer to the application."""

    def __init__(self, child: service.IService, observer: MainLogObserver) -> None:
        super().__init__()
        self.observer = observer
        child.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        set_component = getattr(parent, "setComponent", None)
        if set_component is not None:  # twistd's Application: its logger uses this observer
            set_component(ILogObserver, self.observer)
        super().setServiceParent(parent)


class ReopenOnSignal(SignalService):
    """``SIGUSR1`` reopens the log files (after logrotate moved them), from the reactor thread."""

    log = Logger()

    def __init__(self, reopeners: list[Callable[[], None]], reactor: Any, signum: int = signal.SIGUSR1) -> None:
        super().__init__(reactor, signum)
        self.reopeners = reopeners

    def received(self) -> None:
        self.reopen()

    def reopen(self) -> None:
        for reopen in self.reopeners:
            reopen()
        self.log.info("log files reopened ({signal})", signal=signal.Signals(self.signum).name)
