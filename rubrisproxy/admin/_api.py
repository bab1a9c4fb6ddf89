"""The admin JSON API (docs/admin.md): read backends and servers, drain and ready servers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from twisted.logger import Logger
from twisted.web import resource, server

from ..backend import Backend, Server
from ..frontend import Frontend
from ..websocket import ResumeBudget
from ._metrics import registry_for


class AdminAPI(resource.Resource):
    """``GET /backends``, ``GET /backends/NAME``, ``POST /backends/NAME/servers/SERVER/{drain,ready}``,
    and ``GET /metrics`` (Prometheus)."""

    isLeaf = True
    log = Logger()

    def __init__(self, backends: Mapping[str, Backend], budget: ResumeBudget, registry: CollectorRegistry) -> None:
        super().__init__()
        self.backends = backends
        self.budget = budget
        self.registry = registry
        self._actions: dict[str, Callable[[Backend, str], Server]] = {
            "drain": Backend.drain_server,
            "ready": Backend.ready_server,
        }

    def render(self, request: server.Request) -> bytes:
        if request.method not in (b"GET", b"POST"):
            request.setHeader(b"allow", b"GET, POST")
            return _error(request, 405, f"{request.method.decode('latin-1')} is not allowed here")
        return super().render(request)  # type: ignore[no-any-return]

    def render_GET(self, request: server.Request) -> bytes:
        path = _path(request)
        if path == ["metrics"]:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(self.registry)  # type: ignore[no-any-return]
        if path == ["backends"]:
            return _json(request, 200, {
                "backends": [_backend(b) for b in self.backends.values()],
                "resume_buffered_bytes": self.budget.held,
            })
        if len(path) == 2 and path[0] == "backends":
            backend = self.backends.get(path[1])
            if backend is None:
                return _error(request, 404, f"no backend named {path[1]!r}")
            return _json(request, 200, _backend(backend))
        return _error(request, 404, "not found; try GET /backends")

    def render_POST(self, request: server.Request) -> bytes:
        path = _path(request)
        if len(path) != 5 or path[0] != "backends" or path[2] != "servers" or path[4] not in self._actions:
            return _error(request, 404, "expected POST /backends/NAME/servers/SERVER/drain or .../ready")
        backend = self.backends.get(path[1])
        if backend is None:
            return _error(request, 404, f"no backend named {path[1]!r}")
        try:
            chosen = self._actions[path[4]](backend, path[3])
        except KeyError as e:
            return _error(request, 404, str(e.args[0]))
        self.log.info("admin: {action} {backend}/{server} from {peer}", action=path[4], backend=backend.name,
                      server=chosen.name, peer=request.getClientAddress())
        return _json(request, 200, _server(chosen))


def admin_site(frontends: Sequence[Frontend], backends: Mapping[str, Backend], budget: ResumeBudget) -> server.Site:
    """The admin listener's site."""
    site = server.Site(AdminAPI(backends, budget, registry_for(frontends, backends, budget)), logPath=None)
    site.noisy = False
    site.displayTracebacks = False
    return site


def _path(request: server.Request) -> list[str]:
    return [segment.decode("utf-8", "replace") for segment in request.postpath or () if segment]


def _backend(backend: Backend) -> dict[str, Any]:
    return {
        "name": backend.name,
        "servers": [_server(s) for s in backend.servers],
        "queue": backend.queue_length,
        "resumes": backend.resumes,
        "resume_failures": dict(backend.resume_failures),
    }


def _server(server: Server) -> dict[str, Any]:
    if server.draining:
        state = "drain"
    else:
        state = "up" if server.up else "down"
    return {
        "name": server.name,
        "address": f"{server.config.host}:{server.config.port}",
        "state": state,
        "weight": server.weight,
        "active": server.active,
        "total": server.total,
        "sessions": len(server.watchers),
        "connect_failures": server.connect_failures,
    }


def _json(request: server.Request, status: int, body: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


def _error(request: server.Request, status: int, message: str) -> bytes:
    return _json(request, status, {"status": status, "error": message})
