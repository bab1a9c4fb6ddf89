"""Parsers of the values a config takes: each is given the key (for its message) and the value as TOML gave it,
and returns the value to keep or raises a :class:`ConfigError` naming the key. Scalars (durations, sizes, counts,
server addresses, endpoint strings), and the values of particular keys (a health check's expected statuses, a
forward proxy's users file...)."""

from __future__ import annotations

import importlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString
from zope.interface.interface import InterfaceClass
from zope.interface.verify import verifyObject

from ._errors import ConfigError
from ._fields import Parser
from ._model import (
    ALPN_PROTOCOLS,
    MAX_WORKERS,
    MIN_WORKER_TIMEOUT,
    TEMPLATE_VARIABLES,
    WEBSOCKET_MODES,
    Credentials,
    HookConfig,
    RedisAddress,
    ServerConfig,
)

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
    if kind == "unix":
        _check_socket_folder(key, description, positional, named)
    if kind in _PORTED_ENDPOINTS:
        _check_port_and_interface(key, description, positional, named)
    return description


def _check_socket_folder(key: str, description: str, positional: list[str], named: list[tuple[str, str]]) -> None:
    """A UNIX socket's directory must exist (else Twisted's bind fails with its lock file's name)."""
    path = (positional or [value for name, value in named if name == "address"] or [""])[0]
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ConfigError(key, f"invalid endpoint {description!r}: no directory {folder!r} for the socket")


def _check_port_and_interface(key: str, description: str, positional: list[str], named: list[tuple[str, str]]) -> None:
    """A TCP endpoint's port is a number from 0 to 65535, and its interface, when it looks like one, an IP address."""
    port = (positional or [value for name, value in named if name == "port"] or [""])[0]
    if not port.lstrip("-").isdigit():
        raise ConfigError(key, f"invalid endpoint {description!r}: the port must be a number, got {port!r}")
    if not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"port must be from 0 to 65535, got {port} in {description!r}")
    interface = dict(named).get("interface", "")
    if (":" in interface or interface.replace(".", "").isdigit()) and not _is_address(interface):
        raise ConfigError(key, f"invalid endpoint {description!r}: {interface!r} is not an IP address")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def listener_address(description: str) -> tuple[str, str, int] | None:
    """What a TCP listen endpoint binds: its address family (``tcp6`` or ``tcp``), its interface ("" for every one of
    its family: none given, ``0.0.0.0`` or ``::``) and its port; None for another kind, or port 0 (a free port of
    the system's choosing)."""
    kind, positional, named = split_endpoint(description)
    if kind not in _PORTED_ENDPOINTS:
        return None
    options = dict(named)
    port = int((positional or [options.get("port", "0")])[0])
    if not port:
        return None
    interface = options.get("interface", "")
    family = "tcp6" if kind == "tcp6" or ":" in interface else "tcp"
    return family, "" if interface in _EVERY_INTERFACE else interface, port


_EVERY_INTERFACE = frozenset(("", "0.0.0.0", "::"))


def listeners_clash(one: tuple[str, str, int], other: tuple[str, str, int]) -> bool:
    """Whether two :func:`listener_address` results cannot both bind: one port, and the same interface, or every
    interface of the family of the other's; every IPv6 interface takes every IPv4 one too (Linux's dual-stack
    sockets, which Twisted's IPv6 ports are)."""
    (family, interface, port), (other_family, other_interface, other_port) = one, other
    if port != other_port:
        return False
    if family == other_family:
        return interface == other_interface or not interface or not other_interface
    return (family == "tcp6" and not interface) or (other_family == "tcp6" and not other_interface)


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


# Generic values.


def expect(what: str, test: Callable[[Any], object], convert: Callable[[Any], Any] | None = None) -> Parser:
    """A parser of the values that pass ``test`` (then given to ``convert``, if any); it refuses others as
    "expected WHAT, got VALUE"."""

    def parse(key: str, value: object) -> Any:
        if not test(value):
            raise ConfigError(key, f"expected {what}, got {value!r}")
        return value if convert is None else convert(value)

    return parse


parse_bool = expect("true or false", lambda v: isinstance(v, bool))


