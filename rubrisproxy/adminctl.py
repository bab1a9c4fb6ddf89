"""The admin API from a shell, with readable tables (docs/admin.md): ``rubrisproxy ctl ACTION`` and
``rubrisproxy-ctl ACTION``, the same commands. ``rubrisproxy-ctl`` imports nothing but the standard library, so it
starts in a few tens of milliseconds rather than most of a second: what a health check run every few seconds
(the image's ``HEALTHCHECK``) should call."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from . import __version__

DEFAULT_ADMIN = "http://127.0.0.1:9000"


class CtlError(Exception):
    """The API refused the call, or could not be reached."""


@dataclass(frozen=True)
class AdminClient:
    """Where the admin API answers, and the token to show it."""

    base: str
    token: str | None = None

    def call(self, method: str, path: str, body: object = None, timeout: float = 10) -> Any:
        """One API call; the decoded JSON answer, or :class:`CtlError` with the API's message."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base.rstrip("/") + path, data=data, method=method)
        if method != "GET":
            request.add_header("Content-Type", "application/json")  # the API refuses a change declared otherwise
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise CtlError(f"{e.code}: {message}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise CtlError(f"cannot reach the admin API at {self.base}: {getattr(e, 'reason', e)}") from None


@dataclass(frozen=True)
class NewServer:
    """What ``ctl add`` sets for a new server; None leaves the API's default."""

    address: str
    weight: int | None = None
    maxconn: int | None = None
    backup: bool = False

    def body(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "address": self.address}
        if self.weight is not None:
            body["weight"] = self.weight
        if self.maxconn is not None:
            body["maxconn"] = self.maxconn
        if self.backup:
            body["backup"] = True
        return body


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Rows as aligned columns under ``header``."""
    cells = [list(map(str, header))] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def status(api: AdminClient) -> str:
    answer = api.call("GET", "/backends")
    rows = [
        (backend["name"], server["name"], server["address"], server["state"], server["weight"], server["active"],
         server["sessions"], server["total"], server["connect_failures"])
        for backend in answer["backends"] for server in backend["servers"]
    ]
    header = ("BACKEND", "SERVER", "ADDRESS", "STATE", "WEIGHT", "ACTIVE", "SESSIONS", "TOTAL", "CONNECT FAILS")
    lines = [table(rows, header)]
    for backend in answer["backends"]:
        failures = ", ".join(f"{k} {v}" for k, v in backend["resume_failures"].items()) or "none"
        lines.append(f"{backend['name']}: queue {backend['queue']}, resumes {backend['resumes']}, "
                     f"resume failures {failures}")
    lines.append(f"held by moving sessions: {answer['resume_buffered_bytes']} bytes")
    return "\n".join(lines)


def sessions(api: AdminClient) -> str:
    answer = api.call("GET", "/sessions")
    rows = [(s["id"], s["frontend"], s["client"], s["server"], s["state"], f"{s['age']:.0f}s", s["resumes"],
             s["buffered_bytes"]) for s in answer["sessions"]]
    return table(rows, ("SESSION", "FRONTEND", "CLIENT", "SERVER", "STATE", "AGE", "RESUMES", "HELD BYTES"))


def frontends(api: AdminClient) -> str:
    answer = api.call("GET", "/frontends")
    rows = [(f["name"], f["peers"], f["connections"], f["accepted"], f["requests"], f["websockets"], f["bytes_in"],
             f["bytes_out"], "-" if f["client_sessions"] is None else f["client_sessions"])
            for f in answer["frontends"]]
    header = ("FRONTEND", "PEERS", "OPEN", "ACCEPTED", "REQUESTS", "WEBSOCKETS", "BYTES IN", "BYTES OUT", "CLIENTS")
    return table(rows, header)


def workers(api: AdminClient) -> str:
    answer = api.call("GET", "/workers")
    rows = [(w["index"], w["pid"] or "-", w["state"], w["restarts"], f"{w['uptime']:.0f}s", w["last_exit"] or "-",
             "-" if w["accepted"] is None else w["accepted"], "-" if w["requests"] is None else w["requests"])
            for w in answer["workers"]]
    return table(rows, ("WORKER", "PID", "STATE", "RESTARTS", "UP", "LAST EXIT", "ACCEPTED", "REQUESTS"))


def health(api: AdminClient) -> str:
    return str(api.call("GET", "/healthz")["status"])


def resolve_target(api: AdminClient, target: str) -> tuple[str, str]:
    """``BACKEND/SERVER`` split in two; a bare ``SERVER`` belongs to the only backend, if there is one."""
    backend, sep, server = target.partition("/")
    if sep:
        if not backend or not server:
            raise CtlError(f"expected BACKEND/SERVER, got {target!r}")
        return backend, server
    if not target:
        raise CtlError("expected BACKEND/SERVER, got ''")
    names = [b["name"] for b in api.call("GET", "/backends")["backends"]]
    if len(names) != 1:
        raise CtlError(f"there are {len(names)} backends ({', '.join(names) or 'none'}): name one, "
                       f"as BACKEND/SERVER, not {target!r}")
    return names[0], target


def _server_path(backend: str, server: str = "") -> str:
    path = f"/backends/{quote(backend, safe='')}/servers"
    return f"{path}/{quote(server, safe='')}" if server else path


def _describe(backend: str, answer: dict[str, Any]) -> str:
    return f"{backend}/{answer['name']}: {answer['state']}, weight {answer['weight']}, {answer['sessions']} sessions"


def server_action(api: AdminClient, action: str, target: str, weight: int | None = None) -> str:
    backend, server = resolve_target(api, target)
    body = {"weight": weight} if action == "weight" else None
    return _describe(backend, api.call("POST", f"{_server_path(backend, server)}/{action}", body))


def add_server(api: AdminClient, target: str, new: NewServer) -> str:
    backend, server = resolve_target(api, target)
    answer = api.call("POST", _server_path(backend), new.body(server))
    return f"{backend}/{answer['name']} added at {answer['address']}: {answer['state']}, weight {answer['weight']}"


def remove_server(api: AdminClient, target: str) -> str:
    backend, server = resolve_target(api, target)
    answer = api.call("DELETE", _server_path(backend, server))
    return f"{backend}/{answer['name']} removed ({answer['sessions']} sessions moving, {answer['active']} in progress)"


def reload(api: AdminClient) -> str:
    changes = api.call("POST", "/reload")["changes"]
    return "\n".join(changes) if changes else "nothing changed"


#: How long ``ctl upgrade`` waits for the new process (each worker's replacement in turn) to take over.
UPGRADE_WAIT = 600.0


def upgrade(api: AdminClient, status_only: bool = False) -> str:
    """Start a live upgrade and say the new process's pid (or why not: :class:`CtlError`); or its status."""
    if status_only:
        return upgrade_status(api.call("GET", "/upgrade"))
    answer = api.call("POST", "/upgrade", {}, timeout=UPGRADE_WAIT)
    if "workers" in answer:  # the supervisor stays, its workers were replaced in turn
        replaced = [f"worker {w['index']}: pid {w['was']} -> {w['pid']}" for w in answer["workers"]]
        return f"upgraded: supervisor {answer['pid']} stays; " + "; ".join(replaced)
    return f"upgraded: process {answer['pid']} serves; process {answer['was']} hands its connections over and exits"


def upgrade_status(status: dict[str, Any]) -> str:
    """``GET /upgrade`` as lines: the state, the last failure, and the counts by outcome and kind."""
    lines = [f"state: {status['state']} (pid {status['pid']}" + (f", new pid {status['new_pid']}" if status.get("new_pid") else "")
             + f", deadline {status['deadline']:g}s)"]
    if status.get("last_failure"):
        lines.append(f"last failure: {status['last_failure']}")
    for title, counts in (("this process", status["connections"]),
                          (f"process {status['previous']['pid']}", status["previous"]["connections"])
                          if status.get("previous") else ("", None)):
        if counts is not None and any(counts.values()):
            lines.append(f"{title}: " + "; ".join(
                f"{outcome} " + (", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "0")
                for outcome, kinds in counts.items()))
    return "\n".join(lines)


#: ``ctl ACTION``: what each prints (an action not here is a server action: drain, ready, maint, weight).
_ACTIONS: dict[str, Callable[[AdminClient, argparse.Namespace], str]] = {
    "reload": lambda api, args: reload(api),
    "upgrade": lambda api, args: upgrade(api, args.status),
    "status": lambda api, args: status(api),
    "frontends": lambda api, args: frontends(api),
    "workers": lambda api, args: workers(api),
    "sessions": lambda api, args: sessions(api),
    "health": lambda api, args: health(api),
    "add": lambda api, args: add_server(api, args.target, NewServer(args.address, args.weight, args.maxconn,
                                                                    args.backup)),
    "remove": lambda api, args: remove_server(api, args.target),
}


def add_ctl_arguments(parser: argparse.ArgumentParser) -> None:
    """The admin API's address and token, and each action with its arguments, on ``parser``."""
    parser.add_argument("--admin", default=os.environ.get("RUBRISPROXY_ADMIN", DEFAULT_ADMIN),
                        help=f"the admin API's URL (default $RUBRISPROXY_ADMIN or {DEFAULT_ADMIN})")
    parser.add_argument("--token", default=os.environ.get("RUBRISPROXY_ADMIN_TOKEN"),
                        help="the admin token (default $RUBRISPROXY_ADMIN_TOKEN)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="backends and servers")
    actions.add_parser("frontends", help="frontends: connections, requests, WebSockets, bytes")
    actions.add_parser("sessions", help="session-mode WebSockets")
    actions.add_parser("workers", help="worker processes ([process] workers > 1): pid, state, restarts, spread")
    actions.add_parser("health", help="exit 0 if the proxy answers (GET /healthz), else 1")
    target_help = "BACKEND/SERVER, or SERVER alone when there is one backend"
    for name, what in (("drain", "move its sessions away; take nothing new"), ("ready", "take traffic again"),
                       ("maint", "as drain, shown as maintenance"),
                       ("remove", "remove a server: its sessions move, what it serves finishes")):
        actions.add_parser(name, help=what).add_argument("target", metavar="[BACKEND/]SERVER", help=target_help)
    weight = actions.add_parser("weight", help="set a server's weight")
    weight.add_argument("target", metavar="[BACKEND/]SERVER", help=target_help)
    weight.add_argument("weight", type=int)
    add = actions.add_parser("add", help="add a server; it is health-checked like the others")
    add.add_argument("target", metavar="[BACKEND/]SERVER", help=target_help + "; the new server's name")
    add.add_argument("address", help="host:port, http://host:port or https://host:port")
    add.add_argument("--weight", type=int, help="0 to 256 (default 1)")
    add.add_argument("--maxconn", type=int, help="requests in flight at most (default 0: no limit)")
    add.add_argument("--backup", action="store_true", help="used only when no normal server is up")
    actions.add_parser("reload", help="re-read the configuration file and apply it in place")
    upgrade_parser = actions.add_parser("upgrade", help="live upgrade: a new process from the code installed now "
                                        "takes the listeners and connections (docs/upgrade.md)")
    upgrade_parser.add_argument("--status", action="store_true", help="show the upgrade's state and counts only")


def run(args: argparse.Namespace) -> int:
    """Call the admin API for the action ``args`` name (:func:`add_ctl_arguments`) and print what it answered;
    0, or 1 with one line on stderr."""
    api = AdminClient(args.admin, args.token)
    try:
        action = _ACTIONS.get(args.action)
        if action is not None:
            print(action(api, args))
        else:
            print(server_action(api, args.action, args.target, getattr(args, "weight", None)))
    except CtlError as e:
        print(f"rubrisproxy ctl: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``rubrisproxy-ctl ACTION``: ``rubrisproxy ctl ACTION`` without the rest of the package's imports."""
    parser = argparse.ArgumentParser(prog="rubrisproxy-ctl", description="Talk to a running rubrisproxy through its "
                                     "admin API.")
    parser.add_argument("--version", action="version", version=f"rubrisproxy {__version__}")
    add_ctl_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
