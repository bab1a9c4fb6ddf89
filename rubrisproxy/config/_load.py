"""Turn a TOML file plus command-line flags into a validated :class:`ProxyConfig`.

Flags override the file: ``--listen`` replaces the listeners of the one frontend,
``--backend`` replaces the servers of the one backend, ``--timeout NAME=VALUE``
replaces one timeout. With several frontends or backends in the file, those flags
are ambiguous and refused.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ._errors import ConfigError
from ._model import (
    ALPN_PROTOCOLS,
    TLS_VERSIONS,
    WEBSOCKET_MODES,
    AccessLogSettings,
    AdminConfig,
    BackendConfig,
    CertificateFiles,
    ClientsConfig,
    CookieConfig,
    ForwardConfig,
    FrontendConfig,
    HealthCheckConfig,
    HookConfig,
    Limits,
    ListenerTLSConfig,
    LogSettings,
    PassiveCheckConfig,
    PoolSettings,
    ProxyConfig,
    RouteConfig,
    ServerConfig,
    StickConfig,
    Timeouts,
    TLSConfig,
    WebSocketConfig,
)
from ._values import (
    loopback_only,
    parse_duration,
    parse_endpoint,
    parse_positive_int,
    parse_server,
    parse_size,
    resolve_name,
)

DEFAULT_NAME = "default"
#: Sizes of things held whole in memory: a request head, a WebSocket message or frame, a moving session's bytes.
MAX_HEAD_SIZE = 1 << 20
MAX_MESSAGE_SIZE = 1 << 30
#: Browsers cap a cookie's Max-Age at 400 days (RFC 6265bis).
MAX_COOKIE_AGE = 400 * 86400.0

_TOP_LEVEL_KEYS = {
    "timeouts", "limits", "pool", "access-log", "log", "shutdown", "websocket", "admin", "frontends", "backends"
}


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


def load_config(command_line: CommandLine) -> ProxyConfig:
    """Read the file named on the command line (if any) and apply the flags."""
    document: dict[str, Any] = {}
    if command_line.config_path:
        path = command_line.config_path
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
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
    _reject_unknown("", document, _TOP_LEVEL_KEYS)
    timeouts = _timeouts(_table("timeouts", document.get("timeouts", {})))
    limits = _limits(_table("limits", document.get("limits", {})))
    pool = _pool(_table("pool", document.get("pool", {})))
    access_log = _access_log(_table("access-log", document.get("access-log", {})))
    log = _table("log", document.get("log", {}))
    _reject_unknown("log", log, {"format"})
    shutdown = _table("shutdown", document.get("shutdown", {}))
    _reject_unknown("shutdown", shutdown, {"grace", "close-spread", "websocket-close-code"})
    proxy_defaults = ProxyConfig(frontends=(), backends={})
    grace = parse_duration("shutdown.grace", shutdown.get("grace", proxy_defaults.shutdown_grace))
    raw_spread = shutdown.get("close-spread", proxy_defaults.shutdown_spread)
    spread = 0.0 if raw_spread in (0, "0", "0s") else parse_duration("shutdown.close-spread", raw_spread)
    if spread > grace:
        raise ConfigError("shutdown.close-spread", f"must not be longer than shutdown.grace ({grace:g}s)")
    close_code = shutdown.get("websocket-close-code", proxy_defaults.shutdown_close_code)
    if close_code not in (1001, 1012):
        raise ConfigError("shutdown.websocket-close-code", f"expected 1001 or 1012, got {close_code!r}")
    admin = _table("admin", document.get("admin", {}))
    _reject_unknown("admin", admin, {"listen", "token"})

    websocket = _websocket("websocket", _table("websocket", document.get("websocket", {})), WebSocketConfig())
    backends = {
        name: _backend(name, _table(f"backends.{name}", body), websocket)
        for name, body in _table("backends", document.get("backends", {})).items()
    }
    frontend_tables = _table("frontends", document.get("frontends", {}))
    if frontend_tables:
        frontends = tuple(
            _frontend(name, _table(f"frontends.{name}", body), backends)
            for name, body in frontend_tables.items()
        )
    else:
        only = next(iter(backends)) if len(backends) == 1 else DEFAULT_NAME
        frontends = (FrontendConfig(name=DEFAULT_NAME, backend=only),)
    return ProxyConfig(
        frontends=frontends,
        backends=backends,
        timeouts=timeouts,
        limits=limits,
        pool=pool,
        access_log=access_log,
        log=LogSettings(format=_log_format("log.format", log.get("format", LogSettings().format))),
        shutdown_grace=grace,
        shutdown_spread=spread,
        shutdown_close_code=close_code,
        admin=_admin(admin),
        websocket=websocket,
    )


def apply_command_line(config: ProxyConfig, command_line: CommandLine) -> ProxyConfig:
    """Apply flags over a configuration, as the module docstring describes."""
    frontends = list(config.frontends)
    backends = dict(config.backends)
    if command_line.listen:
        if len(frontends) != 1:
            raise ConfigError("--listen", "the config file has several frontends; set their listen keys there")
        frontends[0] = replace(frontends[0], listen=_endpoints("--listen", list(command_line.listen)))
    if command_line.backends:
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
    timeouts = config.timeouts
    for name, value in command_line.timeouts.items():
        timeouts = _override_timeout(timeouts, name, value)
    access_log = config.access_log
    if command_line.access_log is not None:
        enabled = command_line.access_log != "off"
        path = _log_path("--access-log", command_line.access_log) if enabled else access_log.path
        access_log = replace(access_log, path=path, enabled=enabled)
    if command_line.access_log_format is not None:
        access_log = replace(access_log, format=_log_format("--access-log-format", command_line.access_log_format))
    log = config.log
    if command_line.log_format is not None:
        log = LogSettings(format=_log_format("--log-format", command_line.log_format))

    admin = config.admin
    if command_line.admin:
        admin = _check_admin(replace(admin, listen=_endpoints("--admin", list(command_line.admin))))
    if command_line.websocket is not None:
        mode = _websocket_mode("--websocket", command_line.websocket)
        backends = {
            name: replace(backend, websocket=replace(backend.websocket, mode=mode)) for name, backend in backends.items()
        }
    has_servers = any(backend.servers for backend in backends.values())
    demo = command_line.demo or (not has_servers and any(f.forward is None for f in frontends))
    for frontend in frontends:
        if frontend.forward is None and frontend.backend not in backends:
            if demo:
                websocket = config.websocket
                if command_line.websocket is not None:
                    websocket = replace(websocket, mode=command_line.websocket)
                backends[frontend.backend] = BackendConfig(name=frontend.backend, websocket=websocket)
            else:
                raise ConfigError(f"frontends.{frontend.name}.backend", f"no backend named {frontend.backend!r}")
    return replace(
        config,
        frontends=tuple(frontends),
        backends=backends,
        timeouts=timeouts,
        access_log=access_log,
        log=log,
        admin=admin,
        demo=demo,
    )


def _override_timeout(timeouts: Timeouts, name: str, value: object) -> Timeouts:
    attribute = name.replace("-", "_")
    if attribute not in {f.name for f in fields(Timeouts)}:
        raise ConfigError(f"--timeout {name}", f"unknown timeout; known: {_timeout_names()}")
    return replace(timeouts, **{attribute: parse_duration(f"--timeout {name}", value)})


def _timeout_names() -> str:
    return ", ".join(f.name.replace("_", "-") for f in fields(Timeouts))


def _timeouts(table: Mapping[str, Any]) -> Timeouts:
    known = {f.name.replace("_", "-") for f in fields(Timeouts)}
    _reject_unknown("timeouts", table, known)
    values = {
        key.replace("-", "_"): parse_duration(f"timeouts.{key}", value) for key, value in table.items()
    }
    return Timeouts(**values)


def _limits(table: Mapping[str, Any]) -> Limits:
    _reject_unknown(
        "limits", table, {"max-request-line", "max-header-size", "max-headers", "max-body-size", "resume-buffer-total"}
    )
    defaults = Limits()
    return Limits(
        max_request_line=parse_size(
            "limits.max-request-line", table.get("max-request-line", defaults.max_request_line), MAX_HEAD_SIZE
        ),
        max_header_size=parse_size(
            "limits.max-header-size", table.get("max-header-size", defaults.max_header_size), MAX_HEAD_SIZE
        ),
        max_headers=parse_positive_int("limits.max-headers", table.get("max-headers", defaults.max_headers)),
        max_body_size=parse_size("limits.max-body-size", table.get("max-body-size", defaults.max_body_size)),
        resume_buffer_total=parse_size(
            "limits.resume-buffer-total", table.get("resume-buffer-total", defaults.resume_buffer_total)
        ),
    )


def _pool(table: Mapping[str, Any]) -> PoolSettings:
    _reject_unknown("pool", table, {"max-idle-per-server", "idle-timeout"})
    defaults = PoolSettings()
    return PoolSettings(
        max_idle_per_server=parse_positive_int(
            "pool.max-idle-per-server", table.get("max-idle-per-server", defaults.max_idle_per_server), minimum=0
        ),
        idle_timeout=parse_duration("pool.idle-timeout", table.get("idle-timeout", defaults.idle_timeout)),
    )


def _access_log(table: Mapping[str, Any]) -> AccessLogSettings:
    _reject_unknown("access-log", table, {"enabled", "path", "format", "connections"})
    defaults = AccessLogSettings()
    enabled, connections = table.get("enabled", defaults.enabled), table.get("connections", defaults.connections)
    for key, value in (("enabled", enabled), ("connections", connections)):
        if not isinstance(value, bool):
            raise ConfigError(f"access-log.{key}", f"expected true or false, got {value!r}")
    path = _log_path("access-log.path", table.get("path", defaults.path)) if enabled else defaults.path
    return AccessLogSettings(
        enabled=enabled, path=path, format=_log_format("access-log.format", table.get("format", defaults.format)),
        connections=connections,
    )


def _log_path(key: str, path: object) -> str:
    """``-`` (the twistd log), or a file that can be appended to: it, or else its directory, exists and is writable."""
    if not isinstance(path, str) or not path:
        raise ConfigError(key, f"expected a file path or '-', got {path!r}")
    if path == "-":
        return path
    if os.path.isdir(path):
        raise ConfigError(key, f"{path!r} is a directory, not a file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(key, f"the directory of {path!r} does not exist")
    if not os.access(path if os.path.exists(path) else directory, os.W_OK):
        raise ConfigError(key, f"{path!r} cannot be written")
    return path


def _log_format(key: str, value: object) -> str:
    if value not in ("text", "json"):
        raise ConfigError(key, f"expected 'text' or 'json', got {value!r}")
    return str(value)


def _backend(name: str, table: Mapping[str, Any], websocket: WebSocketConfig) -> BackendConfig:
    key = f"backends.{name}"
    _reject_unknown(
        key,
        table,
        {"servers", "retries", "balance", "redispatch", "slow-start", "health", "passive", "cookie", "stick", "websocket",
         "tls", "pin", "engineio-sticky"},
    )
    raw_servers = table.get("servers", [])
    if not isinstance(raw_servers, list):
        raise ConfigError(f"{key}.servers", "expected a list of addresses or server tables")
    servers = tuple(_server(f"{key}.servers[{i}]", raw, i) for i, raw in enumerate(raw_servers))
    names = [server.name for server in servers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}.servers", f"server names must be unique, got {names}")
    defaults = BackendConfig(name=name)
    retries = parse_positive_int(f"{key}.retries", table.get("retries", defaults.retries), minimum=0)
    balance = table.get("balance", defaults.balance)
    if isinstance(balance, str) and "." in balance and "(" not in balance:
        if not callable(resolve_name(f"{key}.balance", balance)):  # a user's IBalancer class
            raise ConfigError(f"{key}.balance", f"{balance!r} is not a class")
    elif not isinstance(balance, str) or not _valid_balance(balance):
        raise ConfigError(
            f"{key}.balance",
            f"expected roundrobin, leastconn, random, source, uri, url_param(NAME), hdr(NAME) or the dotted name "
            f"of an IBalancer class, got {balance!r}",
        )
    redispatch = table.get("redispatch", defaults.redispatch)
    if not isinstance(redispatch, bool):
        raise ConfigError(f"{key}.redispatch", f"expected true or false, got {redispatch!r}")
    pin = table.get("pin", defaults.pin)
    if not isinstance(pin, bool):
        raise ConfigError(f"{key}.pin", f"expected true or false, got {pin!r}")
    engineio_sticky = table.get("engineio-sticky", defaults.engineio_sticky)
    if not isinstance(engineio_sticky, bool):
        raise ConfigError(f"{key}.engineio-sticky", f"expected true or false, got {engineio_sticky!r}")
    slow_start = table.get("slow-start", defaults.slow_start)
    slow_start = 0.0 if slow_start in (0, "0", "0s") else parse_duration(f"{key}.slow-start", slow_start)
    return BackendConfig(
        name=name, servers=servers, retries=retries, balance=balance, redispatch=redispatch, slow_start=slow_start,
        health=_health(f"{key}.health", _table(f"{key}.health", table.get("health", {}))),
        passive=_passive(f"{key}.passive", _table(f"{key}.passive", table.get("passive", {}))),
        cookie=_cookie(f"{key}.cookie", _table(f"{key}.cookie", table["cookie"])) if "cookie" in table else None,
        stick=_stick(f"{key}.stick", _table(f"{key}.stick", table["stick"])) if "stick" in table else None,
        websocket=_websocket(f"{key}.websocket", _table(f"{key}.websocket", table.get("websocket", {})), websocket),
        tls=_tls(f"{key}.tls", _table(f"{key}.tls", table.get("tls", {}))),
        pin=pin,
        engineio_sticky=engineio_sticky,
    )


def _tls(key: str, table: Mapping[str, Any]) -> TLSConfig:
    _reject_unknown(key, table, {"verify", "ca-file", "sni", "client-cert", "client-key"})
    verify = table.get("verify", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{key}.verify", f"expected true or false, got {verify!r}")
    values: dict[str, Any] = {"verify": verify}
    for name in ("ca-file", "client-cert", "client-key"):
        if name in table:
            path = table[name]
            if not isinstance(path, str) or not os.path.isfile(path):
                raise ConfigError(f"{key}.{name}", f"expected a readable PEM file, got {path!r}")
            values[name.replace("-", "_")] = path
    if "sni" in table:
        if not isinstance(table["sni"], str) or not table["sni"]:
            raise ConfigError(f"{key}.sni", f"expected a host name, got {table['sni']!r}")
        values["sni"] = table["sni"]
    if "client_key" in values and "client_cert" not in values:
        raise ConfigError(f"{key}.client-key", "needs client-cert")
    return TLSConfig(**values)


_WEBSOCKET_SIZES = ("max-message-size", "max-frame-size", "auto-fragment-size", "session-buffer")
_WEBSOCKET_DURATIONS = (
    "open-handshake-timeout", "close-handshake-timeout", "client-ping-timeout", "backend-ping-timeout", "resume-timeout",
    "drain-grace",
)
_WEBSOCKET_INTERVALS = ("client-ping-interval", "backend-ping-interval", "replay-window")  # 0 turns them off
_WEBSOCKET_LISTS = ("origins", "subprotocols")


def _websocket(key: str, table: Mapping[str, Any], defaults: WebSocketConfig) -> WebSocketConfig:
    """A ``[websocket]`` table: the keys it sets over ``defaults``."""
    known = {f.name.replace("_", "-") for f in fields(WebSocketConfig)}
    _reject_unknown(key, table, known)
    values: dict[str, Any] = {}
    if "mode" in table:
        values["mode"] = _websocket_mode(f"{key}.mode", table["mode"])
    for name in _WEBSOCKET_SIZES:
        if name in table:
            values[name.replace("-", "_")] = parse_size(f"{key}.{name}", table[name], MAX_MESSAGE_SIZE)
    for name in _WEBSOCKET_DURATIONS:
        if name in table:
            values[name.replace("-", "_")] = parse_duration(f"{key}.{name}", table[name])
    for name in _WEBSOCKET_INTERVALS:
        if name in table:
            raw = table[name]
            values[name.replace("-", "_")] = 0.0 if raw in (0, "0", "0s") else parse_duration(f"{key}.{name}", raw)
    for name in ("compression", "resume"):
        if name in table:
            if not isinstance(table[name], bool):
                raise ConfigError(f"{key}.{name}", f"expected true or false, got {table[name]!r}")
            values[name] = table[name]
    if "resume-codes" in table:
        codes = table["resume-codes"]
        if not isinstance(codes, list) or not all(isinstance(c, int) and 1000 <= c <= 4999 for c in codes):
            raise ConfigError(f"{key}.resume-codes", f"expected a list of close codes (1000-4999), got {codes!r}")
        values["resume_codes"] = tuple(codes)
    if "replay-messages" in table:
        values["replay_messages"] = parse_positive_int(f"{key}.replay-messages", table["replay-messages"], minimum=0)
    if "session-header" in table:
        header = table["session-header"]
        if not isinstance(header, str) or not re.fullmatch(_NAME, header):
            raise ConfigError(f"{key}.session-header", f"expected a header name, got {header!r}")
        values["session_header"] = header
    for name in _WEBSOCKET_LISTS:
        if name in table:
            values[name] = _strings(f"{key}.{name}", table[name])
    if "hooks" in table:
        hooks = table["hooks"]
        if not isinstance(hooks, list):
            raise ConfigError(f"{key}.hooks", "expected a list of class names or tables with a 'class' key")
        values["hooks"] = tuple(_hook(f"{key}.hooks[{i}]", raw) for i, raw in enumerate(hooks))
    config = replace(defaults, **values)
    if config.max_frame_size > config.max_message_size:
        raise ConfigError(f"{key}.max-frame-size", "cannot be larger than max-message-size")
    if config.auto_fragment_size <= 0:
        raise ConfigError(f"{key}.auto-fragment-size", "must be greater than zero")
    return config


def _hook(key: str, raw: object) -> HookConfig:
    """``"module.Class"`` or ``{class = "module.Class", ...keyword arguments}``; the class must import."""
    if isinstance(raw, str):
        name, options = raw, {}
    elif isinstance(raw, dict) and isinstance(raw.get("class"), str):
        options = dict(raw)
        name = options.pop("class")
    else:
        raise ConfigError(key, f"expected a class name or a table with a 'class' key, got {raw!r}")
    if not callable(resolve_name(f"{key}.class" if options else key, name)):
        raise ConfigError(key, f"{name!r} is not a class")
    return HookConfig(name, options)


def _websocket_mode(key: str, value: object) -> str:
    if value not in WEBSOCKET_MODES:
        raise ConfigError(key, f"expected one of {', '.join(WEBSOCKET_MODES)}, got {value!r}")
    return str(value)


def _strings(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(key, f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


_NAME = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"


def _cookie(key: str, table: Mapping[str, Any]) -> CookieConfig:
    _reject_unknown(key, table, {"name", "mode", "max-age", "secure"})
    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise ConfigError(f"{key}.name", f"expected a cookie name, got {name!r}")
    defaults = CookieConfig(name=name)
    mode = table.get("mode", defaults.mode)
    if mode not in ("insert", "prefix"):
        raise ConfigError(f"{key}.mode", f"expected insert or prefix, got {mode!r}")
    max_age = table.get("max-age", defaults.max_age)
    max_age = 0 if max_age in (0, "0") else int(parse_duration(f"{key}.max-age", max_age, MAX_COOKIE_AGE))
    secure = table.get("secure", defaults.secure)
    if not isinstance(secure, bool):
        raise ConfigError(f"{key}.secure", f"expected true or false, got {secure!r}")
    return CookieConfig(name=name, mode=mode, max_age=max_age, secure=secure)


def _stick(key: str, table: Mapping[str, Any]) -> StickConfig:
    _reject_unknown(key, table, {"on", "expire", "size", "learn"})
    on = table.get("on")
    if not isinstance(on, str) or not (on == "source" or re.fullmatch(rf"(header|url_param|cookie)\({_NAME}\)", on)):
        raise ConfigError(f"{key}.on", f"expected source, header(NAME), url_param(NAME) or cookie(NAME), got {on!r}")
    learn = table.get("learn")
    if learn is not None and (not isinstance(learn, str) or not re.fullmatch(rf"(header|set-cookie)\({_NAME}\)", learn)):
        raise ConfigError(f"{key}.learn", f"expected header(NAME) or set-cookie(NAME), got {learn!r}")
    defaults = StickConfig(on=on)
    return StickConfig(
        on=on,
        expire=parse_duration(f"{key}.expire", table.get("expire", defaults.expire)),
        size=parse_positive_int(f"{key}.size", table.get("size", defaults.size)),
        learn=learn,
    )


def _health(key: str, table: Mapping[str, Any]) -> HealthCheckConfig:
    _reject_unknown(key, table, {"check", "interval", "rise", "fall", "timeout", "method", "path", "expect", "host"})
    defaults = HealthCheckConfig()
    check = table.get("check", defaults.check)
    if check not in ("none", "tcp", "http", "websocket"):
        raise ConfigError(f"{key}.check", f"expected none, tcp, http or websocket, got {check!r}")
    expect = table.get("expect", "200-399")
    match = re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", str(expect))
    if not match:
        raise ConfigError(f"{key}.expect", f"expected a status or a range such as '200-399', got {expect!r}")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if low > high:
        raise ConfigError(f"{key}.expect", f"the range is empty: {expect!r}")
    path = table.get("path", defaults.path)
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{key}.path", f"expected a path starting with '/', got {path!r}")
    method = table.get("method", defaults.method)
    if not isinstance(method, str) or not method.isalpha():
        raise ConfigError(f"{key}.method", f"expected an HTTP method, got {method!r}")
    host = table.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ConfigError(f"{key}.host", f"expected a host name, got {host!r}")
    return HealthCheckConfig(
        check=check,
        interval=parse_duration(f"{key}.interval", table.get("interval", defaults.interval)),
        rise=parse_positive_int(f"{key}.rise", table.get("rise", defaults.rise)),
        fall=parse_positive_int(f"{key}.fall", table.get("fall", defaults.fall)),
        timeout=parse_duration(f"{key}.timeout", table.get("timeout", defaults.timeout)),
        method=method.upper(), path=path, expect=(low, high), host=host,
    )


def _passive(key: str, table: Mapping[str, Any]) -> PassiveCheckConfig:
    _reject_unknown(key, table, {"errors", "on-5xx", "cool-off"})
    defaults = PassiveCheckConfig()
    on_5xx = table.get("on-5xx", defaults.on_5xx)
    if not isinstance(on_5xx, bool):
        raise ConfigError(f"{key}.on-5xx", f"expected true or false, got {on_5xx!r}")
    return PassiveCheckConfig(
        errors=parse_positive_int(f"{key}.errors", table.get("errors", defaults.errors), minimum=0),
        on_5xx=on_5xx,
        cool_off=parse_duration(f"{key}.cool-off", table.get("cool-off", defaults.cool_off)),
    )


def _valid_balance(balance: str) -> bool:
    if balance in ("roundrobin", "leastconn", "random", "source", "uri"):
        return True
    for prefix in ("url_param(", "hdr("):
        if balance.startswith(prefix) and balance.endswith(")") and len(balance) > len(prefix) + 1:
            return True
    return False


def _server(key: str, raw: object, index: int) -> ServerConfig:
    default_name = f"s{index + 1}"
    if isinstance(raw, str):
        return parse_server(key, raw, default_name)
    table = _table(key, raw)
    _reject_unknown(key, table, {"address", "name", "weight", "maxconn", "backup", "tls"})
    if "address" not in table:
        raise ConfigError(f"{key}.address", "is required")
    name = table.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}.name", f"expected a non-empty string, got {name!r}")
    server = parse_server(f"{key}.address", table["address"], name)
    weight = parse_positive_int(f"{key}.weight", table.get("weight", server.weight), minimum=0)
    if weight > 256:
        raise ConfigError(f"{key}.weight", f"must be at most 256, got {weight}")
    maxconn = parse_positive_int(f"{key}.maxconn", table.get("maxconn", server.maxconn), minimum=0)
    backup = table.get("backup", server.backup)
    if not isinstance(backup, bool):
        raise ConfigError(f"{key}.backup", f"expected true or false, got {backup!r}")
    tls = table.get("tls", server.tls)
    if not isinstance(tls, bool):
        raise ConfigError(f"{key}.tls", f"expected true or false, got {tls!r}")
    return replace(server, weight=weight, maxconn=maxconn, backup=backup, tls=tls)


def _route(key: str, raw: object, backends: Mapping[str, BackendConfig]) -> RouteConfig:
    table = _table(key, raw)
    _reject_unknown(key, table, {f.name.replace("_", "-") for f in fields(RouteConfig)} | {"method"})
    values: dict[str, Any] = {}
    for name in ("host", "host-suffix", "host-prefix", "path-prefix", "path-regex", "header", "value", "subprotocol"):
        if name in table:
            value = table[name]
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}.{name}", f"expected a non-empty string, got {value!r}")
            values[name.replace("-", "_")] = value
    if not values.get("path_prefix", "/").startswith("/"):
        raise ConfigError(f"{key}.path-prefix", f"expected a path beginning with /, got {values['path_prefix']!r}")
    if "path_regex" in values:
        try:
            re.compile(values["path_regex"])
        except re.error as e:
            raise ConfigError(f"{key}.path-regex", f"invalid regular expression: {e}") from None
        except RecursionError:
            raise ConfigError(f"{key}.path-regex", "the regular expression nests too deeply") from None
    if "value" in values and "header" not in values:
        raise ConfigError(f"{key}.value", "needs a header to compare with")
    methods = table.get("methods", table.get("method", []))
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods):
        raise ConfigError(f"{key}.methods", f"expected a method or a list of methods, got {methods!r}")
    values["methods"] = tuple(m.upper() for m in methods)
    if "websocket" in table:
        if not isinstance(table["websocket"], bool):
            raise ConfigError(f"{key}.websocket", f"expected true or false, got {table['websocket']!r}")
        values["websocket"] = table["websocket"]
    for name in ("subprotocols", "origins"):
        if name in table:
            values[name] = _strings(f"{key}.{name}", table[name])
    backend, deny = table.get("backend"), table.get("deny")
    if (backend is None) == (deny is None):
        raise ConfigError(key, "a route needs exactly one of backend or deny")
    if backend is not None:
        if not isinstance(backend, str) or backend not in backends:
            raise ConfigError(f"{key}.backend", f"no backend named {backend!r}; known: {', '.join(backends)}")
        values["backend"] = backend
    else:
        if isinstance(deny, bool) or not isinstance(deny, int) or not 400 <= deny <= 599:
            raise ConfigError(f"{key}.deny", f"expected a 4xx or 5xx status, got {deny!r}")
        values["deny"] = deny
    return RouteConfig(**values)


def _frontend(name: str, table: Mapping[str, Any], backends: Mapping[str, BackendConfig]) -> FrontendConfig:
    key = f"frontends.{name}"
    _reject_unknown(key, table, {"listen", "backend", "routes", "mode", "forward", "peers", "trusted-proxies",
                                 "proxy-protocol", "max-reads", "max-writes", "handlers", "clients", "protocol",
                                 "forwarded-header", "tls"})
    connections = _connections(key, table)
    mode = table.get("mode", "reverse")
    if mode not in ("reverse", "forward"):
        raise ConfigError(f"{key}.mode", f"expected reverse or forward, got {mode!r}")
    listen = _endpoints(f"{key}.listen", table.get("listen", list(FrontendConfig(name=name).listen)))
    if mode == "forward" or "forward" in table:
        if mode != "forward":
            raise ConfigError(f"{key}.forward", "only a frontend with mode = \"forward\" takes forward rules")
        forward = _forward(f"{key}.forward", _table(f"{key}.forward", table.get("forward", {})), backends)
        return FrontendConfig(name=name, listen=listen, backend="", forward=forward, **connections)
    if not listen:
        raise ConfigError(f"{key}.listen", "expected at least one endpoint string such as 'tcp:8080'")
    backend = table.get("backend", next(iter(backends)) if len(backends) == 1 else DEFAULT_NAME)
    if not isinstance(backend, str):
        raise ConfigError(f"{key}.backend", f"expected a backend name, got {backend!r}")
    if backends and backend not in backends:
        raise ConfigError(f"{key}.backend", f"no backend named {backend!r}; known: {', '.join(backends)}")
    raw_routes = table.get("routes", [])
    if not isinstance(raw_routes, list):
        raise ConfigError(f"{key}.routes", "expected a list of route tables")
    routes = tuple(_route(f"{key}.routes[{i}]", raw, backends) for i, raw in enumerate(raw_routes))
    return FrontendConfig(name=name, listen=tuple(listen), backend=backend, routes=routes, **connections)


def _connections(key: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """A frontend's settings for its connections: who its peers are, their limits, lifecycle handlers."""
    values: dict[str, Any] = {}
    defaults = FrontendConfig(name=key)
    peers = table.get("peers", defaults.peers)
    if peers not in ("local", "proxied"):
        raise ConfigError(f"{key}.peers", f"expected local or proxied, got {peers!r}")
    values["peers"] = peers
    if "trusted-proxies" in table:
        values["trusted_proxies"] = _trusted_proxies(f"{key}.trusted-proxies", table["trusted-proxies"])
    if peers == "proxied" and not values.get("trusted_proxies"):
        raise ConfigError(f"{key}.trusted-proxies", "a proxied frontend needs the networks of the proxies it trusts")
    protocol = table.get("proxy-protocol", defaults.proxy_protocol)
    if protocol not in PROXY_PROTOCOLS:
        raise ConfigError(f"{key}.proxy-protocol", f"expected one of {', '.join(PROXY_PROTOCOLS)}, got {protocol!r}")
    if protocol != "off" and peers != "proxied":
        raise ConfigError(f"{key}.proxy-protocol", 'the PROXY protocol is spoken by proxies: set peers = "proxied"')
    values["proxy_protocol"] = protocol
    header = table.get("forwarded-header", defaults.forwarded_header)
    if not isinstance(header, str) or header.lower() not in ("x-forwarded-for", "forwarded"):
        raise ConfigError(f"{key}.forwarded-header", f"expected x-forwarded-for or forwarded, got {header!r}")
    values["forwarded_header"] = header.lower()
    if peers == "local":
        _reject_proxy_keys(key, table)
    for name in ("max-reads", "max-writes"):
        if name in table:
            values[name.replace("-", "_")] = parse_positive_int(f"{key}.{name}", table[name], minimum=0)
    if "handlers" in table:
        handlers = table["handlers"]
        if not isinstance(handlers, list):
            raise ConfigError(f"{key}.handlers", "expected a list of class names or tables with a 'class' key")
        values["handlers"] = tuple(_hook(f"{key}.handlers[{i}]", raw) for i, raw in enumerate(handlers))
    if "protocol" in table:
        if not isinstance(table["protocol"], str):
            raise ConfigError(f"{key}.protocol", f"expected the dotted name of a class, got {table['protocol']!r}")
        resolve_name(f"{key}.protocol", table["protocol"])
        values["protocol"] = table["protocol"]
    if "clients" in table:
        values["clients"] = _clients(f"{key}.clients", _table(f"{key}.clients", table["clients"]), peers)
    if "tls" in table:
        values["tls"] = _listener_tls(f"{key}.tls", _table(f"{key}.tls", table["tls"]))
    return values


