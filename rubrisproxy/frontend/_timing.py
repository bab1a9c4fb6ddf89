"""When a request's steps happened and what it moved: its metrics and its access-log record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..accesslog import AccessRecord
from ..counters import count, status_class
from ..http import LaterVersion
from ..lifecycle import Termination

if TYPE_CHECKING:
    from ..backend import Backend, Server
    from ..clients import ClientSession
    from ..http import RequestHead
    from ..origin import LoginAttempt
    from ._context import Frontend
    from ._rule_actions import RuleRun

_new_tuple = tuple.__new__  # an AccessRecord made in C, every field given in order (its own __new__ is a Python call)
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")}
# The frontend's response counters' keys, (status class, whose answer), made once rather than a tuple per request.
_ORIGIN = {klass: (klass, "origin") for klass in map(status_class, range(100, 600, 100))}
_PROXY = {klass: (klass, "proxy") for klass in map(status_class, range(100, 600, 100))}


#: What :meth:`Timing.timing_record` carries: every reading and count the access log and metrics read.
_READINGS = ("started_at", "wait", "queued_at", "dequeued_at", "connect_started", "connected_at", "sent_at",
             "response_at")
_COUNTS = ("status", "bytes_in", "bytes_out", "retries")
TIMING_FIELDS = _READINGS + _COUNTS


class Timing:
    """A request's clock readings and byte counts, and the metrics and log line made of them.

    The base of :class:`~rubrisproxy.frontend.Exchange` rather than an object of its own, so that it costs
    no allocation per request. A reading of -1 means the step did not happen (the log shows -1 for it).
    """

    __slots__ = (
        "started_at", "wait", "queued_at", "dequeued_at", "connect_started", "connected_at", "sent_at",
        "response_at", "status", "bytes_in", "bytes_out", "retries",
    )

    # What the record says of the request besides: the exchange's own (see Dispatch and ExchangeEnding).
    head: RequestHead
    client_address: str
    backend: Backend | None
    server: Server | None
    session: ClientSession | None
    rules: RuleRun | None
    _login: LoginAttempt | None  # the proxy's own login to the server (Resubmitting's)

    # Set by Exchange.__init__ (an __init__ here would be a call more per request); a reading of -1 means the
    # step did not happen.
    started_at: float  # the request head was read
    wait: float  # from the connection being ready for a request to its head being read
    queued_at: float  # in and out of the backend's queue
    dequeued_at: float
    connect_started: float  # connecting to the server (or resolving its name)
    connected_at: float
    sent_at: float  # the request head sent
    response_at: float  # the response head read
    status: int  # the status answered (the origin's or the proxy's own)
    bytes_in: int  # request body bytes (the head is counted apart), or a WebSocket's bytes from the client
    bytes_out: int  # bytes written to the client for this request
    retries: int  # connection attempts made again, as the access log reports them

    def timing_record(self) -> dict[str, float]:
        """Its clock readings and counts, for a WebSocket carried to another process by a live upgrade."""
        return {name: getattr(self, name) for name in TIMING_FIELDS}

    def restore_timing(self, record: Mapping[str, float]) -> None:
        """Take up the readings and counts of :meth:`timing_record` (the old process's)."""
        for name in _READINGS:
            setattr(self, name, float(record[name]))
        for name in _COUNTS:
            setattr(self, name, int(record[name]))

    def count(
        self, frontend: Frontend, backend: Backend | None, termination: Termination, now: float, from_origin: bool
    ) -> None:
        """Add the request to the frontend's and its backend's metrics (``from_origin``: the answer was the origin's)."""
        terminations = frontend.terminations
        name = termination._value_  # not a dict keyed by it: an Enum's hash is a Python call
        terminations[name] = terminations.get(name, 0) + 1
        elapsed = now - self.started_at
        frontend.request_seconds.observe(elapsed)
        status = self.status
        if status:
            klass = status_class(status)
            responses = frontend.responses
            key = (_ORIGIN if from_origin else _PROXY).get(klass) or (klass, "origin" if from_origin else "proxy")
            responses[key] = responses.get(key, 0) + 1
        if backend is not None:
            backend.request_seconds.observe(elapsed)
            if status:
                counts = backend.responses
                counts[klass] = counts.get(klass, 0) + 1

    def record(self, now: float, frontend: str, termination: Termination) -> AccessRecord:
        """The request's access-log record."""
        head, backend, server, session = self.head, self.backend, self.server, self.session
        connect_started, connected_at = self.connect_started, self.connected_at
        sent_at, response_at = self.sent_at, self.response_at
        method, version = head.method, head.version
        return _new_tuple(AccessRecord, (
            now,
            self.client_address,
            frontend,
            _METHODS.get(method) or method.decode("latin-1"),
            head.target.decode("latin-1"),
            "1.1" if version == b"1.1" and type(version) is bytes else "2.0" if version == b"2.0"
            else "1.0" if version == b"1.0" else version.sent if isinstance(version, LaterVersion) else "1.1",
            self.status,
            head.size + self.bytes_in,
            self.bytes_out,
            backend.name if backend is not None else "-",
            server.name if server is not None else "-",
            # Float literals: a float compared with or multiplied by a float takes 3.11's specialised instructions.
            self.wait * 1000.0,
            (self.dequeued_at - self.queued_at) * 1000.0 if self.dequeued_at >= 0.0 else (0.0 if server else -1.0),
            (connected_at - connect_started) * 1000.0 if connected_at >= 0.0 and connect_started >= 0.0 else -1.0,
            (response_at - sent_at) * 1000.0 if response_at >= 0.0 and sent_at >= 0.0 else -1.0,
            (now - self.started_at) * 1000.0,
            termination._value_,
            self.retries,
            session.id if session is not None else "",
            self.rules.request_id.decode("latin-1") if self.rules is not None else "",
            self._login.mark if self._login is not None else "",
        ))


class _Connection(Protocol):
    frontend: Frontend
    client_address: str
    ready_at: float  # when it was last ready for a request


def log_refused(connection: _Connection, status: int, termination: Termination, bytes_out: int) -> None:
    """Count and log a request ``connection`` refused before it became an exchange (``bytes_out``: the answer's
    size; what was read of it is not known apart from the connection's)."""
    frontend = connection.frontend
    count(frontend.terminations, termination.value)
    count(frontend.responses, (status_class(status), "proxy"))
    now = frontend.clock.seconds()
    frontend.access_log.write(
        AccessRecord(
            at=now, client=connection.client_address, frontend=frontend.name, method="-", target="-",
            version="-", status=status, bytes_in=0, bytes_out=bytes_out, backend="-", server="-",
            wait_ms=round((now - connection.ready_at) * 1000, 3),
            queue_ms=-1, connect_ms=-1, response_ms=-1, total_ms=0.0, termination=termination.value,
        )
    )
