"""Turn a TOML file plus command-line flags into a validated :class:`ProxyConfig`.

Each TOML table is read by its table of field specifications (``_tables``: the keys it
takes, each with its parser); a key left out keeps the model's default (``_model``).
Here: the keys read by hand, for they depend on other keys or tables, and the rules
across keys and tables.

Flags override the file: ``--listen`` replaces the listeners of the one frontend,
``--backend`` replaces the servers of the one backend, ``--timeout NAME=VALUE``
replaces one timeout. With several frontends or backends in the file, those flags
are ambiguous and refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import _tables as tables
from ._errors import ConfigError
from ._fields import as_table
from ._model import (
    REQUEST_ACTIONS,
    RESPONSE_ACTIONS,
    TEMPLATE_VARIABLES,
    AccessLogSettings,
    BackendConfig,
    ClientsConfig,
    ForwardConfig,
    FrontendConfig,
    LogSettings,
    ProxyConfig,
    RouteConfig,
    RuleConfig,
    Timeouts,
    WebSocketConfig,
)
from ._values import (
    deny_status,
    endpoints,
    listener_address,
    listeners_clash,
    log_format,
    log_path,
    methods,
    parse_duration,
    parse_server,
    split_endpoint,
    template_parts,
    websocket_mode,
    workers,
)

DEFAULT_NAME = "default"


@dataclass(slots=True)
class CommandLine:
    """What the twistd options contribute on top of the file."""

    config_path: str | None = None
    listen: Sequence[str] = ()
    backends: Sequence[str] = ()
    timeouts: Mapping[str, str] = field(default_factory=dict)
    access_log: str | None = None
    access_log_format: str | None = None
    log_format: str | None = None  # the main log's
    websocket: str | None = None  # the WebSocket mode of every backend
    admin: Sequence[str] = ()  # admin listener endpoints
    demo: bool = False
    workers: str | None = None  # a number of worker processes, or "auto"


def load_config(command_line: CommandLine) -> ProxyConfig:
    """Read the file named on the command line (if any) and apply the flags. The classes and key files it names
    are checked by the caller (:func:`rubrisproxy.checks.check_config`)."""
    document: dict[str, Any] = {}
    if command_line.config_path:
        path = command_line.config_path
        try:
            with open(path, "rb") as f:
                text = f.read()
            # A byte order mark, which some Windows editors put first, is no TOML: the file is read without it.
            document = tomllib.loads(text.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
        # What is wrong with the file itself is said of the file: "PATH: cannot read: ...".
        except OSError as e:
            raise ConfigError(path, f"cannot read: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(path, f"not UTF-8 text (byte {e.start})") from None
        except RecursionError:
            raise ConfigError(path, "nests arrays or tables too deeply") from None
        except ValueError as e:  # TOMLDecodeError, or an integer too long to convert
            raise ConfigError(path, f"not valid TOML: {e}") from None
    return apply_command_line(config_from_document(document), command_line)


def config_from_document(document: Mapping[str, Any]) -> ProxyConfig:
    """Validate a parsed TOML document; every error names its key."""
    values = tables.DOCUMENT.read("", document) | tables.SHUTDOWN.read("shutdown", document.get("shutdown", {}))
    config = ProxyConfig(frontends=(), backends={}, **values)
    if config.shutdown_spread > config.shutdown_grace:
        raise ConfigError("shutdown.close-spread", f"must not be longer than shutdown.grace ({config.shutdown_grace:g}s)")
    websocket = _websocket("websocket", document.get("websocket", {}), config.websocket)
    backends = {
        name: _backend(name, body, websocket)
        for name, body in as_table("backends", document.get("backends", {})).items()
    }
    frontend_tables = as_table("frontends", document.get("frontends", {}))
    if frontend_tables:
        frontends = tuple(_frontend(name, body, backends) for name, body in frontend_tables.items())
    else:
        frontends = (FrontendConfig(name=DEFAULT_NAME, backend=_default_backend(backends)),)
    return replace(config, frontends=frontends, backends=backends, websocket=websocket)


def apply_command_line(config: ProxyConfig, command_line: CommandLine) -> ProxyConfig:
    """Apply flags over a configuration, as the module docstring describes."""
    frontends = _listen_flag(list(config.frontends), command_line)
    backends = _backend_flag(config, frontends, command_line)
    timeouts = config.timeouts
    for name, value in command_line.timeouts.items():
        timeouts = _override_timeout(timeouts, name, value)
    access_log = _access_log_flags(config.access_log, command_line)
    log = config.log
    if command_line.log_format is not None:
        log = LogSettings(format=log_format("--log-format", command_line.log_format))
    admin = config.admin
    if command_line.admin:
        admin = replace(admin, listen=endpoints("--admin", list(command_line.admin)))
        tables.check_admin("admin", admin)
    if command_line.websocket is not None:
        mode = websocket_mode("--websocket", command_line.websocket)
        backends = {
            name: replace(backend, websocket=replace(backend.websocket, mode=mode)) for name, backend in backends.items()
        }
    # The demo is what runs with nothing configured: never in place of a file's backend (one with no servers answers
    # 503 until servers are added), nor for a file that names none.
    demo = command_line.demo or (not backends and not command_line.config_path and any(f.forward is None for f in frontends))
    _add_missing_backends(config, command_line, frontends, backends, demo)
    process = config.process
    if command_line.workers is not None:
        process = replace(process, workers=workers("--workers", command_line.workers))
    new = replace(
        config,
        frontends=tuple(frontends),
        backends=backends,
        timeouts=timeouts,
        access_log=access_log,
        log=log,
        admin=admin,
        process=process,
        demo=demo,
    )
    _check_workers(new)
    _check_listeners_apart(new)
    return new


def _check_listeners_apart(config: ProxyConfig) -> None:
    """Two listeners on one TCP port (the same interface, or either on every one) cannot both bind, or, with
    several workers (SO_REUSEPORT), would share its connections at random: refused, naming both."""
    seen: list[tuple[str, tuple[str, str, int], str]] = []
    owners = [(f"frontends.{f.name}.listen", f.listen) for f in config.frontends] + [("admin.listen", config.admin.listen)]
    for key, listen in owners:
        for description in listen:
            address = listener_address(description)
            if address is None:
                continue
            for other_key, other_address, other in seen:
                if listeners_clash(address, other_address):
                    where = "another of its listeners" if other_key == key else other_key
                    raise ConfigError(key, f"{description!r} listens on the port of {other!r} ({where})")
            seen.append((key, address, description))


def _check_workers(config: ProxyConfig) -> None:
    """With several workers, each binds every frontend listener with SO_REUSEPORT: a UNIX socket or a TCP port 0
    (a port of each worker's own) cannot be shared, and the demo's origins live in one process."""
    if config.process.workers == 1:
        return
    if config.demo:
        raise ConfigError("process.workers", "the demo runs in one process: set workers = 1, or configure backends")
    for frontend in config.frontends:
        for description in frontend.listen:
            kind, positional, named = split_endpoint(description)
            port = positional[0] if positional else dict(named).get("port", "0")
            if kind not in ("tcp", "tcp6", "ssl") or port == "0":
                raise ConfigError(f"frontends.{frontend.name}.listen",
                                  f"{description!r}: with process.workers > 1 every worker binds it with SO_REUSEPORT,"
                                  " so it must be a TCP port other than 0")


def _listen_flag(frontends: list[FrontendConfig], command_line: CommandLine) -> list[FrontendConfig]:
    """``--listen``: the listeners of the one frontend."""
    if command_line.listen:
        if len(frontends) != 1:
            raise ConfigError("--listen", "the config file has several frontends; set their listen keys there")
        frontends[0] = replace(frontends[0], listen=endpoints("--listen", list(command_line.listen)))
    return frontends


def _backend_flag(config: ProxyConfig, frontends: list[FrontendConfig],
                  command_line: CommandLine) -> dict[str, BackendConfig]:
    """``--backend``: the servers of the one backend (made with the file's defaults if there is none)."""
    backends = dict(config.backends)
    if not command_line.backends:
        return backends
    target = frontends[0].backend if len(frontends) == 1 else None
    if len(backends) > 1 or (len(frontends) > 1 and not backends):
        raise ConfigError("--backend", "the config file has several backends; set their servers there")
    name = target or next(iter(backends))
    servers = tuple(
        parse_server("--backend", address, f"s{index + 1}")
        for index, address in enumerate(command_line.backends)
    )
    previous = backends.pop(name, None)
    if previous is None:  # the quick start: a backend with the defaults a file's backend gets
        previous = BackendConfig(name=name, websocket=config.websocket)
    backends[name] = replace(previous, servers=servers)
    return backends


def _access_log_flags(access_log: AccessLogSettings, command_line: CommandLine) -> AccessLogSettings:
    """``--access-log`` and ``--access-log-format``."""
    if command_line.access_log is not None:
        enabled = command_line.access_log != "off"
        path = log_path("--access-log", command_line.access_log) if enabled else access_log.path
        access_log = replace(access_log, path=path, enabled=enabled)
    if command_line.access_log_format is not None:
        access_log = replace(access_log, format=log_format("--access-log-format", command_line.access_log_format))
    return access_log


def _add_missing_backends(config: ProxyConfig, command_line: CommandLine, frontends: list[FrontendConfig],
                          backends: dict[str, BackendConfig], demo: bool) -> None:
    """A frontend's backend that no table defines: in the demo, an empty one (the demo fills it); else an
    error."""
    for frontend in frontends:
        if frontend.forward is None and frontend.backend not in backends:
            if not demo and not backends:
                raise ConfigError("backends", "the configuration defines none: add a [backends.NAME] table with its"
                                              " servers (the built-in demo runs without --config, or with --demo)")
            if not demo:
                raise ConfigError(f"frontends.{frontend.name}.backend", f"no backend named {frontend.backend!r}")
            websocket = config.websocket
            if command_line.websocket is not None:
                websocket = replace(websocket, mode=command_line.websocket)
            backends[frontend.backend] = BackendConfig(name=frontend.backend, websocket=websocket)


def _override_timeout(timeouts: Timeouts, name: str, value: object) -> Timeouts:
    attribute = name.replace("-", "_")
    if attribute not in {f.name for f in fields(Timeouts)}:
        raise ConfigError(f"--timeout {name}", f"unknown timeout; known: {_timeout_names()}")
    return replace(timeouts, **{attribute: parse_duration(f"--timeout {name}", value)})


def _timeout_names() -> str:
    return ", ".join(f.name.replace("_", "-") for f in fields(Timeouts))


def _websocket(key: str, value: object, defaults: WebSocketConfig) -> WebSocketConfig:
    """A ``[websocket]`` table: the keys it sets over ``defaults``."""
    config = replace(defaults, **tables.WEBSOCKET.read(key, value))
    if config.max_frame_size > config.max_message_size:
        raise ConfigError(f"{key}.max-frame-size", "cannot be larger than max-message-size")
    if config.auto_fragment_size <= 0:
        raise ConfigError(f"{key}.auto-fragment-size", "must be greater than zero")
    return config


def _backend(name: str, value: object, websocket: WebSocketConfig) -> BackendConfig:
    key = f"backends.{name}"
    table = as_table(key, value)
    values = tables.BACKEND.read(key, table)
    if values.get("engineio_sid_prefix") and values.get("engineio_sticky") is False:
        raise ConfigError(f"{key}.engineio-sid-prefix", "needs engineio-sticky (the sids are learned to be prefixed)")
    return BackendConfig(name=name, websocket=_websocket(f"{key}.websocket", table.get("websocket", {}), websocket),
                         **values)


def _route(key: str, raw: object, backends: Mapping[str, BackendConfig], unique_id: str | None) -> RouteConfig:
    table = as_table(key, raw)
    values = tables.ROUTE.read(key, table) | _rules_of(key, table, unique_id)
    for index, rule in enumerate(values.get("http_request", ())):
        if rule.connections:
            raise ConfigError(f"{key}.http-request[{index}].connections",
                              "a connection opens before any route is chosen: put it in the frontend's rules")
    if "value" in values and "header" not in values:
        raise ConfigError(f"{key}.value", "needs a header to compare with")
    if "method" in table and "methods" not in table:
        values["methods"] = methods(f"{key}.methods", table["method"])
    backend, deny = table.get("backend"), table.get("deny")
    if (backend is None) == (deny is None):
        raise ConfigError(key, "a route needs exactly one of backend or deny")
    if backend is None:
        return RouteConfig(**values, deny=deny_status(f"{key}.deny", deny))
    if not isinstance(backend, str) or backend not in backends:
        raise ConfigError(f"{key}.backend", f"no backend named {backend!r}; known: {', '.join(backends)}")
    return RouteConfig(**values, backend=backend)


def _default_backend(backends: Mapping[str, BackendConfig]) -> str:
    """The backend of a frontend that names none: the only one, else the model's default name."""
    if len(backends) == 1:
        return next(iter(backends))
    return FrontendConfig(name="").backend


def _frontend(name: str, value: object, backends: Mapping[str, BackendConfig]) -> FrontendConfig:
    key = f"frontends.{name}"
    table = as_table(key, value)
    config = FrontendConfig(name=name, **tables.FRONTEND.read(key, table))
    _check_peers(key, config, table)
    config = _http2(key, config, table)
    if "clients" in table:
        config = replace(config, clients=_clients(f"{key}.clients", table["clients"], config.peers))
    mode = table.get("mode", "reverse")
    if mode not in ("reverse", "forward"):
        raise ConfigError(f"{key}.mode", f"expected reverse or forward, got {mode!r}")
    if mode == "forward" or "forward" in table:
        if mode != "forward":
            raise ConfigError(f"{key}.forward", "only a frontend with mode = \"forward\" takes forward rules")
        for reverse_only in ("http-request", "http-response", "unique-id-header"):
            if reverse_only in table:
                raise ConfigError(f"{key}.{reverse_only}", "a forward proxy's frontend takes no HTTP rules")
        return replace(config, backend="", forward=_forward(f"{key}.forward", table.get("forward", {}), backends))
    return _reverse(key, config, table, backends)


def _http2(key: str, config: FrontendConfig, table: Mapping[str, Any]) -> FrontendConfig:
    """A frontend that does not speak HTTP/2 (turned off, or a forward proxy) does not offer it by ALPN."""
    forward = table.get("mode") == "forward"
    if forward and config.http2.enabled and "enabled" in table.get("http2", {}):
        raise ConfigError(f"{key}.http2.enabled", "a forward proxy speaks HTTP/1.1 only")
    if config.http2.enabled and not forward:
        return config
    if forward:
        config = replace(config, http2=replace(config.http2, enabled=False))
    tls = config.tls
    if tls is None or "h2" not in tls.alpn:
        return config
    if "alpn" in table.get("tls", {}):
        raise ConfigError(f"{key}.tls.alpn", "offers h2, which this frontend does not speak (http2.enabled)")
    return replace(config, tls=replace(tls, alpn=tuple(name for name in tls.alpn if name != "h2")))


def _check_peers(key: str, config: FrontendConfig, table: Mapping[str, object]) -> None:
    """The rules between ``peers`` and the keys about proxies in front."""
    if config.peers == "proxied" and not config.trusted_proxies:
        raise ConfigError(f"{key}.trusted-proxies", "a proxied frontend needs the networks of the proxies it trusts")
    if config.proxy_protocol != "off" and config.peers != "proxied":
        raise ConfigError(f"{key}.proxy-protocol", 'the PROXY protocol is spoken by proxies: set peers = "proxied"')
    for proxy_key in ("trusted-proxies", "forwarded-header"):  # a local frontend's peers are its clients
        if config.peers == "local" and proxy_key in table:
            raise ConfigError(f"{key}.{proxy_key}", 'only proxies are trusted to name their clients: set peers = "proxied"')


def _reverse(key: str, config: FrontendConfig, table: Mapping[str, Any],
             backends: Mapping[str, BackendConfig]) -> FrontendConfig:
    """A reverse-proxy frontend's listeners, backend and routes."""
    if not config.listen:
        raise ConfigError(f"{key}.listen", "expected at least one endpoint string such as 'tcp:8080'")
    backend = table.get("backend", _default_backend(backends))
    if not isinstance(backend, str):
        raise ConfigError(f"{key}.backend", f"expected a backend name, got {backend!r}")
    if backends and backend not in backends:
        if "backend" not in table:
            raise ConfigError(f"{key}.backend", f"missing: name one of the backends ({', '.join(backends)})")
        raise ConfigError(f"{key}.backend", f"no backend named {backend!r}; known: {', '.join(backends)}")
    raw_routes = table.get("routes", [])
    if not isinstance(raw_routes, list):
        raise ConfigError(f"{key}.routes", "expected a list of route tables")
    routes = tuple(_route(f"{key}.routes[{i}]", raw, backends, config.unique_id_header)
                   for i, raw in enumerate(raw_routes))
    return replace(config, backend=backend, routes=routes, **_rules_of(key, table, config.unique_id_header))


def _rules_of(key: str, table: Mapping[str, Any], unique_id: str | None) -> dict[str, Any]:
    """The ``http-request`` and ``http-response`` rules of a frontend's or a route's table, by attribute."""
    found = {}
    for name, actions in (("http-request", REQUEST_ACTIONS), ("http-response", RESPONSE_ACTIONS)):
        if name in table:
            value = table[name]
            if not isinstance(value, list):
                raise ConfigError(f"{key}.{name}", 'expected a list of rule tables such as {action = "deny"}')
            found[name.replace("-", "_")] = tuple(
                _rule(f"{key}.{name}[{index}]", raw, actions, unique_id) for index, raw in enumerate(value))
    return found


def _rule(key: str, raw: object, actions: tuple[str, ...], unique_id: str | None) -> RuleConfig:
    """One rule: its action's table read (``tables.RULES``), and the rules that depend on where it is."""
    table = as_table(key, raw)
    action = table.get("action")
    if action not in actions:
        raise ConfigError(f"{key}.action", f"expected one of {', '.join(actions)}, got {action!r}")
    spec = tables.RULES[action]
    rule = RuleConfig(action=action, **spec.read(key, table))
    if spec.check is not None:
        spec.check(key, rule)
    if actions is REQUEST_ACTIONS:
        if (True, "srv_name") in template_parts(f"{key}.value", rule.value, TEMPLATE_VARIABLES):
            raise ConfigError(f"{key}.value", "the server is chosen after the request rules run: "
                                              "%[srv_name] is for http-response rules")
        if unique_id is not None and rule.name.lower() == unique_id.lower():
            raise ConfigError(f"{key}.name", f"{rule.name} is the frontend's unique-id-header: the proxy writes it")
    return rule


def _clients(key: str, value: object, peers: str) -> ClientsConfig:
    table = as_table(key, value)
    clients = tables.CLIENTS.build(key, table)
    if peers == "proxied":  # a proxied connection carries many clients
        if "identify" not in table:
            clients = replace(clients, identify=tuple(way for way in clients.identify if way != "connection"))
        elif "connection" in clients.identify:
            raise ConfigError(f"{key}.identify", "a proxied connection carries many clients: it identifies none")
    return clients


def _forward(key: str, value: object, backends: Mapping[str, BackendConfig]) -> ForwardConfig:
    table = as_table(key, value)
    forward = tables.FORWARD.build(key, table)
    if "parents" in table:
        parents = table["parents"]
        if not isinstance(parents, str) or parents not in backends:
            raise ConfigError(f"{key}.parents", f"expected the name of a backend of parent proxies, got {parents!r}")
        forward = replace(forward, parents=parents)
    return forward
