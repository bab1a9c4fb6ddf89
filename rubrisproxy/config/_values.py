"""Parsers for the scalar values a config uses: durations, sizes, server addresses."""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from ._errors import ConfigError
from ._model import HookConfig, ServerConfig

_DURATION = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,20})?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d{1,20})\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

#: The shortest duration any setting takes: below it a timer or a check would spin.
MIN_DURATION = 0.001
#: The longest duration any setting takes: HAProxy's bound (its timers are 32-bit milliseconds), and about
#: the longest timeout an event loop's poll accepts.
MAX_DURATION = 24 * 86400.0
#: The largest size any setting takes; settings whose bytes are held in memory have lower bounds.
MAX_SIZE = 1 << 40
#: The largest count (connections, retries, entries...) any setting takes.
MAX_COUNT = (1 << 31) - 1


def parse_duration(key: str, value: object, maximum: float = MAX_DURATION) -> float:
    """Seconds from ``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"``: from 1ms to ``maximum``."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as '30s', got {value!r}")
    seconds: float
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"expected a finite duration such as '30s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = value  # compared as it is: an integer too large for a float is still just too large
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(key, f"expected a duration such as '30s' or '500ms', got {value!r}")
    if seconds <= 0:
        raise ConfigError(key, f"must be greater than zero, got {value!r}")
    if seconds < MIN_DURATION:
        raise ConfigError(key, f"must be at least 1ms, got {value!r}")
    if seconds > maximum:
        raise ConfigError(key, f"must be at most {_duration_text(maximum)}, got {value!r}")
    return float(seconds)


def parse_size(key: str, value: object, maximum: int = MAX_SIZE) -> int:
    """Bytes from ``1024``, ``"64k"``, ``"10MiB"``, ``"1g"``: at least zero, at most ``maximum``."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size such as '64k', got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = (match.group(2) or "").lower()[:1]
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ConfigError(key, f"expected a size such as '64k' or '10m', got {value!r}")
    if size < 0:
        raise ConfigError(key, f"must not be negative, got {value!r}")
    if size > maximum:
        raise ConfigError(key, f"must be at most {_size_text(maximum)}, got {value!r}")
    return size


