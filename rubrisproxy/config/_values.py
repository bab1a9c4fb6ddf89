"""Parsers for the scalar values a config uses: durations, sizes, server addresses."""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from ._errors import ConfigError
from ._model import HookConfig, ServerConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(key: str, value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as '30s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(key, f"expected a duration such as '30s' or '500ms', got {value!r}")
    if seconds <= 0:
        raise ConfigError(key, f"must be greater than zero, got {value!r}")
    return seconds


def parse_size(key: str, value: object) -> int:
    """Bytes from ``1024``, ``"64k"``, ``"10MiB"``, ``"1g"``."""
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
    return size


def parse_positive_int(key: str, value: object, minimum: int = 1) -> int:
    """An integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    return value


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
    return ServerConfig(name=name, host=parts.hostname, port=port, tls=tls)


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
