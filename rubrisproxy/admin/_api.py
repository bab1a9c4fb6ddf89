"""The admin JSON API (docs/admin.md): see backends, servers and sessions; drain, ready, maint, weigh,
add and remove servers; Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from ..backend import Backend, Server
from ..config import ConfigError, Timeouts, parse_server
from ..transfer import Upgrades, UpgradeUnderWay
from ..websocket import WebSocketSession
from ._channel import MAX_BODY, AdminSite
from ._metrics import registry_for
from ._stats import RunningProxy, backend_fields, frontend_fields, server_fields, stats, stats_csv

#: The stats page (``GET /``): plain HTML and script, no build step, no external assets.
STATS_PAGE = (resources.files(__package__) / "stats.html").read_bytes()


class APIError(Exception):
    """An answer other than 200: ``status`` and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_SERVER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_READ_ONLY = ("GET", "HEAD")

T = TypeVar("T")

_SERVER_ACTIONS: dict[str, Callable[[Backend, str], Server]] = {
    "drain": Backend.drain_server,
    "ready": Backend.ready_server,
    "maint": Backend.maint_server,
}


class AdminAPI(resource.Resource):
    """Routes ``GET``/``POST``/``DELETE`` requests to the calls docs/admin.md lists; every answer is JSON."""

    isLeaf = True
    log = Logger()
    calls: tuple[_Call, ...]  # the calls it answers (set below the table)

    def __init__(self, proxy: RunningProxy, token: str | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.token = token
        self.registry = registry_for(proxy.frontends, proxy.backends, proxy.budget, proxy.upgrade)

    def render(self, request: server.Request) -> bytes | int:
        method = request.method.decode("latin-1")
        path = [segment.decode("utf-8", "replace") for segment in request.postpath or () if segment]
        try:
            self._check_browser(request, method)
            call, args = _find(self.calls, method, path)
            if call is None or not call.public:
                self._authorize(request)
            if call is None:
                raise _not_found(request, method)
            body = self.answer(call, request, args)
        except APIError as error:
            return _json(request, error.status, {"status": error.status, "error": error.message})
        except Exception:  # noqa: BLE001 - whatever went wrong, the caller gets JSON, and the log the traceback
            self.log.failure("admin: {method} {path} failed", method=method, path="/".join(path))
            return _json(request, 500, {"status": 500, "error": "internal error; see the proxy's log"})
        if body is server.NOT_DONE_YET:
            return server.NOT_DONE_YET
        return body if isinstance(body, bytes) else _json(request, 200, body)

    def answer(self, call: _Call, request: server.Request, args: list[str]) -> object:
        """``call``'s answer: bytes sent as they are, a value sent as JSON, or ``NOT_DONE_YET`` (written later)."""
        return call.answer(self, request, *args)

    def _check_browser(self, request: server.Request, method: str) -> None:
        """Refuse what a web page in the operator's browser could send: without a token, a Host that is not a
        loopback name (a DNS-rebinding name); for a call that changes state, another site's request (by
        ``Origin`` or ``Sec-Fetch-Site``) or a body that is not declared JSON (what a plain form or
        ``fetch`` can send cross-site without asking first)."""
        host = request.getHeader(b"host")
        if self.token is None and host is not None and not _loopback_host(host):
            raise APIError(403, "without admin.token, only a loopback Host is served (localhost, 127.0.0.1, [::1])")
        if method in _READ_ONLY:
            return
        fetch_site = request.getHeader(b"sec-fetch-site")
        origin = request.getHeader(b"origin")
        if (fetch_site is not None and fetch_site.lower() not in (b"same-origin", b"none")) or (
            origin is not None and (host is None or origin.lower().partition(b"://")[2] != host.lower())
        ):
            raise APIError(403, "a call from another site's page is refused")
        content_type = (request.getHeader(b"content-type") or b"").partition(b";")[0].strip().lower()
        if content_type != b"application/json":
            raise APIError(415, f"a {method} needs Content-Type: application/json")

    def _authorize(self, request: server.Request) -> None:
        if self.token is None:
            return
        scheme, _, given = (request.getHeader(b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token.encode()):
            request.setHeader(b"www-authenticate", b'Bearer realm="rubrisproxy"')
            raise APIError(401, "a valid Authorization: Bearer token is required")

    def _stats_page(self, request: server.Request) -> bytes:
        # The stats page holds no data itself: what it fetches asks for the token.
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return STATS_PAGE

    def _healthz(self, request: server.Request) -> object:
        # Liveness, for a container's or balancer's check: answered by the event loop the frontends run on,
        # and telling nothing else, so it needs no token.
        return {"status": "ok"}

    def _metrics(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)

    def _stats_csv(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return stats_csv(self.proxy).encode()

    def _backends(self, request: server.Request) -> object:
        return {"backends": [backend_fields(b) for b in self.proxy.backends.values()],
                "resume_buffered_bytes": self.proxy.budget.held}

    def _one_backend(self, request: server.Request, name: str) -> object:
        return backend_fields(self._backend(name))

    def _stick(self, request: server.Request, name: str) -> object:
        return self._stick_table(self._backend(name), request)

    def _frontends(self, request: server.Request) -> object:
        return {"frontends": [frontend_fields(f) for f in self.proxy.frontends]}

    def _stats_json(self, request: server.Request) -> object:
        return stats(self.proxy)

    def _remove_server(self, request: server.Request, backend_name: str, name: str) -> object:
        backend = self._backend(backend_name)
        removed = self._call(lambda: backend.remove_server(name))
        self._audit(request, "remove", backend, removed)
        return server_fields(removed)

    def _server_action(self, request: server.Request, backend_name: str, name: str, action: str) -> object:
        backend = self._backend(backend_name)
        if action == "weight":
            weight = _body(request).get("weight")
            chosen = self._call(lambda: backend.set_server_weight(name, weight))
        elif action in _SERVER_ACTIONS:
            chosen = self._call(lambda: _SERVER_ACTIONS[action](backend, name))
        else:
            raise APIError(404, f"no server action {action!r}; expected drain, ready, maint or weight")
        self._audit(request, action, backend, chosen)
        if self.proxy.shared is not None:
            self.proxy.shared.admin_changed(backend, chosen)
        return server_fields(chosen)

    def _add_server(self, request: server.Request, backend_name: str) -> object:
        backend = self._backend(backend_name)
        body = _body(request)
        unknown = set(body) - {"name", "address", "weight", "maxconn", "backup"}
        if unknown:
            raise APIError(400, f"unknown fields {sorted(unknown)}; expected name, address, weight, maxconn, backup")
        name, address = body.get("name"), body.get("address")
        if not isinstance(name, str) or not isinstance(address, str) or not _SERVER_NAME.fullmatch(name):
            raise APIError(400, "expected a JSON object with a name (letters, digits, '.', '_', '-') and an address"
                                " such as '127.0.0.1:9003'")
        try:
            config = parse_server("address", address, name)
        except ConfigError as e:
            raise APIError(400, str(e)) from None
        for key in ("weight", "maxconn"):
            value = body.get(key, getattr(config, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (key == "weight" and value > 256):
                raise APIError(400, f"{key} must be a non-negative integer (weight at most 256), got {value!r}")
        backup = body.get("backup", False)
        if not isinstance(backup, bool):
            raise APIError(400, f"backup must be true or false, got {backup!r}")
        config = replace(config, weight=body.get("weight", config.weight), maxconn=body.get("maxconn", 0),
                         backup=backup)
        added = self._call(lambda: backend.add_server(config))
        checker = self.proxy.checkers.get(backend.name)
        if checker is not None:
            checker.watch(added)
        self._audit(request, "add", backend, added)
        return server_fields(added)

    @staticmethod
    def _stick_table(backend: Backend, request: server.Request) -> object:
        if backend.table is None:
            raise APIError(404, f"backend {backend.name} has no stick table")
        try:
            limit = int((request.args or {}).get(b"limit", [b"100"])[0])
        except ValueError:
            raise APIError(400, "limit must be an integer") from None
        if not 1 <= limit <= 10000:
            raise APIError(400, "limit must be from 1 to 10000")
        store = backend.table.store
        entries = [{"key": key.decode("latin-1"), "server": server, "expires_in": round(left, 1)}
                   for key, server, left in store.items(limit)]
        return {"backend": backend.name, "size": len(store), "entries": entries}

    def _cluster(self, request: server.Request) -> object:
        if self.proxy.cluster is None:
            raise APIError(404, "this proxy is not in a cluster (no [cluster] table)")
        return self.proxy.cluster()

    def _reload(self, request: server.Request) -> object:
        return {"changes": self.reload_by(self.proxy.reload, request)}

    def reload_by(self, reload: Callable[[], T] | None, request: server.Request) -> T:
        """What ``reload`` answers, asked for by ``request``; None (no configuration file) is a 409, a bad
        configuration a 400 that says nothing changed."""
        if reload is None:
            raise APIError(409, "the proxy was not started with a configuration file: nothing to reload")
        try:
            answer = reload()
        except ConfigError as e:
            raise APIError(400, f"the configuration was not reloaded, nothing changed: {e}") from None
        self.log.info("admin: reload from {peer}", peer=_peer(request))
        return answer

    def _upgrade_status(self, request: server.Request) -> object:
        return self._upgrades().status()

    def _upgrade(self, request: server.Request) -> object:
        """Start a live upgrade; answered once the new process has taken the listeners (its pid), or failed (why:
        502, the proxy serving on as before; 409 while another is under way)."""
        self.log.info("admin: upgrade from {peer}", peer=_peer(request))

        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(status: int, body: dict[str, Any]) -> None:
            if not gone:
                request.write(_json(request, status, body))
                request.finish()

        started = self._upgrades().start()
        started.addCallbacks(lambda done: answer(200, done), lambda failure: answer(*upgrade_failed(failure)))
        return server.NOT_DONE_YET

    def _upgrades(self) -> Upgrades:
        if self.proxy.upgrade is None:
            raise APIError(409, "this process cannot be upgraded live (worker processes: restart them)")
        return self.proxy.upgrade

    def _sessions(self, request: server.Request) -> object:
        sessions = []
        for frontend in self.proxy.frontends:
            for relay in frontend.websockets:
                if isinstance(relay, WebSocketSession):
                    sessions.append(relay.describe() | {"frontend": frontend.name})
        return {"sessions": sessions}

    def _backend(self, name: str) -> Backend:
        backend = self.proxy.backends.get(name)
        if backend is None:
            raise APIError(404, f"no backend named {name!r}; known: {', '.join(self.proxy.backends)}")
        return backend

    @staticmethod
    def _call(action: Callable[[], Server]) -> Server:
        try:
            return action()
        except KeyError as e:
            raise APIError(404, str(e.args[0])) from None
        except ValueError as e:
            raise APIError(400, str(e)) from None

    def _audit(self, request: server.Request, action: str, backend: Backend, chosen: Server) -> None:
        self.log.info("admin: {action} {backend}/{server} from {peer}", action=action, backend=backend.name,
                      server=chosen.name, peer=_peer(request))


@dataclass(frozen=True)
class _Call:
    """One call of the API: its method and path (``*`` is any one segment, handed to ``answer`` in order),
    and whether it is served without the token. ``answer`` returns bytes to send as they are, or a value
    to send as JSON."""

    method: str
    path: tuple[str, ...]
    answer: Callable[..., object]
    public: bool = False

    def match(self, method: str, path: list[str]) -> list[str] | None:
        """The segments ``*`` matched, or None if this is not the call asked for."""
        if method != self.method or len(path) != len(self.path):
            return None
        args = []
        for want, got in zip(self.path, path, strict=True):
            if want == "*":
                args.append(got)
            elif want != got:
                return None
        return args


_CALLS = (
    _Call("GET", (), AdminAPI._stats_page, public=True),
    _Call("GET", ("healthz",), AdminAPI._healthz, public=True),
    _Call("HEAD", ("healthz",), AdminAPI._healthz, public=True),
    _Call("GET", ("metrics",), AdminAPI._metrics),
    _Call("GET", ("stats.csv",), AdminAPI._stats_csv),
    _Call("GET", ("stats.json",), AdminAPI._stats_json),
    _Call("GET", ("backends",), AdminAPI._backends),
    _Call("GET", ("backends", "*"), AdminAPI._one_backend),
    _Call("GET", ("backends", "*", "stick"), AdminAPI._stick),
    _Call("GET", ("sessions",), AdminAPI._sessions),
    _Call("GET", ("frontends",), AdminAPI._frontends),
    _Call("GET", ("cluster",), AdminAPI._cluster),
    _Call("POST", ("reload",), AdminAPI._reload),
    _Call("GET", ("upgrade",), AdminAPI._upgrade_status),
    _Call("POST", ("upgrade",), AdminAPI._upgrade),
    _Call("POST", ("backends", "*", "servers"), AdminAPI._add_server),
    _Call("POST", ("backends", "*", "servers", "*", "*"), AdminAPI._server_action),
    _Call("DELETE", ("backends", "*", "servers", "*"), AdminAPI._remove_server),
)


AdminAPI.calls = _CALLS


def _find(calls: tuple[_Call, ...], method: str, path: list[str]) -> tuple[_Call | None, list[str]]:
    for call in calls:
        args = call.match(method, path)
        if args is not None:
            return call, args
    return None, []


def upgrade_failed(failure: Failure) -> tuple[int, dict[str, Any]]:
    """The answer to an upgrade that did not happen: 409 while another is under way, else 502, with why."""
    status = 409 if failure.check(UpgradeUnderWay) else 502
    return status, {"status": status, "error": failure.getErrorMessage()}


def _not_found(request: server.Request, method: str) -> APIError:
    if method == "GET":
        return APIError(404, "not found; see GET /frontends, /backends, /sessions, /stats.json, /stats.csv, /metrics")
    if method not in ("GET", "POST", "DELETE"):
        request.setHeader(b"allow", b"GET, POST, DELETE")
        return APIError(405, f"{method} is not allowed here")
    return APIError(404, "not found; see docs/admin.md for the calls")


def _peer(request: server.Request) -> str:
    """The caller's address for a log line (its host; a unix socket's path or ``local``)."""
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or getattr(address, "name", None) or "local")


class AdminAPISite(AdminSite):
    """Admin calls are not logged one line each (they would crowd the main log: monitoring polls them); the
    calls that change something are logged by the API with the caller's address."""

    def log(self, request: http.Request) -> None:
        pass


def admin_site(proxy: RunningProxy, token: str | None = None, timeouts: Timeouts | None = None,
               reactor: Any = None) -> server.Site:
    """The admin listener's site: a request must arrive within ``timeout http-request``, and a connection
    idle for ``timeout client`` is closed."""
    timeouts = timeouts or Timeouts()
    return AdminAPISite(AdminAPI(proxy, token), timeouts.http_request, timeouts.client, reactor)


def _loopback_host(host: bytes) -> bool:
    """Whether a Host header names this machine's loopback: ``localhost`` (or ``*.localhost``), or a
    loopback address, with or without a port."""
    text = host.decode("latin-1").lower()
    if text.startswith("["):
        name = text[1:].partition("]")[0]
    else:
        name, _, port = text.rpartition(":")
        if not name or not port.isdigit():
            name = text
    name = name.removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _body(request: server.Request) -> dict[str, Any]:
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise APIError(413, f"the body is over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as e:
        raise APIError(400, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    return body


def _json(request: server.Request, status: int, body: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


#: The name the supervisor's admin API (rubrisproxy.workers) adds its own calls with.
Call = _Call