def parse_positive_int(key: str, value: object, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """An integer from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(key, f"must be at most {maximum}, got {value}")
    return value


def _duration_text(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _DURATION_UNITS[unit] == 0:
            return f"{seconds / _DURATION_UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def _size_text(size: int) -> str:
    for unit in ("t", "g", "m", "k"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit.upper()}iB"
    return f"{size} bytes"


def parse_server(key: str, value: object, name: str) -> ServerConfig:
    """A server from ``host:port``, ``http://host:port`` or ``https://host[:port]``."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"expected an address such as '127.0.0.1:8000', got {value!r}")
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ConfigError(key, f"invalid address {value!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(key, f"scheme must be http or https, got {parts.scheme!r} in {value!r}")
    if not parts.hostname:
        raise ConfigError(key, f"missing host in {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(key, f"an address takes no path or query, got {value!r}")
    tls = parts.scheme == "https"
    if port is None:
        if "://" not in value:
            raise ConfigError(key, f"missing port in {value!r}")
        port = 443 if tls else 80
    if port == 0:
        raise ConfigError(key, f"port must be from 1 to 65535, got 0 in {value!r}")
    return ServerConfig(name=name, host=parts.hostname, port=port, tls=tls)


_PORTED_ENDPOINTS = ("tcp", "tcp6", "ssl")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def split_endpoint(description: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    """An endpoint string read as Twisted reads it: its kind (lowercase), its positional arguments and its named
    ones, in order; ``:`` separates, ``=`` names, ``\\`` escapes either. The one reader of endpoint strings."""
    parts: list[tuple[str | None, str]] = []
    name: str | None = None
    current: list[str] = []
    characters = iter(description)
    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == ":":
            parts.append((name, "".join(current)))
            name, current = None, []
        elif character == "=" and name is None:
            name, current = "".join(current), []
        else:
            current.append(character)
    parts.append((name, "".join(current)))
    first_name, first = parts[0]
    kind = first.lower() if first_name is None else ""
    positional = [value for name, value in parts[1:] if name is None]
    named = [(name, value) for name, value in parts[1:] if name is not None]
    return kind, positional, named


def parse_endpoint(key: str, description: object) -> str:
    """A Twisted server endpoint string (``tcp:8080:interface=127.0.0.1``), parsed as the listener will parse it
    but not listened on. An ``ssl:`` string's options and files are read with the TLS settings, which name the
    field at fault."""
    if not isinstance(description, str) or not description:
        raise ConfigError(key, f"expected an endpoint string such as 'tcp:8080', got {description!r}")
    kind, positional, named = split_endpoint(description)
    if kind != "ssl":
        try:
            serverFromString(None, description)  # no reactor: parsing only builds the endpoint; nothing listens
        except OSError as e:
            raise ConfigError(key, f"invalid endpoint {description!r}: {e.strerror}: {e.filename}") from None
        except Exception as e:  # noqa: BLE001 - parsers and endpoint plugins raise anything for a bad string
            raise ConfigError(key, f"invalid endpoint {description!r}: {e}") from None
    if kind in _PORTED_ENDPOINTS:
        port = (positional or [value for name, value in named if name == "port"] or [""])[0]
        if not port.lstrip("-").isdigit():
            raise ConfigError(key, f"invalid endpoint {description!r}: the port must be a number, got {port!r}")
        if not 0 <= int(port) <= 65535:
            raise ConfigError(key, f"port must be from 0 to 65535, got {port} in {description!r}")
    return description


def loopback_only(endpoint: str) -> bool:
    """Whether a listen endpoint can only be reached from this machine (a UNIX socket, or TCP on loopback)."""
    kind, _, named = split_endpoint(endpoint)
    if kind == "unix":
        return True
    interfaces = [value for name, value in named if name == "interface"]
    return kind in _PORTED_ENDPOINTS and len(interfaces) == 1 and interfaces[0] in _LOOPBACK


def resolve_name(key: str, dotted: str) -> object:
    """The object a dotted name such as ``package.module.Class`` names (it must be importable)."""
    module_name, _, attribute = dotted.rpartition(".")
    if not module_name:
        raise ConfigError(key, f"expected a dotted name such as 'package.module.Class', got {dotted!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is a configuration error to report
        raise ConfigError(key, f"cannot import {module_name!r}: {e}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(key, f"module {module_name!r} has no {attribute!r}") from None


def build_objects(key: str, configs: Sequence[HookConfig], interfaces: Sequence[InterfaceClass]) -> tuple[Any, ...]:
    """Instantiate user classes named in the config; each must provide one of ``interfaces`` (checked with
    zope.interface's ``verifyObject``). A class that cannot be built or provides none is a :class:`ConfigError`."""
    built = []
    for index, config in enumerate(configs):
        where = f"{key}[{index}]"
        cls: Any = resolve_name(where, config.name)
        try:
            instance = cls(**config.options)
        except Exception as e:  # noqa: BLE001 - user code: report any failure as a configuration error
            raise ConfigError(where, f"cannot build {config.name}: {e}") from None
        provided = [i for i in interfaces if i.providedBy(instance)]
        if not provided:
            names = interfaces[0].__name__ if len(interfaces) == 1 else f"any of {', '.join(i.__name__ for i in interfaces)}"
            raise ConfigError(where, f"{config.name} does not provide {names}")
        for interface in provided:
            try:
                verifyObject(interface, instance)
            except Exception as e:  # noqa: BLE001 - zope's verify errors have no common base worth naming
                raise ConfigError(where, f"{config.name} does not provide {interface.__name__}: {e}") from None
        built.append(instance)
    return tuple(built)