def one_of(choices: Sequence[object], said: str = "") -> Parser:
    """A parser taking only ``choices``; its message says them as ``said`` (else "one of A, B")."""
    return expect(said or f"one of {', '.join(map(str, choices))}", lambda v: v in choices)


def text(what: str) -> Parser:
    """A parser of a non-empty string; its message says it expected ``what``."""
    return expect(what, lambda v: isinstance(v, str) and v != "")


NON_EMPTY = text("a non-empty string")


def unset_or(parse: Parser) -> Parser:
    """``parse``, but ``None`` (as a document built in Python may give it) is left unset."""
    return lambda key, value: None if value is None else parse(key, value)


def strings(key: str, value: object) -> tuple[str, ...]:
    """A list of non-empty strings, or one string."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(key, f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def duration_or_off(key: str, value: object) -> float:
    """A duration, or 0 (``0``, ``"0"``, ``"0s"``) that turns a setting off."""
    return 0.0 if value in (0, "0", "0s") else parse_duration(key, value)


def size(maximum: int = MAX_SIZE) -> Parser:
    """A parser of sizes up to ``maximum``."""
    return lambda key, value: parse_size(key, value, maximum)


def count(minimum: int = 1, maximum: int = MAX_COUNT) -> Parser:
    """A parser of integers from ``minimum`` to ``maximum``."""
    return lambda key, value: parse_positive_int(key, value, minimum, maximum)


def workers(key: str, value: object) -> int:
    """A number of worker processes, or ``auto``: as many as the cores this process may run on."""
    if value == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # from the command line
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(key, f"expected a number of processes from 1 to {MAX_WORKERS}, or 'auto', got {value!r}")
    return value


def worker_timeout(key: str, value: object) -> float:
    """How long a worker may leave the supervisor's call unanswered: a duration of at least 100ms."""
    seconds = parse_duration(key, value)
    if seconds < MIN_WORKER_TIMEOUT:
        raise ConfigError(key, f"must be at least 100ms, got {value!r}")
    return seconds


def endpoints(key: str, value: object) -> tuple[str, ...]:
    """Endpoint strings: a list, or one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(e, str) and e for e in value):
        raise ConfigError(key, f"expected a list of endpoint strings such as 'tcp:8080', got {value!r}")
    return tuple(parse_endpoint(key, description) for description in value)


def network(key: str, value: str) -> str:
    """A network (``10.0.0.0/8``) or an address."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise ConfigError(key, f"{value!r} is not a network: {e}") from None
    return value


def networks(key: str, value: object) -> tuple[str, ...]:
    """Networks or addresses: a list, or one."""
    return tuple(network(key, entry) for entry in strings(key, value))


def hosts(key: str, value: object) -> tuple[str, ...]:
    """Destinations: names (``example.com``), suffixes (``.example.com``) or networks (``10.0.0.0/8``)."""
    return tuple(network(key, entry) if "/" in entry else entry for entry in strings(key, value))


_NAME = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"  # an HTTP token: a header's or a cookie's name


def http_token(what: str) -> Parser:
    """A parser of a header's or cookie's name; its message says it expected ``what``."""
    return expect(what, lambda v: isinstance(v, str) and re.fullmatch(_NAME, v))


def hook(key: str, raw: object) -> HookConfig:
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


def hooks(key: str, value: object) -> tuple[HookConfig, ...]:
    """A list of classes to build (WebSocket hooks, lifecycle handlers)."""
    if not isinstance(value, list):
        raise ConfigError(key, "expected a list of class names or tables with a 'class' key")
    return tuple(hook(f"{key}[{i}]", raw) for i, raw in enumerate(value))


def dotted_class(key: str, value: object) -> str:
    """The dotted name of an importable class."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected the dotted name of a class, got {value!r}")
    resolve_name(key, value)
    return value


def log_path(key: str, path: object) -> str:
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


log_format = one_of(("text", "json"), "'text' or 'json'")
websocket_mode = one_of(WEBSOCKET_MODES)
pem_file = expect("a readable PEM file", lambda v: isinstance(v, str) and os.path.isfile(v))


# Values of particular keys.


def status_range(key: str, value: object) -> tuple[int, int]:
    """A health check's accepted statuses: ``200`` or ``"200-399"``."""
    match = re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", str(value))
    if not match:
        raise ConfigError(key, f"expected a status or a range such as '200-399', got {value!r}")
    low, high = int(match.group(1)), int(match.group(2) or match.group(1))
    if low > high:
        raise ConfigError(key, f"the range is empty: {value!r}")
    return low, high


