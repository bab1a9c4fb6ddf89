"""The tables of a configuration file, each as the keys it takes: ``Field(KEY, PARSER)``, the parser from
``_values``; a key left out keeps the model's default (``_model``). ``Field(KEY, None)``: a key read by hand in
``_load``, for it depends on other keys or tables. Tables are listed leaves first."""

from __future__ import annotations

from dataclasses import fields, replace

from ._errors import ConfigError
from ._fields import Field, Table, as_table, reject_unknown, section
from ._model import (
    TLS_VERSIONS,
    AccessLogSettings,
    AdminConfig,
    BackendConfig,
    CertificateFiles,
    ClientsConfig,
    ClusterConfig,
    CookieConfig,
    ForwardConfig,
    FrontendConfig,
    HealthCheckConfig,
    Http2Config,
    Limits,
    ListenerTLSConfig,
    LogSettings,
    OriginAuthConfig,
    PassiveCheckConfig,
    PoolSettings,
    ProcessConfig,
    ProxyConfig,
    RouteConfig,
    RuleConfig,
    ServerConfig,
    StickConfig,
    Timeouts,
    TLSConfig,
    WebSocketConfig,
)
from ._values import (
    NON_EMPTY,
    STICK_ON,
    admin_token,
    alpn,
    balance,
    check_path,
    close_codes,
    connect_ports,
    cookie_age,
    count,
    credentials_env,
    credentials_file,
    deny_status,
    dotted_class,
    duration_or_off,
    endpoints,
    forwarded_header,
    hooks,
    hosts,
    http_method,
    http_token,
    identify,
    log_format,
    log_path,
    loopback_only,
    methods,
    networks,
    node_name,
    one_of,
    parse_bool,
    parse_duration,
    parse_server,
    path_prefix,
    pem_file,
    rate_limit_key,
    redirect_code,
    redirect_location,
    redirect_prefix,
    redirect_scheme,
    redis_address,
    regex,
    rule_header_name,
    rule_header_value,
    size,
    status_range,
    stick_learn,
    stick_on,
    strings,
    text,
    trusted_proxies,
    unset_or,
    users_file,
    websocket_mode,
    worker_timeout,
    workers,
)

#: Sizes of things held whole in memory: a request head, a WebSocket message or frame, a moving session's bytes.
MAX_HEAD_SIZE = 1 << 20
MAX_MESSAGE_SIZE = 1 << 30
PROXY_PROTOCOLS = ("off", "v1", "v2", "any")

_FILE = text("a file path")


# Every field of Timeouts (client, http-request, http-keep-alive, connect, server, queue, tunnel, client-fin,
# server-fin, linger, linger-idle) is a duration.
TIMEOUTS = Table(Timeouts, tuple(Field(f.name.replace("_", "-"), parse_duration) for f in fields(Timeouts)))

LIMITS = Table(Limits, (
    Field("max-request-line", size(MAX_HEAD_SIZE)),
    Field("max-header-size", size(MAX_HEAD_SIZE)),
    Field("max-headers", count()),
    Field("max-body-size", size()),
    Field("linger-bytes", size()),
    Field("resume-buffer-total", size()),
    Field("resume-dials", count()),
    Field("resume-dials-per-turn", count()),
))

POOL = Table(PoolSettings, (
    Field("max-idle-per-server", count(minimum=0)),
    Field("idle-timeout", parse_duration),
))

ACCESS_LOG = Table(AccessLogSettings, (
    Field("enabled", parse_bool),
    Field("connections", parse_bool),
    Field("path", None),  # read by access_log
    Field("format", log_format),
))

def access_log(key: str, value: object) -> AccessLogSettings:
    """The ``[access-log]`` table; its path is checked only when the log is enabled."""
    settings = ACCESS_LOG.build(key, value)
    table = as_table(key, value)
    if settings.enabled and "path" in table:
        settings = replace(settings, path=log_path(f"{key}.path", table["path"]))
    return settings


LOG = Table(LogSettings, (Field("format", log_format),))

PROCESS = Table(ProcessConfig, (
    Field("workers", workers), Field("worker-timeout", worker_timeout), Field("upgrade-deadline", parse_duration),
))

SHUTDOWN = Table(ProxyConfig, (
    Field("grace", parse_duration, "shutdown_grace"),
    Field("close-spread", duration_or_off, "shutdown_spread"),
    Field("websocket-close-code", one_of((1001, 1012), "1001 or 1012"), "shutdown_close_code"),
))

