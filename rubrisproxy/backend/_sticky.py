"""Stickiness: sending a client's requests to the server that served it before.

Two kinds, as in HAProxy: a cookie naming the server (``insert`` a cookie of the
proxy's own, or ``prefix`` the application's cookie with the server's name), and a
stick table keyed by a value taken from the request (and optionally learned from the
response). The table's storage is an :class:`IStickStore`, so a store shared by
several proxy nodes can replace the in-memory one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from ..config import CookieConfig
from ..http import Headers, RequestHead
from ._balance import KeyOf, header_key, source_key, url_param_key

V = TypeVar("V")

PREFIX_SEPARATOR = "~"


class IStickStore(Interface):
    """Where a stick table keeps its entries: key -> server name, each with an expiry."""

    def get(key: bytes) -> str | None:
        """The server name stored for ``key``, if any and not expired (reading refreshes it)."""

    def put(key: bytes, server: str) -> None:
        """Store (or refresh) ``key`` -> ``server``."""

    def items(limit: int) -> list[tuple[bytes, str, float]]:
        """Up to ``limit`` live entries, most recently used first: (key, server, seconds left)."""

    def __len__() -> int:
        """Entries held."""


class ExpiringStore(Generic[V]):
    """A bounded in-process store: entries expire ``expire`` seconds after last use; the oldest go first when full."""

    def __init__(self, clock: IReactorTime, expire: float, size: int) -> None:
        self._clock = clock
        self._expire = expire
        self._size = size
        self._entries: OrderedDict[bytes, tuple[V, float]] = OrderedDict()

    def get(self, key: bytes) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        server, deadline = entry
        now = self._clock.seconds()
        if deadline < now:
            del self._entries[key]
            return None
        self._entries[key] = (server, now + self._expire)
        self._entries.move_to_end(key)
        return server

    def pop(self, key: bytes) -> V | None:
        """Take ``key``'s value out of the store (None if it has none, or an expired one)."""
        entry = self._entries.pop(key, None)
        return entry[0] if entry is not None and entry[1] >= self._clock.seconds() else None

    def put(self, key: bytes, server: V) -> None:
        self._entries[key] = (server, self._clock.seconds() + self._expire)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def items(self, limit: int) -> list[tuple[bytes, V, float]]:
        now = self._clock.seconds()
        found = []
        for key in reversed(self._entries):
            server, expires = self._entries[key]
            if expires > now:
                found.append((key, server, expires - now))
                if len(found) >= limit:
                    break
        return found

    def __len__(self) -> int:
        return len(self._entries)


@implementer(IStickStore)
class MemoryStickStore(ExpiringStore[str]):
    """A stick table's in-process store: key -> server name."""


def cookie_value(headers: Headers, name: str) -> str | None:
    """The value of cookie ``name`` in a request's Cookie headers."""
    for header, value in headers:
        if header.lower() == b"cookie":
            for part in value.split(b";"):
                key, _, found = part.strip().partition(b"=")
                if key.decode("latin-1") == name:
                    return found.decode("latin-1")
    return None


def cookie_key(name: str) -> KeyOf:
    """A request key: the value of cookie ``name``."""

    def key_of(request: RequestHead, client_address: str) -> bytes | None:
        value = cookie_value(request.headers, name)
        return value.encode("latin-1") if value is not None else None

    return key_of


def key_for(spec: str) -> KeyOf:
    """``source``, ``header(NAME)``, ``url_param(NAME)`` or ``cookie(NAME)`` as a request key."""
    if spec == "source":
        return source_key
    kind, _, rest = spec.partition("(")
    argument = rest[:-1]
    return {"header": header_key, "url_param": url_param_key, "cookie": cookie_key}[kind](argument)


def learned_key(spec: str) -> Callable[[Headers], bytes | None]:
    """``header(NAME)`` or ``set-cookie(NAME)``: a key found in a response's headers."""
    kind, _, rest = spec.partition("(")
    name = rest[:-1]
    if kind == "header":
        wanted = name.lower().encode()
        return lambda headers: next((v for n, v in headers if n.lower() == wanted), None)

    def from_set_cookie(headers: Headers) -> bytes | None:
        for header, value in headers:
            if header.lower() == b"set-cookie":
                cookie: SimpleCookie = SimpleCookie()
                cookie.load(value.decode("latin-1"))
                if name in cookie:
                    return cookie[name].value.encode("latin-1")
        return None

    return from_set_cookie


class CookieStickiness:
    """HAProxy's ``cookie NAME insert`` or ``cookie NAME prefix``."""

    def __init__(self, config: CookieConfig) -> None:
        self.name = config.name
        self.mode = config.mode
        self._attributes = ("; Path=/; HttpOnly" + (f"; Max-Age={config.max_age}" if config.max_age else "")
                            + ("; Secure" if config.secure else ""))

    def server_for(self, request: RequestHead) -> str | None:
        value = cookie_value(request.headers, self.name)
        if value is None:
            return None
        if self.mode == "prefix":
            server, separator, _ = value.partition(PREFIX_SEPARATOR)
            return server if separator else None
        return value

    def request_headers(self, headers: Headers) -> Headers:
        """Prefix mode: the application's cookie as it set it, without the server's name."""
        if self.mode != "prefix":
            return headers
        name = self.name.encode("latin-1")
        rewritten = []
        for header, value in headers:
            if header.lower() == b"cookie" and name + b"=" in value:
                parts = []
                for part in value.split(b";"):
                    key, equals, found = part.strip().partition(b"=")
                    if key == name and PREFIX_SEPARATOR.encode() in found:
                        found = found.split(PREFIX_SEPARATOR.encode(), 1)[1]
                    parts.append(key + equals + found)
                value = b"; ".join(parts)
            rewritten.append((header, value))
        return rewritten

    def response_headers(self, headers: Headers, server: str, requested: str | None) -> Headers:
        """Insert mode: set the cookie when the client did not name this server; prefix mode: prefix it."""
        if self.mode == "insert":
            if requested != server:
                headers.append((b"Set-Cookie", f"{self.name}={server}{self._attributes}".encode("latin-1")))
            return headers
        name = self.name.encode("latin-1") + b"="
        return [
            (header, name + server.encode("latin-1") + PREFIX_SEPARATOR.encode() + value[len(name):])
            if header.lower() == b"set-cookie" and value.startswith(name) else (header, value)
            for header, value in headers
        ]


class TableStickiness:
    """A stick table: the request's key (or one learned from a response) maps to a server name."""

    def __init__(self, store: IStickStore, key_of: KeyOf, learn: Callable[[Headers], bytes | None] | None) -> None:
        self.store = store
        self._key_of = key_of
        self._learn = learn

    def server_for(self, request: RequestHead, client_address: str) -> str | None:
        key = self._key_of(request, client_address)
        return self.store.get(key) if key is not None else None

    def remember(self, request: RequestHead, client_address: str, response_headers: Headers, server: str) -> None:
        key = self._key_of(request, client_address)
        if key is not None:
            self.store.put(key, server)
        if self._learn is not None:
            learned = self._learn(response_headers)
            if learned is not None:
                self.store.put(learned, server)
