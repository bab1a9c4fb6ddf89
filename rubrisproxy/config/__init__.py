"""Configuration: TOML file and command-line flags, validated into plain data."""

from ._errors import ConfigError
from ._load import CommandLine, apply_command_line, config_from_document, load_config
from ._model import (
    BALANCE_ALGORITHMS,
    AccessLogSettings,
    AdminConfig,
    BackendConfig,
    CookieConfig,
    FrontendConfig,
    HealthCheckConfig,
    HookConfig,
    Limits,
    PassiveCheckConfig,
    PoolSettings,
    ProxyConfig,
    RouteConfig,
    ServerConfig,
    StickConfig,
    Timeouts,
    WebSocketConfig,
)
from ._values import parse_duration, parse_server, parse_size, resolve_name

__all__ = [
    "AdminConfig",
    "AccessLogSettings",
    "BackendConfig",
    "CommandLine",
    "ConfigError",
    "CookieConfig",
    "FrontendConfig",
    "HealthCheckConfig",
    "HookConfig",
    "PassiveCheckConfig",
    "Limits",
    "PoolSettings",
    "BALANCE_ALGORITHMS",
    "ProxyConfig",
    "RouteConfig",
    "ServerConfig",
    "StickConfig",
    "Timeouts",
    "WebSocketConfig",
    "apply_command_line",
    "config_from_document",
    "load_config",
    "parse_duration",
    "parse_server",
    "parse_size",
    "resolve_name",
]
