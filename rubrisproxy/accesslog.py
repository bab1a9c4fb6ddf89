"""One access-log line per request, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO

from twisted.logger import Logger


@dataclass(slots=True)
class AccessRecord:
    """What is known about one request when it ends. Times are milliseconds; -1 is "did not happen"."""

    client: str
    frontend: str
    method: str
    target: str
    version: str
    status: int
    bytes_in: int
    bytes_out: int
    backend: str
    server: str
    wait_ms: float  # from the connection being ready for a request to its head being complete
    queue_ms: float  # waiting for a connection slot
    connect_ms: float  # establishing the origin connection (0 when reused)
    response_ms: float  # from the request sent to the response head received
    total_ms: float  # from the head being complete to the exchange ending
    termination: str
    retries: int = 0
    session: str = ""  # the client session of the request, when the frontend tracks sessions


@dataclass(slots=True)
class ConnectionRecord:
    """One client connection when it ends: why, who owned it, and its counters."""

    peer: str
    frontend: str
    end: str  # a ConnectionEnd value
    client: str  # its owner at the end ("-": none)
    requests: int
    responses: int
    bytes_in: int
    bytes_out: int
    duration_ms: float


def format_connection_text(record: ConnectionRecord) -> str:
    """``peer frontend CONNECTION end client=... requests=N responses=N in=B out=B duration_ms=MS``."""
    r = record
    return "%s %s CONNECTION %s client=%s requests=%d responses=%d in=%d out=%d duration_ms=%d" % (
        r.peer, r.frontend, r.end, r.client, r.requests, r.responses, r.bytes_in, r.bytes_out, r.duration_ms + 0.5,
    )


def format_connection_json(record: ConnectionRecord) -> str:
    fields = {"event": "connection", **asdict(record)}
    fields["duration_ms"] = round(record.duration_ms, 3)
    return json.dumps(fields, separators=(",", ":"))


def format_text(record: AccessRecord) -> str:
    """HAProxy-like: ``client frontend backend/server Tw/Tq/Tc/Tr/Tt status in out termination "request"``.

    Times are whole milliseconds (rounded), -1 for a step that did not happen.
    """
    r = record
    wait, queue, connect, response, total = r.wait_ms, r.queue_ms, r.connect_ms, r.response_ms, r.total_ms
    # %d truncates: adding 0.5 rounds a time; -1 (did not happen) stays -1.
    return '%s %s %s/%s %d/%d/%d/%d/%d %d %d %d %s retries=%d "%s %s HTTP/%s"' % (
        r.client, r.frontend, r.backend, r.server,
        wait + 0.5 if wait >= 0 else -1, queue + 0.5 if queue >= 0 else -1,
        connect + 0.5 if connect >= 0 else -1, response + 0.5 if response >= 0 else -1,
        total + 0.5 if total >= 0 else -1,
        r.status, r.bytes_in, r.bytes_out, r.termination, r.retries, r.method, r.target, r.version,
    ) + (f" session={r.session}" if r.session else "")


def format_json(record: AccessRecord) -> str:
    """One JSON object per line; times rounded to microseconds."""
    fields = asdict(record)
    for key in ("wait_ms", "queue_ms", "connect_ms", "response_ms", "total_ms"):
        fields[key] = round(fields[key], 3)
    return json.dumps(fields, separators=(",", ":"))


class AccessLog:
    """Writes records to the twistd log (namespace ``rubrisproxy.access``) or to a file."""

    log = Logger(namespace="rubrisproxy.access")
    enabled = True

    def __init__(self, format: str = "text", stream: IO[str] | None = None, connections: bool = True) -> None:
        self._format: Callable[[AccessRecord], str] = format_json if format == "json" else format_text
        self._format_connection = format_connection_json if format == "json" else format_connection_text
        self._stream = stream
        self.records = 0
        self.writes_connections = connections

    def write(self, record: AccessRecord) -> None:
        self.records += 1
        line = self._format(record)
        if self._stream is not None:
            self._stream.write(line + "\n")
        else:
            self.log.info("{line}", line=line, access=record)

    def write_connection(self, record: ConnectionRecord) -> None:
        """A line for a client connection that ended."""
        line = self._format_connection(record)
        if self._stream is not None:
            self._stream.write(line + "\n")
        else:
            self.log.info("{line}", line=line, connection=record)

    def flush(self) -> None:
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class NullAccessLog(AccessLog):
    """An access log that writes nothing."""

    enabled = False

    def __init__(self) -> None:
        super().__init__(connections=False)

    def write(self, record: AccessRecord) -> None:
        self.records += 1

    def write_connection(self, record: ConnectionRecord) -> None:
        pass