def check_admin(key: str, admin: AdminConfig) -> None:
    """An admin listener reachable from off this machine must ask for a token."""
    for endpoint in admin.listen:
        if admin.token is None and not loopback_only(endpoint):
            raise ConfigError(
                f"{key}.listen", f"{endpoint!r} is not loopback-only: add interface=127.0.0.1, or set admin.token"
            )


CLUSTER = Table(ClusterConfig, (
    Field("redis", redis_address, required="required: where the cluster's Redis listens, redis://host:port/db"),
    Field("node", node_name),
))

ADMIN = Table(AdminConfig, (
    Field("listen", endpoints),
    Field("token", unset_or(admin_token)),
), check=check_admin)

WEBSOCKET = Table(WebSocketConfig, (
    Field("mode", websocket_mode),
    Field("max-message-size", size(MAX_MESSAGE_SIZE)),
    Field("max-frame-size", size(MAX_MESSAGE_SIZE)),
    Field("auto-fragment-size", size(MAX_MESSAGE_SIZE)),
    Field("open-handshake-timeout", parse_duration),
    Field("close-handshake-timeout", parse_duration),
    Field("client-ping-interval", duration_or_off),
    Field("client-ping-timeout", parse_duration),
    Field("backend-ping-interval", duration_or_off),
    Field("backend-ping-timeout", parse_duration),
    Field("compression", parse_bool),
    Field("origins", strings),
    Field("subprotocols", strings),
    Field("hooks", hooks),
    Field("resume", parse_bool),
    Field("resume-timeout", parse_duration),
    Field("resume-codes", close_codes),
    Field("session-buffer", size(MAX_MESSAGE_SIZE)),
    Field("replay-messages", count(minimum=0)),
    Field("replay-window", duration_or_off),
    Field("session-header", http_token("a header name")),
    Field("engineio", one_of(("auto", "on", "off"), "auto, on or off")),
    Field("drain-grace", parse_duration),
))

SERVER = Table(ServerConfig, (
    Field("address", None, required="is required"),
    Field("name", NON_EMPTY),
    Field("weight", count(minimum=0, maximum=256)),
    Field("maxconn", count(minimum=0)),
    Field("backup", parse_bool),
    Field("tls", parse_bool),  # else as the address's scheme says
))


def servers(key: str, value: object) -> tuple[ServerConfig, ...]:
    """A backend's servers: addresses, or tables as ``SERVER``, named ``s1``, ``s2``... unless named."""
    if not isinstance(value, list):
        raise ConfigError(key, "expected a list of addresses or server tables")
    found = tuple(_server(f"{key}[{i}]", raw, f"s{i + 1}") for i, raw in enumerate(value))
    names = [server.name for server in found]
    if len(set(names)) != len(names):
        raise ConfigError(key, f"server names must be unique, got {names}")
    return found


def _server(key: str, raw: object, name: str) -> ServerConfig:
    if isinstance(raw, str):
        return parse_server(key, raw, name)
    values = SERVER.read(key, raw)
    return replace(parse_server(f"{key}.address", as_table(key, raw)["address"], values.pop("name", name)), **values)


def _check_tls(key: str, tls: TLSConfig) -> None:
    if tls.client_key is not None and tls.client_cert is None:
        raise ConfigError(f"{key}.client-key", "needs client-cert")


HEALTH = Table(HealthCheckConfig, (
    Field("check", one_of(("none", "tcp", "http", "websocket"), "none, tcp, http or websocket")),
    Field("expect", status_range),
    Field("path", check_path),
    Field("method", http_method),
    Field("host", unset_or(text("a host name"))),
    Field("interval", parse_duration),
    Field("rise", count()),
    Field("fall", count()),
    Field("timeout", parse_duration),
))
PASSIVE = Table(PassiveCheckConfig, (
    Field("errors", count(minimum=0)),
    Field("on-5xx", parse_bool),
    Field("cool-off", parse_duration),
))
COOKIE = Table(CookieConfig, (
    Field("name", http_token("a cookie name"), required="expected a cookie name, got None"),
    Field("mode", one_of(("insert", "prefix"), "insert or prefix")),
    Field("max-age", cookie_age),
    Field("secure", parse_bool),
))
STICK = Table(StickConfig, (
    Field("on", stick_on, required=f"expected {STICK_ON}, got None"),
    Field("learn", unset_or(stick_learn)),
    Field("expire", parse_duration),
    Field("size", count()),
))
TLS = Table(TLSConfig, (
    Field("verify", parse_bool),
    Field("ca-file", pem_file),
    Field("client-cert", pem_file),
    Field("client-key", pem_file),
    Field("sni", text("a host name")),
), check=_check_tls)

