"""What the admin API and the stats page show: frontends, backends, servers and sessions as plain data, and the
same as CSV in the spirit of HAProxy's ``show stat``."""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from twisted.internet.interfaces import IReactorTime

import twisted

from .. import __version__
from ..backend import Backend, HealthChecker, Server, SharedBackends
from ..config import RouteConfig
from ..counters import status_class
from ..frontend import Frontend
from ..transfer import Upgrades
from ..websocket import ResumeBudget, WebSocketSession

#: The most current sessions ``GET /stats.json`` lists (``GET /sessions`` lists them all).
SESSION_ROWS = 200
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_MOVING = ("moving", "resuming")


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """The versions ``build_info`` and the stats page show."""

    version: str = __version__
    python: str = platform.python_version()
    twisted: str = twisted.__version__


BUILD = BuildInfo()


@dataclass(eq=False)
class RunningProxy:
    """What the admin API reads and changes."""

    frontends: Sequence[Frontend]
    backends: Mapping[str, Backend]
    budget: ResumeBudget
    checkers: Mapping[str, HealthChecker] = field(default_factory=dict)  # by backend name
    reload: Callable[[], list[str]] | None = None  # re-reads the configuration file, if there is one
    clock: IReactorTime | None = None  # for the uptime; None: the system's clock
    #: A frontend's listening sockets: ``{"endpoint": "tcp:8080", "address": "0.0.0.0:8080"}`` each.
    listening: Callable[[Frontend], list[dict[str, str]]] = field(default=lambda frontend: [])
    shared: SharedBackends | None = None  # with a cluster: told of admin changes, which other nodes then apply
    cluster: Callable[[], dict[str, Any]] | None = None  # with a cluster: its transport's state, as GET /cluster shows
    upgrade: Upgrades | None = None  # its live upgrades (POST /upgrade, GET /upgrade)
    started_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.now()

    def now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()


def stats(proxy: RunningProxy) -> dict[str, Any]:
    """Everything the stats page shows, as ``GET /stats.json`` answers it."""
    return {
        "proxy": {
            "version": BUILD.version, "python": BUILD.python, "twisted": BUILD.twisted, "pid": os.getpid(),
            "started_at": round(proxy.started_at, 3), "uptime": round(proxy.now() - proxy.started_at, 3),
        },
        "frontends": [frontend_fields(f) | _frontend_extra(f, proxy) for f in proxy.frontends],
        "backends": [backend_fields(b) for b in proxy.backends.values()],
        "sessions": _sessions(proxy),
    }


def frontend_fields(frontend: Frontend) -> dict[str, Any]:
    """A frontend as ``GET /frontends`` shows it."""
    answered = {code: 0 for code in CLASSES}
    own = dict(answered)
    for (code, source), number in frontend.responses.items():
        answered[code] = answered.get(code, 0) + number
        if source == "proxy":
            own[code] = own.get(code, 0) + number
    bytes_in, bytes_out = frontend.traffic()
    return {
        "name": frontend.name,
        "connections": len(frontend.connections),
        "accepted": frontend.accepted,
        "requests": frontend.requests,
        "websockets": len(frontend.websockets),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "responses": answered,
        "proxy_responses": own,
        "terminations": dict(sorted(frontend.terminations.items())),
        "connection_ends": dict(sorted(frontend.connection_ends.items())),
        "peers": "proxied" if frontend.peers.proxied else "local",
        "client_sessions": len(frontend.clients.sessions) if frontend.clients is not None else None,
        "rate_limits": frontend.rules.limits() if frontend.rules is not None else [],
    }


def backend_fields(backend: Backend) -> dict[str, Any]:
    """A backend as ``GET /backends`` shows it."""
    return {
        "name": backend.name,
        "servers": [server_fields(s) for s in backend.servers],
        "queue": backend.queue_length,
        "responses": {code: backend.responses.get(code, 0) for code in CLASSES} | _others(backend.responses),
        "resumes": backend.resumes,
        "resume_failures": dict(backend.resume_failures),
        "messages_lost": backend.messages_lost,
        "auth": _login(backend),
    }


def _login(backend: Backend) -> dict[str, int] | None:
    """The backend's own login to its servers: challenges answered, refused and handed to clients (None: it has no
    credentials)."""
    login = backend.login
    if login is None:
        return None
    return {"answered": login.answered, "failed": login.failed, "passed": login.passed}


def server_fields(server: Server) -> dict[str, Any]:
    """A server as the API shows it."""
    return {
        "name": server.name,
        "address": f"{server.config.host}:{server.config.port}",
        "state": server.state,
        "state_seconds": round(server.state_seconds(), 3),
        "weight": server.weight,
        "backup": server.backup,
        "active": server.active,
        "max_active": server.max_active,
        "maxconn": server.maxconn,
        "total": server.total,
        "sessions": len(server.watchers),
        "connect_failures": server.connect_failures,
        "retries": server.retries,
        "redispatches": server.redispatches,
        "bytes_in": server.bytes_in,
        "bytes_out": server.bytes_out,
        "responses": server_classes(server),
        "check": _check(server),
    }


def server_classes(server: Server) -> dict[str, int]:
    """The server's answers by status class (``1xx`` counts WebSockets)."""
    classes = {code: 0 for code in CLASSES}
    for status, number in server.responses.items():
        code = status_class(status)
        classes[code] = classes.get(code, 0) + number
    return classes


def _others(counts: Mapping[str, int]) -> dict[str, int]:
    return {code: number for code, number in counts.items() if code not in CLASSES}