def _listener_tls(key: str, table: Mapping[str, Any]) -> ListenerTLSConfig:
    """A frontend's ``[tls]`` table; the files it names are read when the listeners are checked (rubrisproxy.tls)."""
    _reject_unknown(key, table, {"certificates", "directory", "min-version", "ciphers", "alpn"})
    values: dict[str, Any] = {}
    raw = table.get("certificates", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{key}.certificates", "expected a list of tables such as {cert = \"a.pem\", key = \"a.key\"}")
    certificates = []
    for index, entry in enumerate(raw):
        where = f"{key}.certificates[{index}]"
        entry = _table(where, entry)
        _reject_unknown(where, entry, {"cert", "key", "chain"})
        paths = {}
        for name in ("cert", "key", "chain"):
            if name in entry:
                if not isinstance(entry[name], str) or not entry[name]:
                    raise ConfigError(f"{where}.{name}", f"expected a file path, got {entry[name]!r}")
                paths[name] = entry[name]
        if "cert" not in paths:
            raise ConfigError(f"{where}.cert", "required: the PEM file of the certificate (and its chain)")
        certificates.append(CertificateFiles(cert=paths["cert"], key=paths.get("key", paths["cert"]),
                                             chain=paths.get("chain")))
    values["certificates"] = tuple(certificates)
    if "directory" in table:
        if not isinstance(table["directory"], str) or not table["directory"]:
            raise ConfigError(f"{key}.directory", f"expected a directory path, got {table['directory']!r}")
        values["directory"] = table["directory"]
    if not certificates and "directory" not in values:
        raise ConfigError(f"{key}.certificates", "a TLS listener needs certificates, a directory of them, or both")
    if "min-version" in table:
        if table["min-version"] not in TLS_VERSIONS:
            raise ConfigError(f"{key}.min-version", f"expected one of {', '.join(TLS_VERSIONS)}, got {table['min-version']!r}")
        values["min_version"] = table["min-version"]
    if "ciphers" in table:
        if not isinstance(table["ciphers"], str) or not table["ciphers"]:
            raise ConfigError(f"{key}.ciphers", f"expected an OpenSSL cipher list, got {table['ciphers']!r}")
        values["ciphers"] = table["ciphers"]
    if "alpn" in table:
        alpn = _strings(f"{key}.alpn", table["alpn"])
        for name in alpn:
            if name not in ALPN_PROTOCOLS:
                raise ConfigError(f"{key}.alpn", f"expected protocols among {', '.join(ALPN_PROTOCOLS)}, got {name!r}")
        values["alpn"] = alpn
    return ListenerTLSConfig(**values)


def _trusted_proxies(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of networks or addresses such as ['10.0.0.0/8'], got {value!r}")
    networks = _strings(key, value)
    for entry in networks:
        _network(key, entry)
    return networks


def _reject_proxy_keys(key: str, table: Mapping[str, Any]) -> None:
    """A local frontend's peers are its clients: settings about proxies would be silently ignored."""
    for name in ("trusted-proxies", "forwarded-header"):
        if name in table:
            raise ConfigError(f"{key}.{name}", 'only proxies are trusted to name their clients: set peers = "proxied"')


def _clients(key: str, table: Mapping[str, Any], peers: str) -> ClientsConfig:
    _reject_unknown(key, table, {"identify", "expire"})
    values: dict[str, Any] = {}
    if "identify" in table:
        identify = _strings(f"{key}.identify", table["identify"])
        if not identify:
            raise ConfigError(f"{key}.identify", "expected at least one of sid, cookie(NAME), header(NAME) or connection")
        for spec in identify:
            named = spec.startswith(("cookie(", "header(")) and spec.endswith(")") and len(spec) > 8
            if spec not in ("sid", "connection") and not named:
                raise ConfigError(f"{key}.identify", f"expected sid, cookie(NAME), header(NAME) or connection, got {spec!r}")
            if spec == "connection" and peers == "proxied":
                raise ConfigError(f"{key}.identify", "a proxied connection carries many clients: it identifies none")
        values["identify"] = identify
    elif peers == "proxied":
        values["identify"] = ("sid",)
    if "expire" in table:
        values["expire"] = parse_duration(f"{key}.expire", table["expire"])
    return ClientsConfig(**values)


PROXY_PROTOCOLS = ("off", "v1", "v2", "any")
_PASSWORD_HASH = re.compile(r"^pbkdf2_sha256\$\d+\$[0-9a-f]+\$[0-9a-f]{64}$")


def _forward(key: str, table: Mapping[str, Any], backends: Mapping[str, BackendConfig]) -> ForwardConfig:
    _reject_unknown(key, table, {"allow-hosts", "deny-hosts", "connect-ports", "clients", "users-file", "resolve-timeout",
                                 "parents", "direct", "never-direct"})
    values: dict[str, Any] = {}
    if "parents" in table:
        if not isinstance(table["parents"], str) or table["parents"] not in backends:
            raise ConfigError(f"{key}.parents", f"expected the name of a backend of parent proxies, got {table['parents']!r}")
        values["parents"] = table["parents"]
    if "never-direct" in table:
        if not isinstance(table["never-direct"], bool):
            raise ConfigError(f"{key}.never-direct", f"expected true or false, got {table['never-direct']!r}")
        values["never_direct"] = table["never-direct"]
    for name in ("allow-hosts", "deny-hosts", "clients", "direct"):
        if name in table:
            values[name.replace("-", "_")] = _strings(f"{key}.{name}", table[name])
    for name in ("allow-hosts", "deny-hosts", "direct"):
        for entry in values.get(name.replace("-", "_"), ()):
            if "/" in entry:
                _network(f"{key}.{name}", entry)
    for entry in values.get("clients", ()):
        _network(f"{key}.clients", entry)
    if "connect-ports" in table:
        ports = table["connect-ports"]
        if not isinstance(ports, list) or not all(type(p) is int and 0 < p < 65536 for p in ports):
            raise ConfigError(f"{key}.connect-ports", f"expected a list of port numbers, got {ports!r}")
        values["connect_ports"] = tuple(ports)
    if "resolve-timeout" in table:
        values["resolve_timeout"] = parse_duration(f"{key}.resolve-timeout", table["resolve-timeout"])
    if "users-file" in table:
        values["users"] = _users(f"{key}.users-file", table["users-file"])
    return ForwardConfig(**values)


def _network(key: str, value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise ConfigError(key, f"{value!r} is not a network: {e}") from None


def _users(key: str, path: object) -> dict[str, str]:
    """``user:pbkdf2_sha256$ITERATIONS$SALT$HASH`` lines (``rubrisproxy-passwd`` writes them)."""
    if not isinstance(path, str):
        raise ConfigError(key, f"expected a file path, got {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(key, f"{path!r} is not UTF-8 text (byte {e.start})") from None
    users = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not _PASSWORD_HASH.match(hashed):
            raise ConfigError(key, f"line {number} of {path!r} is not user:pbkdf2_sha256$ITERATIONS$SALT$HASH")
        users[user] = hashed
    return users


def _admin(table: Mapping[str, Any]) -> AdminConfig:
    listen = _endpoints("admin.listen", table.get("listen", []))
    token = table.get("token")
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ConfigError("admin.token", "expected a string of at least 16 characters")
    return _check_admin(AdminConfig(listen=listen, token=token))


def _check_admin(admin: AdminConfig) -> AdminConfig:
    """An admin listener reachable from off this machine must ask for a token."""
    for endpoint in admin.listen:
        if admin.token is None and not loopback_only(endpoint):
            raise ConfigError(
                "admin.listen", f"{endpoint!r} is not loopback-only: add interface=127.0.0.1, or set admin.token"
            )
    return admin


def _endpoints(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(e, str) and e for e in value):
        raise ConfigError(key, f"expected a list of endpoint strings such as 'tcp:8080', got {value!r}")
    return tuple(parse_endpoint(key, description) for description in value)


def _table(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a table, got {type(value).__name__}")
    return value


def _reject_unknown(key: str, table: Mapping[str, Any], known: set[str]) -> None:
    for name in table:
        if name not in known:
            where = f"{key}.{name}" if key else name
            raise ConfigError(where, f"unknown key; expected one of {', '.join(sorted(known))}")