ORIGIN_AUTH = Table(OriginAuthConfig, (
    Field("credentials-file", credentials_file, "credentials"),
    Field("credentials-env", credentials_env, "credentials"),
    Field("resubmit-body", size(MAX_HEAD_SIZE)),
))


def origin_auth(key: str, value: object) -> OriginAuthConfig:
    """A backend's ``auth`` table: its credentials from exactly one of a file and an environment variable."""
    table = as_table(key, value)
    reject_unknown(key, table, {field.key for field in ORIGIN_AUTH.fields})
    given = [name for name in ("credentials-file", "credentials-env") if name in table]
    if len(given) != 1:
        problem = "takes one of credentials-file and credentials-env, not both" if given else (
            "needs credentials-file or credentials-env (user:password, never inline)")
        raise ConfigError(f"{key}.{given[-1] if given else 'credentials-file'}", problem)
    return ORIGIN_AUTH.build(key, table)


BACKEND = Table(BackendConfig, (
    Field("servers", servers),
    Field("retries", count(minimum=0)),
    Field("balance", balance),
    Field("redispatch", parse_bool),
    Field("pin", parse_bool),
    Field("engineio-sticky", parse_bool),
    Field("engineio-sid-prefix", parse_bool),
    Field("slow-start", duration_or_off),
    Field("health", section(HEALTH)),
    Field("passive", section(PASSIVE)),
    Field("cookie", section(COOKIE)),
    Field("stick", section(STICK)),
    Field("websocket", None),  # over the top-level [websocket]
    Field("tls", section(TLS)),
    Field("auth", origin_auth),
))

# HTTP rules: a table per action, each taking the conditions and the action's own keys.

_CONDITIONS = (
    Field("action", None),  # the table's own action
    Field("src", networks),
    Field("unless-src", networks),
    Field("ssl", parse_bool),
    Field("path-prefix", path_prefix),
    Field("methods", methods),
)


def _check_redirect(key: str, rule: RuleConfig) -> None:
    if sum(target is not None for target in (rule.location, rule.prefix, rule.scheme)) != 1:
        raise ConfigError(key, "a redirect needs exactly one of location, prefix and scheme")


def _check_rate_limit(key: str, rule: RuleConfig) -> None:
    if not (rule.requests or rule.websockets or rule.concurrent or rule.connections):
        raise ConfigError(key, "a rate limit needs at least one of requests, websockets, concurrent and connections")
    if rule.connections and rule.key != "src":
        raise ConfigError(f"{key}.connections", "connections are counted per source: set key = \"src\"")
    if rule.connections and (rule.ssl is not None or rule.path_prefix is not None or rule.methods):
        raise ConfigError(f"{key}.connections", "a connection is counted as it opens, before any request: "
                                                "only src and unless-src conditions apply")


_HEADER_NAME = Field("name", rule_header_name, required="is required: the header's name")
_HEADER_VALUE = Field("value", rule_header_value, required="is required: the header's value")
#: Every action's table, by the action's name (config._model.REQUEST_ACTIONS and RESPONSE_ACTIONS).
RULES = {
    "set-header": Table(RuleConfig, (*_CONDITIONS, _HEADER_NAME, _HEADER_VALUE)),
    "add-header": Table(RuleConfig, (*_CONDITIONS, _HEADER_NAME, _HEADER_VALUE)),
    "del-header": Table(RuleConfig, (*_CONDITIONS, _HEADER_NAME)),
    "redirect": Table(RuleConfig, (
        *_CONDITIONS,
        Field("location", redirect_location),
        Field("prefix", redirect_prefix),
        Field("scheme", redirect_scheme),
        Field("code", redirect_code),
        Field("drop-query", parse_bool),
    ), check=_check_redirect),
    "deny": Table(RuleConfig, (*_CONDITIONS, Field("status", deny_status))),
    "allow": Table(RuleConfig, _CONDITIONS),
    "rate-limit": Table(RuleConfig, (
        *_CONDITIONS,
        Field("key", rate_limit_key),
        Field("requests", count()),
        Field("websockets", count()),
        Field("concurrent", count()),
        Field("connections", count()),
        Field("period", parse_duration),
        Field("table-size", count(maximum=10_000_000)),
        Field("ipv6-mask", count(minimum=1, maximum=128)),
    ), check=_check_rate_limit),
}


