"""Balancing algorithms: which usable server takes a request.

Each is an :class:`IBalancer`; a backend asks its balancer to choose among the
servers that may take new requests (up, and not a backup while a normal server is).
Hash-based algorithms use a consistent-hash ring, so adding or removing a server
moves only that server's share of keys.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Sequence
from hashlib import blake2b
from urllib.parse import parse_qsl

from zope.interface import Interface, implementer

from ..config import HookConfig, build_objects
from ..http import RequestHead
from ._server import Server

KeyOf = Callable[[RequestHead, str], "bytes | None"]


class IBalancer(Interface):
    """Chooses a server for a request."""

    def choose(candidates: Sequence[Server], request: RequestHead, client_address: str) -> Server:
        """One of ``candidates`` (never empty) for ``request`` from ``client_address``."""


@implementer(IBalancer)
class RoundRobin:
    """Smooth weighted round robin: each server's share follows its weight, spread evenly."""

    def __init__(self) -> None:
        self._current: dict[Server, float] = {}

    def choose(self, candidates: Sequence[Server], request: RequestHead, client_address: str) -> Server:
        if len(candidates) == 1:
            return candidates[0]
        current = self._current
        total = 0.0
        best: Server | None = None
        best_weight = 0.0
        for server in candidates:
            weight = server.effective_weight
            total += weight
            value = current.get(server, 0.0) + weight
            current[server] = value
            if best is None or value > best_weight:
                best, best_weight = server, value
        assert best is not None
        current[best] = best_weight - total
        return best


@implementer(IBalancer)
class LeastConnections:
    """The server with the fewest requests in flight for its weight; ties go round robin."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[Server], request: RequestHead, client_address: str) -> Server:
        self._turn += 1
        count = len(candidates)
        best = candidates[self._turn % count]
        best_load = best.active / best.effective_weight
        for offset in range(1, count):
            server = candidates[(self._turn + offset) % count]
            load = server.active / server.effective_weight
            if load < best_load:
                best, best_load = server, load
        return best


@implementer(IBalancer)
class PowerOfTwoChoices:
    """Two servers drawn at random by weight; the less loaded one wins."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = rng or random.Random()

    def choose(self, candidates: Sequence[Server], request: RequestHead, client_address: str) -> Server:
        if len(candidates) == 1:
            return candidates[0]
        weights = [server.effective_weight for server in candidates]
        first, second = self._random.choices(candidates, weights, k=2)
        if second.active / second.effective_weight < first.active / first.effective_weight:
            return second
        return first


@implementer(IBalancer)
class ConsistentHash:
    """Hashes a key from the request onto a ring of servers; without a key, falls back to round robin."""

    POINTS_PER_WEIGHT = 100

    def __init__(self, key_of: KeyOf) -> None:
        self._key_of = key_of
        self._fallback = RoundRobin()
        self._rings: dict[tuple[tuple[int, float], ...], tuple[list[int], list[Server]]] = {}

    def choose(self, candidates: Sequence[Server], request: RequestHead, client_address: str) -> Server:
        key = self._key_of(request, client_address)
        if key is None:
            return self._fallback.choose(candidates, request, client_address)
        points, owners = self._ring(candidates)
        index = bisect(points, _hash(key)) % len(points)
        return owners[index]

    def _ring(self, candidates: Sequence[Server]) -> tuple[list[int], list[Server]]:
        identity = tuple((id(server), server.effective_weight) for server in candidates)
        ring = self._rings.get(identity)
        if ring is None:
            placed = sorted(
                (_hash(b"%s#%d" % (server.name.encode(), replica)), server)
                for server in candidates
                for replica in range(max(1, round(self.POINTS_PER_WEIGHT * server.effective_weight)))
            )
            ring = ([point for point, _ in placed], [server for _, server in placed])
            if len(self._rings) > 64:
                self._rings.clear()  # server sets change rarely; keep the cache small
            self._rings[identity] = ring
        return ring


def _hash(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def source_key(request: RequestHead, client_address: str) -> bytes:
    """HAProxy's ``source``: the client's address."""
    return client_address.encode()


def uri_key(request: RequestHead, client_address: str) -> bytes:
    """HAProxy's ``uri``: the path (normalised, as the origin receives it), without the query."""
    resolved = request.resolved
    return resolved.path if resolved is not None else request.target.split(b"?", 1)[0]


def url_param_key(name: str) -> KeyOf:
    """HAProxy's ``url_param(name)``: a query parameter's value."""
    wanted = name.encode()

    def key_of(request: RequestHead, client_address: str) -> bytes | None:
        _, _, query = request.target.partition(b"?")
        for param, value in parse_qsl(query, keep_blank_values=True):
            if param == wanted:
                return value
        return None

    return key_of


def header_key(name: str) -> KeyOf:
    """HAProxy's ``hdr(name)``: a request header's value."""
    wanted = name.lower().encode()

    def key_of(request: RequestHead, client_address: str) -> bytes | None:
        for header, value in request.headers:
            if header.lower() == wanted:
                return value
        return None

    return key_of


#: The algorithms named by a plain word, and what each builds.
_PLAIN: dict[str, Callable[[], IBalancer]] = {
    "roundrobin": RoundRobin,
    "leastconn": LeastConnections,
    "random": PowerOfTwoChoices,
    "source": lambda: ConsistentHash(source_key),
    "uri": lambda: ConsistentHash(uri_key),
}

#: The algorithms taking an argument, ``name(argument)``, and how each hashes a request.
_KEYED: dict[str, Callable[[str], KeyOf]] = {
    "url_param": url_param_key,
    "hdr": header_key,
}


def balancer_for(algorithm: str, key: str = "balance") -> IBalancer:
    """The balancer an ``algorithm`` setting names (already validated by the config)."""
    plain = _PLAIN.get(algorithm)
    if plain is not None:
        return plain()
    name, paren, argument = algorithm.partition("(")
    if paren and name in _KEYED:
        return ConsistentHash(_KEYED[name](argument[:-1]))
    if "." in algorithm:  # the dotted name of a user's IBalancer class
        (balancer,) = build_objects(key, (HookConfig(algorithm),), (IBalancer,))
        return balancer
    raise ValueError(f"unknown balancing algorithm {algorithm!r}")