check_path = expect("a path starting with '/'", lambda v: isinstance(v, str) and v.startswith("/"))
http_method = expect("an HTTP method", lambda v: isinstance(v, str) and v.isalpha(), str.upper)


def balance(key: str, value: object) -> str:
    """A balancing algorithm (HAProxy's names) or the dotted name of a user's ``IBalancer`` class."""
    if isinstance(value, str) and "." in value and "(" not in value:
        if not callable(resolve_name(key, value)):
            raise ConfigError(key, f"{value!r} is not a class")
        return value
    if not isinstance(value, str) or not _valid_balance(value):
        raise ConfigError(
            key,
            f"expected roundrobin, leastconn, random, source, uri, url_param(NAME), hdr(NAME) or the dotted name "
            f"of an IBalancer class, got {value!r}",
        )
    return value


def _valid_balance(balance: str) -> bool:
    if balance in ("roundrobin", "leastconn", "random", "source", "uri"):
        return True
    for prefix in ("url_param(", "hdr("):
        if balance.startswith(prefix) and balance.endswith(")") and len(balance) > len(prefix) + 1:
            return True
    return False


#: Browsers cap a cookie's Max-Age at 400 days (RFC 6265bis).
MAX_COOKIE_AGE = 400 * 86400.0


def cookie_age(key: str, value: object) -> int:
    """A cookie's Max-Age in whole seconds; 0 makes a session cookie."""
    return 0 if value in (0, "0") else int(parse_duration(key, value, MAX_COOKIE_AGE))


STICK_ON = "source, header(NAME), url_param(NAME) or cookie(NAME)"
stick_on = expect(STICK_ON, lambda v: isinstance(v, str) and (
    v == "source" or re.fullmatch(rf"(header|url_param|cookie)\({_NAME}\)", v)))
stick_learn = expect("header(NAME) or set-cookie(NAME)",
                     lambda v: isinstance(v, str) and re.fullmatch(rf"(header|set-cookie)\({_NAME}\)", v))
close_codes = expect("a list of close codes (1000-4999)",
                     lambda v: isinstance(v, list) and all(isinstance(c, int) and 1000 <= c <= 4999 for c in v), tuple)


def path_prefix(key: str, value: object) -> str:
    """A route's path prefix."""
    path: str = NON_EMPTY(key, value)
    if not path.startswith("/"):
        raise ConfigError(key, f"expected a path beginning with /, got {path!r}")
    return path


def regex(key: str, value: object) -> str:
    """A regular expression that compiles."""
    pattern: str = NON_EMPTY(key, value)
    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError(key, f"invalid regular expression: {e}") from None
    except RecursionError:
        raise ConfigError(key, "the regular expression nests too deeply") from None
    return pattern