def _check(server: Server) -> dict[str, Any] | None:
    if not server.last_check:
        return None  # not checked (yet)
    failed = server.last_check == "failed"
    return {
        "last": server.last_check,
        "seconds": round(server.last_check_seconds, 6),
        "problem": server.last_check_problem if failed else "",
        "passed": server.check_results.get("passed", 0),
        "failed": server.check_results.get("failed", 0),
    }


def _frontend_extra(frontend: Frontend, proxy: RunningProxy) -> dict[str, Any]:
    router = frontend.router
    routes = []
    for route, target in router.table() if router is not None else []:
        entry: dict[str, Any] = {"match": describe_route(route)}
        entry.update({"deny": target} if isinstance(target, int) else {"backend": target.name})
        routes.append(entry)
    return {
        "listen": proxy.listening(frontend),
        "mode": "forward" if frontend.forward is not None else "reverse",
        "default_backend": frontend.backend.name,
        "routes": routes,
    }


def describe_route(route: RouteConfig) -> str:
    """A route's conditions in its configuration's words: ``path-prefix /api/, methods GET POST``."""
    parts = []
    for each in fields(route):
        value = getattr(route, each.name)
        if each.name in ("backend", "deny", "value", "origins", "subprotocols") or value in (None, ()):
            continue
        key = each.name.replace("_", "-")
        if each.name == "header":
            parts.append(f"header {value}" + (f" = {route.value}" if route.value is not None else ""))
        elif isinstance(value, bool):
            parts.append(key if value else f"not {key}")
        elif isinstance(value, tuple):
            parts.append(f"{key} {' '.join(value)}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts) or "any request"


def _sessions(proxy: RunningProxy) -> dict[str, Any]:
    live, tunnels, moving = 0, 0, 0
    current: list[dict[str, object]] = []
    for frontend in proxy.frontends:
        for relay in frontend.websockets:
            if not isinstance(relay, WebSocketSession):
                tunnels += 1
                continue
            live += 1
            described = relay.describe()
            moving += described["state"] in _MOVING
            if len(current) < SESSION_ROWS:
                current.append(described | {"frontend": frontend.name})
    backends = proxy.backends.values()
    return {
        "live": live,
        "moving": moving,
        "resumed": sum(b.resumes for b in backends),
        "failed": sum(sum(b.resume_failures.values()) for b in backends),
        "messages_lost": sum(b.messages_lost for b in backends),
        "tunnels": tunnels,
        "buffered_bytes": proxy.budget.held,
        "current": current,
    }


#: The CSV's columns: HAProxy's ``show stat`` names for what the proxy counts (docs/admin.md).
CSV_FIELDS = (
    "pxname", "svname", "qcur", "scur", "smax", "slim", "stot", "bin", "bout", "econ", "wretr", "wredis", "status",
    "weight", "act", "bck", "chkfail", "lastchg", "check_status", "check_duration", "type", "req_tot",
    "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "addr",
)


def stats_csv(proxy: RunningProxy) -> str:
    """One row per frontend, server and backend, as HAProxy's ``show stat`` lays them out."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n", restval="")
    out.write("# ")
    writer.writeheader()
    for frontend in proxy.frontends:
        writer.writerow(_frontend_row(frontend))
    for backend in proxy.backends.values():
        for server in backend.servers:
            writer.writerow(_server_row(backend, server))
        writer.writerow(_backend_row(backend))
    return out.getvalue()


def _hrsp(classes: Mapping[str, int]) -> dict[str, int]:
    row = {f"hrsp_{code}": classes.get(code, 0) for code in CLASSES}
    row["hrsp_other"] = sum(_others(classes).values())
    return row


def _frontend_row(frontend: Frontend) -> dict[str, object]:
    fields_ = frontend_fields(frontend)
    return {
        "pxname": frontend.name, "svname": "FRONTEND", "scur": fields_["connections"], "stot": fields_["accepted"],
        "bin": fields_["bytes_in"], "bout": fields_["bytes_out"], "status": "OPEN", "type": 0,
        "req_tot": frontend.requests, **_hrsp(fields_["responses"]),
    }


def _server_row(backend: Backend, server: Server) -> dict[str, object]:
    failed = server.check_results.get("failed", 0)
    return {
        "pxname": backend.name, "svname": server.name, "scur": server.active, "smax": server.max_active,
        "slim": server.maxconn or "", "stot": server.total, "bin": server.bytes_in, "bout": server.bytes_out,
        "econ": server.connect_failures, "wretr": server.retries, "wredis": server.redispatches,
        "status": server.state.upper(), "weight": server.weight, "act": int(not server.backup),
        "bck": int(server.backup), "chkfail": failed, "lastchg": int(server.state_seconds()),
        "check_status": server.last_check, "type": 2, "req_tot": server.total,
        "check_duration": round(server.last_check_seconds * 1000) if server.last_check else "",
        "addr": f"{server.config.host}:{server.config.port}", **_hrsp(server_classes(server)),
    }


def _backend_row(backend: Backend) -> dict[str, object]:
    servers = backend.servers
    taking = [s for s in servers if s.state == "up"]
    return {
        "pxname": backend.name, "svname": "BACKEND", "qcur": backend.queue_length,
        "scur": sum(s.active for s in servers), "stot": sum(s.total for s in servers),
        "bin": sum(s.bytes_in for s in servers), "bout": sum(s.bytes_out for s in servers),
        "econ": sum(s.connect_failures for s in servers), "wretr": sum(s.retries for s in servers),
        "wredis": sum(s.redispatches for s in servers), "status": "UP" if taking else "DOWN",
        "weight": sum(s.weight for s in taking), "act": sum(not s.backup for s in taking),
        "bck": sum(s.backup for s in taking), "chkfail": sum(s.check_results.get("failed", 0) for s in servers),
        "type": 1, "req_tot": sum(s.total for s in servers), **_hrsp(backend.responses),
    }
