"""Where log lines go: a file reopened on demand (for logrotate), a stream, or twistd's log as one event per batch.

Also the timestamp every line starts with: ISO 8601 in UTC with milliseconds.
"""

from __future__ import annotations

import json
import threading
import time
from enum import Enum
from typing import IO, Any, Protocol

from twisted.logger import Logger
from twisted.python import threadable

#: The key of a log event carrying access-log lines; the main log writes them as they are.
ACCESS_LINES = "access_lines"

#: One JSON object as compact text.
compact_json = json.JSONEncoder(separators=(",", ":")).encode


class Timestamps:
    """``2026-12-06T06:40:01.123Z`` for a POSIX time; computed once a millisecond (the date and time once a
    second), as many lines share them."""

    __slots__ = ("_second", "_prefix", "_millisecond", "_text")

    def __init__(self) -> None:
        self._second = self._millisecond = -1
        self._prefix = self._text = ""

    def __call__(self, at: float) -> str:
        millisecond = int(at * 1000)
        if millisecond == self._millisecond:
            return self._text
        second, fraction = divmod(millisecond, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._millisecond = millisecond
        self._text = text = "%s.%03dZ" % (self._prefix, fraction)
        return text


class LineOutput(Protocol):
    """Something lines are written to, in batches (each line without its newline)."""

    def write_lines(self, lines: list[str]) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class FileState(Enum):
    OPEN = "open"
    FAILING = "failing"  # the last write failed (a full disk): lines are dropped until one succeeds
    CLOSED = "closed"


class FileOutput:
    """Appends lines to a file, flushed after each batch. :meth:`reopen` opens the path anew (after logrotate
    moved the file away); if that fails, it says so and keeps writing to the file it had. A write that fails
    (a full disk) drops its lines, never the request that logged them; the log says when it starts and stops."""

    log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] = self._open()
        self.state = FileState.OPEN
        self.dropped = 0  # lines lost to failed writes

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace")

    def write_lines(self, lines: list[str]) -> None:
        if self.state is FileState.CLOSED or not lines:
            return
        try:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except OSError as e:
            self.dropped += len(lines)
            if self.state is FileState.OPEN:
                self.state = FileState.FAILING
                self.log.error("cannot write to {path}: {why}; dropping lines until it can", path=self.path,
                               why=e.strerror)
            return
        if self.state is FileState.FAILING:
            self.state = FileState.OPEN
            self.log.info("writing to {path} again; {count} lines were dropped so far", path=self.path,
                          count=self.dropped)

    def reopen(self) -> None:
        if self.state is FileState.CLOSED:
            return
        try:
            new = self._open()
        except OSError as e:
            self.log.error("cannot reopen {path}: {why}; still writing to the file it had", path=self.path,
                           why=e.strerror)
            return
        old, self._file = self._file, new
        try:
            old.close()
        except OSError:
            pass  # what it still held could not be written: counted as dropped when it failed

    def close(self) -> None:
        if self.state is not FileState.CLOSED:
            self.state = FileState.CLOSED
            try:
                self._file.close()
            except OSError:
                pass


class StreamOutput:
    """Writes lines to a stream it does not own (standard output), flushed after each batch."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write_lines(self, lines: list[str]) -> None:
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        self.stream.flush()


class EventOutput:
    """Hands each batch to the twisted logger as one event (namespace ``namespace``): the main log writes the
    lines as they are; another observer sees one event whose text is the lines."""

    def __init__(self, namespace: str) -> None:
        self._log = Logger(namespace=namespace)

    def write_lines(self, lines: list[str]) -> None:
        if lines:
            self._log.info("{access_text}", access_text="\n".join(lines), **{ACCESS_LINES: lines})

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class TurnBatchedOutput:
    """Writes to ``output`` the lines the reactor's thread gives it in one reactor turn together, on the next turn
    (``callLater(0)``): one write and flush for a burst of lines (each of a dead server's thousands of moving
    sessions logs two) rather than one per line. Lines from another thread, or while the reactor is not running,
    go at once (those held first, when it is that the reactor stopped); what is held when it shuts down goes
    then."""

    __slots__ = ("output", "_reactor", "_held")

    def __init__(self, output: LineOutput, reactor: Any) -> None:
        self.output = output
        self._reactor = reactor
        self._held: list[str] | None = None  # the lines of this turn, a write of them scheduled
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def write_lines(self, lines: list[str]) -> None:
        if threading.get_ident() != threadable.ioThread:  # threadable.isInIOThread(), without current_thread()
            self.output.write_lines(lines)
            return
        held = self._held
        if held is not None:
            held.extend(lines)
            if not self._reactor.running:
                self.flush()
        elif self._reactor.running:
            self._held = list(lines)
            self._reactor.callLater(0, self.flush)
        else:
            self.output.write_lines(lines)

    def flush(self) -> None:
        """Write the lines held now."""
        held, self._held = self._held, None
        if held:
            self.output.write_lines(held)

    def reopen(self) -> None:
        self.flush()
        self.output.reopen()

    def close(self) -> None:
        self.flush()
        self.output.close()