def methods(key: str, value: object) -> tuple[str, ...]:
    """Request methods, in capitals: a list, or one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise ConfigError(key, f"expected a method or a list of methods, got {value!r}")
    return tuple(m.upper() for m in value)


deny_status = expect("a 4xx or 5xx status",
                     lambda v: not isinstance(v, bool) and isinstance(v, int) and 400 <= v <= 599)


def trusted_proxies(key: str, value: object) -> tuple[str, ...]:
    """The networks of the proxies a frontend trusts (a list: one string is refused, it is too easy to get wrong)."""
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of networks or addresses such as ['10.0.0.0/8'], got {value!r}")
    return networks(key, value)


forwarded_header = expect("x-forwarded-for or forwarded",
                          lambda v: isinstance(v, str) and v.lower() in ("x-forwarded-for", "forwarded"), str.lower)


IDENTIFY = "sid, cookie(NAME), header(NAME) or connection"


def identify(key: str, value: object) -> tuple[str, ...]:
    """How client sessions are known: ``sid``, ``cookie(NAME)``, ``header(NAME)``, ``connection``."""
    specs = strings(key, value)
    if not specs:
        raise ConfigError(key, f"expected at least one of {IDENTIFY}")
    for spec in specs:
        named = spec.startswith(("cookie(", "header(")) and spec.endswith(")") and len(spec) > 8
        if spec not in ("sid", "connection") and not named:
            raise ConfigError(key, f"expected {IDENTIFY}, got {spec!r}")
    return specs


connect_ports = expect("a list of port numbers",
                       lambda v: isinstance(v, list) and all(type(p) is int and 0 < p < 65536 for p in v), tuple)


_PASSWORD_HASH = re.compile(r"^pbkdf2_sha256\$\d+\$[0-9a-f]+\$[0-9a-f]{64}$")


def users_file(key: str, path: object) -> dict[str, str]:
    """``user:pbkdf2_sha256$ITERATIONS$SALT$HASH`` lines (``rubrisproxy passwd`` writes them)."""
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


def credentials_file(key: str, path: object) -> Credentials:
    """The ``user:password`` on the first line of the file at ``path`` (the line's end is not part of it)."""
    if not isinstance(path, str) or not path:
        raise ConfigError(key, f"expected a file path, got {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(key, f"{path!r} is not UTF-8 text (byte {e.start})") from None
    return _credentials(key, line.rstrip("\r\n"), f"file {path!r}")


def credentials_env(key: str, name: object) -> Credentials:
    """The ``user:password`` held by the environment variable ``name``."""
    if not isinstance(name, str) or not name or "=" in name:
        raise ConfigError(key, f"expected an environment variable's name, got {name!r}")
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(key, f"the environment variable {name} is not set")
    return _credentials(key, value, f"environment variable {name}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _credentials(key: str, value: str, source: str) -> Credentials:
    """``user:password`` read from ``source``; what is wrong is said without quoting it (it holds a password)."""
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ConfigError(key, f"the {source} does not hold user:password")
    if _CONTROL.search(value):
        raise ConfigError(key, f"the {source} holds a control character in its user:password")
    return Credentials(user, password, source)


def alpn(key: str, value: object) -> tuple[str, ...]:
    """ALPN protocol names a listener offers."""
    names = strings(key, value)
    for name in names:
        if name not in ALPN_PROTOCOLS:
            raise ConfigError(key, f"expected protocols among {', '.join(ALPN_PROTOCOLS)}, got {name!r}")
    return names


def admin_token(key: str, value: object) -> str:
    """The admin API's bearer token."""
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigError(key, "expected a string of at least 16 characters")
    return value


def redis_address(key: str, value: object) -> RedisAddress:
    """``redis://HOST[:PORT][/DB]`` or ``unix:///PATH[?db=DB]``: where a cluster's Redis listens."""
    expected = "expected redis://host:port/db or unix:///path/to/socket"
    if not isinstance(value, str) or len(value) > 1024:
        raise ConfigError(key, f"{expected}, got {value!r}")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as e:
        raise ConfigError(key, f"{expected}: {e}") from None
    if url.scheme == "unix" and url.path and not url.netloc and not url.fragment:
        db = url.query.removeprefix("db=") if url.query else "0"
        if not db.isdigit() or int(db) > 15:
            raise ConfigError(key, f"the database must be db=0 .. db=15, got {url.query!r}")
        return RedisAddress(path=url.path, db=int(db))
    if url.scheme != "redis" or not url.hostname or url.query or url.fragment or url.username or url.password:
        raise ConfigError(key, f"{expected} (no password, query or fragment), got {value!r}")
    db = url.path.strip("/") or "0"
    if not db.isdigit() or int(db) > 15:
        raise ConfigError(key, f"the database must be /0 .. /15, got {url.path!r}")
    return RedisAddress(host=url.hostname, port=port or 6379, db=int(db))


def node_name(key: str, value: object) -> str:
    """A cluster node's name: letters, digits, ``.``, ``_``, ``-``, ``:``; at most 64."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", value):
        raise ConfigError(key, f"expected 1 to 64 letters, digits, '.', '_', ':' or '-', got {value!r}")
    return value


# HTTP rules (docs/rules.md).

#: Header names no rule may set, add or delete: they frame the message, name its host or describe the connection
#: (the proxy writes them from what it parsed), or the proxy writes them itself after the rules.
FRAMING_HEADERS = frozenset((
    "content-length", "transfer-encoding", "connection", "upgrade", "host", "keep-alive", "te", "trailer",
    "proxy-connection", "expect", "via",
))
FORWARDING_HEADERS = frozenset(("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"))
_VARIABLE = re.compile(r"%\[([^\]]*)\]|%%|%")
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?|")  # visible ASCII, inner spaces and tabs
_URI = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no space


def template_parts(key: str, text: str, variables: Sequence[str]) -> tuple[tuple[bool, str], ...]:
    """A header value read as text and ``%[NAME]`` substitutions (``%%``: a percent sign), as ``(is a NAME,
    text)`` pairs; a NAME not among ``variables``, or a lone ``%``, is refused."""
    parts: list[tuple[bool, str]] = []
    at = 0
    for match in _VARIABLE.finditer(text):
        literal = text[at:match.start()]
        at = match.end()
        if match.group(0) == "%%":
            parts.append((False, literal + "%"))
            continue
        if match.group(1) is None:
            raise ConfigError(key, f"a lone % in {text!r}: write %% for a percent sign, or %[NAME]")
        if match.group(1) not in variables:
            raise ConfigError(key, f"unknown %[{match.group(1)}] in {text!r}; known: {', '.join(variables)}")
        parts.extend([(False, literal), (True, match.group(1))])
    parts.append((False, text[at:]))
    merged: list[tuple[bool, str]] = []
    for is_name, piece in parts:
        if not is_name and merged and not merged[-1][0]:
            merged[-1] = (False, merged[-1][1] + piece)
        elif is_name or piece:
            merged.append((is_name, piece))
    return tuple(merged)


def rule_header_name(key: str, value: object) -> str:
    """The name of a header a rule sets, adds or deletes: a token, and none that frames the message."""
    name: str = http_token("a header name")(key, value)
    lower = name.lower()
    if lower in FRAMING_HEADERS or lower.startswith("proxy-"):
        raise ConfigError(key, f"{name} frames the message or describes the connection: the proxy writes it")
    if lower in FORWARDING_HEADERS:
        raise ConfigError(key, f"{name} is written by the proxy about each client (docs/connections.md)")
    return name


def rule_header_value(key: str, value: object) -> str:
    """A header value a rule writes: visible ASCII with inner spaces (no CR, LF, NUL or other control)."""
    if not isinstance(value, str) or not _FIELD_VALUE.fullmatch(value):
        raise ConfigError(key, f"expected visible ASCII text (no CR, LF or control characters, no edge spaces), "
                               f"got {value!r}")
    template_parts(key, value, TEMPLATE_VARIABLES)
    return value


def redirect_location(key: str, value: object) -> str:
    """A redirect's location: a URI of visible ASCII (relative or absolute)."""
    if not isinstance(value, str) or not _URI.fullmatch(value):
        raise ConfigError(key, f"expected a URI of visible ASCII without spaces, got {value!r}")
    return value


def redirect_prefix(key: str, value: object) -> str:
    """A redirect's prefix: ``/path`` or ``scheme://host[/path]``, without query or fragment."""
    prefix = redirect_location(key, value)
    parts = urlsplit(prefix)
    relative = prefix.startswith("/") and not prefix.startswith("//")
    if not relative and not (parts.scheme and parts.netloc):
        raise ConfigError(key, f"expected /path or scheme://host[/path], got {prefix!r}")
    if parts.query or parts.fragment or "?" in prefix or "#" in prefix or "\\" in prefix:
        raise ConfigError(key, f"a prefix takes no query, fragment or backslash, got {prefix!r}")
    return prefix


redirect_scheme = expect("a URI scheme such as https", lambda v: isinstance(v, str) and re.fullmatch(
    r"[A-Za-z][A-Za-z0-9+.-]*", v), str.lower)
redirect_code = one_of((301, 302, 303, 307, 308), "301, 302, 303, 307 or 308")
rate_limit_key = expect("src, sid or hdr(NAME)", lambda v: isinstance(v, str) and (
    v in ("src", "sid") or re.fullmatch(rf"hdr\({_NAME}\)", v)))
