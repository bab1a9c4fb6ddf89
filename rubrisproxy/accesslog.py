"""One access-log line per request (and per client connection), as text or JSON, written in batches."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _string  # a JSON string literal, escaped (in C)
from typing import NamedTuple

from .config import AccessLogSettings
from .logoutput import EventOutput, LineOutput, Timestamps

try:
    from ._accesslines import TextLines  # built from _accesslines.pyx when a C compiler was there at install
except ImportError:  # pragma: no cover - an install without a compiler
    TextLines = None  # type: ignore[assignment,misc]

_DEFAULTS = AccessLogSettings()  # the model's defaults

#: The twisted logger namespace of access-log lines written to the twistd log.
NAMESPACE = "rubrisproxy.access"


class AccessRecord(NamedTuple):
    """What is known about one request when it ends. ``at`` is when (POSIX time); the other times are
    milliseconds, -1 being "did not happen".

    A tuple, so that the request path makes one in C (``tuple.__new__(AccessRecord, fields)``, every field in
    order) and a formatter reads all its fields in one unpacking."""

    at: float
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
    request_id: str = ""  # its unique id, when the frontend has a unique-id-header
    auth: str = ""  # the proxy's own login to the server: "preemptive", "answered" (sent again), "passed", "failed"


@dataclass(slots=True)
class ConnectionRecord:
    """One client connection when it ends (``at``, POSIX time): why, who owned it, and its counters."""

    at: float
    peer: str
    frontend: str
    end: str  # a ConnectionEnd value
    client: str  # its owner at the end ("-": none)
    requests: int
    responses: int
    bytes_in: int
    bytes_out: int
    duration_ms: float


_timestamp = Timestamps().__call__  # bound: calling the instance itself goes through its type's call slot

#: Whether text lines come from the compiled ``_accesslines`` (the same text for a third of the instructions);
#: ``RUBRISPROXY_PURE_PYTHON=1`` in the environment keeps to :func:`format_text`.
COMPILED = TextLines is not None and not os.environ.get("RUBRISPROXY_PURE_PYTHON")


def format_connection_text(record: ConnectionRecord) -> str:
    """``time peer frontend CONNECTION end client=... requests=N responses=N in=B out=B duration_ms=MS``."""
    r = record
    return "%s %s %s CONNECTION %s client=%s requests=%d responses=%d in=%d out=%d duration_ms=%d" % (
        _timestamp(r.at), r.peer, r.frontend, r.end, r.client, r.requests, r.responses, r.bytes_in, r.bytes_out,
        r.duration_ms + 0.5,
    )


def format_connection_json(record: ConnectionRecord) -> str:
    r = record
    return (
        '{"time":"%s","event":"connection","peer":%s,"frontend":%s,"end":%s,"client":%s,"requests":%d,'
        '"responses":%d,"bytes_in":%d,"bytes_out":%d,"duration_ms":%.3f}'
    ) % (_timestamp(r.at), _string(r.peer), _string(r.frontend), _string(r.end), _string(r.client), r.requests,
         r.responses, r.bytes_in, r.bytes_out, r.duration_ms)


def format_text(record: AccessRecord) -> str:
    """HAProxy-like: ``time client frontend backend/server Tq/Tw/Tc/Tr/Tt status in out termination retries=N
    "request"``, the time in ISO 8601 (UTC, milliseconds); the timings are whole milliseconds (rounded), -1 for
    a step that did not happen; then ``session=ID``, ``id=REQUEST-ID`` and ``auth=MARK`` when there are."""
    (at, client, frontend, method, target, version, status, bytes_in, bytes_out, backend, server, wait, queue, connect,
     response, total, termination, retries, session, request_id, auth) = record
    # %d truncates: adding 0.5 rounds a time; -1 (did not happen) stays -1. (%d of a float: no int() call; 0.0, not
    # 0: a float compared with a float takes 3.11's specialised instruction.)
    line = '%s %s %s %s/%s %d/%d/%d/%d/%d %s %s %s %s retries=%s "%s %s HTTP/%s"' % (
        _timestamp(at), client, frontend, backend, server,
        wait + 0.5 if wait >= 0.0 else -1, queue + 0.5 if queue >= 0.0 else -1,
        connect + 0.5 if connect >= 0.0 else -1, response + 0.5 if response >= 0.0 else -1,
        total + 0.5 if total >= 0.0 else -1,
        status, bytes_in, bytes_out, termination, retries, method, target, version,
    )
    if session:
        line += " session=" + session
    if request_id:
        line += " id=" + request_id
    return line + " auth=" + auth if auth else line


def format_json(record: AccessRecord) -> str:
    """One JSON object per line; timings to the microsecond."""
    (at, client, frontend, method, target, version, status, bytes_in, bytes_out, backend, server, wait, queue, connect,
     response, total, termination, retries, session, request_id, auth) = record
    return (
        '{"time":"%s","event":"request","client":%s,"frontend":%s,"method":%s,"target":%s,"version":%s,'
        '"status":%d,"bytes_in":%d,"bytes_out":%d,"backend":%s,"server":%s,"wait_ms":%.3f,"queue_ms":%.3f,'
        '"connect_ms":%.3f,"response_ms":%.3f,"total_ms":%.3f,"termination":%s,"retries":%d,"session":%s,'
        '"request_id":%s,"auth":%s}'
    ) % (_timestamp(at), _string(client), _string(frontend), _string(method), _string(target), _string(version),
         status, bytes_in, bytes_out, _string(backend), _string(server), wait, queue, connect, response, total,
         _string(termination), retries, _string(session), _string(request_id), _string(auth))


class AccessLog:
    """Formats records into lines held in memory, written out in batches: by :meth:`flush` (once a second, from
    :class:`rubrisproxy.service.AccessLogService`) or when ``batch`` lines are held. Once :meth:`stop` is called
    (shutdown), each line is written at once. By default the lines go to the twistd log."""

    enabled = True

    def __init__(self, format: str = _DEFAULTS.format, output: LineOutput | None = None,
                 connections: bool = _DEFAULTS.connections, batch: int = 256) -> None:
        json_lines = format == "json"
        self._format: Callable[[AccessRecord], str] = (
            format_json if json_lines else TextLines(_timestamp) if COMPILED else format_text
        )
        self._format_connection = format_connection_json if json_lines else format_connection_text
        self.output: LineOutput = output if output is not None else EventOutput(NAMESPACE)
        self.batch = self.batch_size = batch
        self._lines: list[str] = []
        self.records = 0
        self.writes_connections = connections

    def write(self, record: AccessRecord) -> None:
        self.records += 1
        lines = self._lines
        lines.append(self._format(record))
        if len(lines) >= self.batch:
            self.flush()

    def write_connection(self, record: ConnectionRecord) -> None:
        """A line for a client connection that ended."""
        lines = self._lines
        lines.append(self._format_connection(record))
        if len(lines) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Write out the lines held."""
        if self._lines:
            lines, self._lines = self._lines, []
            self.output.write_lines(lines)

    def start(self) -> None:
        """Hold lines again, up to the batch size."""
        self.batch = self.batch_size

    def stop(self) -> None:
        """Write out what is held, and from now on each line as it comes (the proxy is stopping)."""
        self.flush()
        self.batch = 1

    def reopen(self) -> None:
        """Write out what is held, then reopen the output's file (after logrotate moved it)."""
        self.flush()
        self.output.reopen()

    def close(self) -> None:
        self.flush()
        self.output.close()


class NullAccessLog(AccessLog):
    """An access log that writes nothing."""

    enabled = False

    def __init__(self) -> None:
        super().__init__(connections=False)

    def write(self, record: AccessRecord) -> None:
        self.records += 1

    def write_connection(self, record: ConnectionRecord) -> None:
        pass