ROUTE = Table(RouteConfig, (
    Field("host", NON_EMPTY),
    Field("host-suffix", NON_EMPTY),
    Field("host-prefix", NON_EMPTY),
    Field("path-prefix", path_prefix),
    Field("path-regex", regex),
    Field("header", NON_EMPTY),
    Field("value", NON_EMPTY),
    Field("methods", methods),
    Field("method", None),  # the same as methods, which wins
    Field("websocket", parse_bool),
    Field("subprotocol", NON_EMPTY),
    Field("subprotocols", strings),
    Field("origins", strings),
    Field("backend", None),  # exactly one of backend (a backend's name) and deny (a status)
    Field("deny", None),
    Field("http-request", None),  # rules as RULES, read with the frontend's unique-id header known
    Field("http-response", None),
))

CERTIFICATE = Table(CertificateFiles, (
    Field("cert", _FILE, required="required: the PEM file of the certificate (and its chain)"),
    Field("key", _FILE),  # else the cert's file
    Field("chain", _FILE),
))


def _check_listener_tls(key: str, tls: ListenerTLSConfig) -> None:
    if not tls.certificates and tls.directory is None:
        raise ConfigError(f"{key}.certificates", "a TLS listener needs certificates, a directory of them, or both")


def _certificates(key: str, value: object) -> tuple[CertificateFiles, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, "expected a list of tables such as {cert = \"a.pem\", key = \"a.key\"}")
    read = [CERTIFICATE.read(f"{key}[{index}]", entry) for index, entry in enumerate(value)]
    return tuple(CertificateFiles(**{"key": files["cert"], **files}) for files in read)


LISTENER_TLS = Table(ListenerTLSConfig, (
    Field("certificates", _certificates),
    Field("directory", text("a directory path")),
    Field("min-version", one_of(TLS_VERSIONS)),
    Field("ciphers", text("an OpenSSL cipher list")),
    Field("alpn", alpn),
), check=_check_listener_tls)

HTTP2 = Table(Http2Config, (
    Field("enabled", parse_bool),
    Field("max-concurrent-streams", count(maximum=1 << 16)),
    Field("initial-window-size", count(minimum=1024, maximum=(1 << 31) - 1)),
    Field("max-resets", count()),
    Field("max-control-frames", count()),
    Field("flood-window", parse_duration),
    Field("websocket", parse_bool),
))

CLIENTS = Table(ClientsConfig, (
    Field("identify", identify),
    Field("expire", parse_duration),
))

FORWARD = Table(ForwardConfig, (
    Field("parents", None),  # a backend's name
    Field("never-direct", parse_bool),
    Field("allow-hosts", hosts),
    Field("deny-hosts", hosts),
    Field("direct", hosts),
    Field("clients", networks),
    Field("connect-ports", connect_ports),
    Field("resolve-timeout", parse_duration),
    Field("users-file", users_file, "users"),
))

FRONTEND = Table(FrontendConfig, (
    Field("mode", None),  # "reverse" (without it), or "forward" with the [forward] table
    Field("listen", endpoints),
    Field("backend", None),  # a backend's name
    Field("routes", None),  # tables as ROUTE
    Field("forward", None),  # as FORWARD
    Field("peers", one_of(("local", "proxied"), "local or proxied")),
    Field("trusted-proxies", trusted_proxies),
    Field("proxy-protocol", one_of(PROXY_PROTOCOLS)),
    Field("forwarded-header", forwarded_header),
    Field("max-reads", count(minimum=0)),
    Field("max-writes", count(minimum=0)),
    Field("handlers", hooks),
    Field("protocol", dotted_class),
    Field("clients", None),  # as CLIENTS, which depends on peers
    Field("tls", section(LISTENER_TLS)),
    Field("unique-id-header", rule_header_name),
    Field("http-request", None),  # rules as RULES
    Field("http-response", None),
    Field("http2", section(HTTP2)),
))

DOCUMENT = Table(ProxyConfig, (
    Field("timeouts", section(TIMEOUTS)),
    Field("limits", section(LIMITS)),
    Field("pool", section(POOL)),
    Field("access-log", access_log),
    Field("log", section(LOG)),
    Field("shutdown", None),  # as SHUTDOWN: three settings of the proxy's own
    Field("websocket", None),  # the defaults of every backend's
    Field("admin", section(ADMIN)),
    Field("cluster", section(CLUSTER)),
    Field("process", section(PROCESS)),
    Field("backends", None),  # tables as BACKEND, by name
    Field("frontends", None),  # tables as FRONTEND, by name
))
