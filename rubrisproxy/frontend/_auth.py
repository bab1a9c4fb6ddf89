"""Forward-proxy authentication: Basic credentials checked against a users file's hashes off the reactor
thread, with wrong guesses slowed per source so that they never hold up anyone else's login."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from ..http import HTTPError

PROXY_AUTHENTICATE = b'Proxy-Authenticate: Basic realm="rubrisproxy"\r\n'

REMEMBERED = 1024  # valid Proxy-Authorization values kept, so a client pays the hash once
FREE_FAILURES = 5  # wrong credentials a source may send before it must wait
MAX_COOLDOWN = 60.0  # seconds: the wait doubles from 1 s with each further failure, up to this
FORGET_AFTER = 900.0  # seconds without a failure, after which a source starts afresh
SOURCES = 4096  # sources with failures remembered (the oldest are forgotten first)
HASHING = 2  # hashes computed at once: the reactor's thread pool keeps threads for name resolution
WAITING = 64  # checks waiting for a hashing slot, each from a different source

#: Run ``function(*args)`` off the reactor thread: a Deferred of its result.
Runner = Callable[..., "defer.Deferred[bool]"]


@dataclass(slots=True)
class _Strikes:
    """One source's recent failures, and until when its new credentials are refused unchecked."""

    failures: int = 0
    last: float = 0.0
    until: float = 0.0


class ProxyAuth:
    """Checks ``Proxy-Authorization`` against ``users``. Valid values are remembered and pass at once,
    whoever sends them. Anything else is hashed (about 0.1 s, off the reactor thread), at most
    :data:`HASHING` at a time; each source has at most one value being checked, so waiting in line is
    per source, never per guess; after :data:`FREE_FAILURES` wrong values a source gets 429 with
    ``Retry-After``, without a hash, for a time doubling with each further failure."""

    def __init__(self, users: Mapping[str, str], clock: Any, run: Runner) -> None:
        self.users = users
        self._clock = clock
        self._run = run
        self._dummy_hash = next(iter(users.values()), "") or hash_password("", b"rubrisproxy")
        self.verified: dict[bytes, bool] = {}  # valid values, oldest first
        self.strikes: dict[str, _Strikes] = {}  # by source, least recently failed first
        self._checking: dict[str, bytes] = {}  # source -> the value being checked for it
        self._waiters: dict[bytes, list[defer.Deferred[None]]] = {}  # value -> who waits for its check
        self._line: deque[tuple[bytes, str]] = deque()  # (value, source) waiting for a hashing slot
        self._hashing = 0

    def check(self, header: bytes | None, client: str) -> defer.Deferred[None] | None:
        """None if ``header`` is known valid; else a Deferred that fails with :class:`HTTPError` 407 if it is
        not. Raises 407 (missing) or 429 (this source must wait) at once."""
        if header is None:
            raise HTTPError(407, "proxy credentials missing", PROXY_AUTHENTICATE)
        if header in self.verified:
            return None
        source = source_of(client)
        now = self._clock.seconds()
        strikes = self.strikes.get(source)
        if strikes is not None and now - strikes.last > FORGET_AFTER:
            del self.strikes[source]
        elif strikes is not None and strikes.until > now:
            wait = math.ceil(strikes.until - now)
            raise HTTPError(429, f"{strikes.failures} wrong proxy credentials from {source}; retry in {wait}s",
                            b"Retry-After: %d\r\n" % wait)
        waiting = self._waiters.get(header)
        if waiting is None:
            if source in self._checking:
                raise HTTPError(429, f"other proxy credentials from {source} are being checked", b"Retry-After: 1\r\n")
            if len(self._line) >= WAITING:
                raise HTTPError(429, "too many proxy credentials waiting to be checked", b"Retry-After: 1\r\n")
            waiting = self._waiters[header] = []
            self._checking[source] = header
            self._line.append((header, source))
        answer: defer.Deferred[None] = defer.Deferred()
        waiting.append(answer)
        self._next()
        return answer

    def _next(self) -> None:
        while self._hashing < HASHING and self._line:
            header, source = self._line.popleft()
            self._hashing += 1
            self._run(self._valid, header).addBoth(self._checked, header, source)

    def _checked(self, valid: bool | Failure, header: bytes, source: str) -> None:
        self._hashing -= 1
        del self._checking[source]
        waiters = self._waiters.pop(header)
        if valid is True:
            if len(self.verified) >= REMEMBERED:
                del self.verified[next(iter(self.verified))]  # the oldest
            self.verified[header] = True
            self.strikes.pop(source, None)
        elif not isinstance(valid, Failure):
            self._strike(source)
        for waiter in waiters:
            if valid is True:
                waiter.callback(None)
            elif isinstance(valid, Failure):
                waiter.errback(valid)
            else:
                waiter.errback(HTTPError(407, "proxy credentials wrong", PROXY_AUTHENTICATE))
        self._next()

    def _strike(self, source: str) -> None:
        now = self._clock.seconds()
        strikes = self.strikes.pop(source, None) or _Strikes()
        if len(self.strikes) >= SOURCES:
            del self.strikes[next(iter(self.strikes))]  # the least recently failed
        self.strikes[source] = strikes
        strikes.failures += 1
        strikes.last = now
        if strikes.failures > FREE_FAILURES:
            strikes.until = now + min(MAX_COOLDOWN, 2.0 ** (strikes.failures - FREE_FAILURES - 1))

    def _valid(self, header: bytes) -> bool:
        """Whether ``header`` holds a user's Basic credentials (run off the reactor thread)."""
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        stored = self.users.get(user)
        # An unknown user costs a hash too, so timing does not tell which users exist.
        matches = check_password(password, stored if stored is not None else self._dummy_hash)
        return bool(sep) and stored is not None and matches


def source_of(client: str) -> str:
    """Whom failures are counted against: the client's address; for IPv6 its /64, which one host holds."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        return str(mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def hash_password(password: str, salt: bytes, iterations: int = 200_000) -> str:
    """``pbkdf2_sha256$ITERATIONS$SALT$HASH``, as a users file holds it."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, iterations, salt, digest = stored.split("$")
    computed = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(computed.hex(), digest)
