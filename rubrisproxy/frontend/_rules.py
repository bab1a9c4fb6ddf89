"""HTTP rules at the exchange's seams, whatever protocol carried the request: ``http-request`` rules between
reading a request and sending it on, ``http-response`` rules on the server's response head (docs/rules.md).

A frontend with no rules and no unique-id header has no :class:`FrontendRules`: its exchanges check one
attribute and go on. Otherwise each request gets a :class:`~rubrisproxy.frontend._rule_actions.RuleRun`; the
rules themselves are in ``_rule_actions``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from ..config import FrontendConfig, RuleConfig
from ..http import RequestHead, del_header, header_value
from ..ratelimit import Entry, LimiterTable
from ..routing import Router
from ._rule_actions import ALLOW, HeaderRule, RateLimit, Rule, RuleRun, request_rule

if TYPE_CHECKING:
    from ..backend import Backend
    from ._exchange import Exchange

#: Generated request ids: this process's random prefix and a counter, ``0f3a9c1be27d44a1-1f``.
_PREFIX = os.urandom(8).hex().encode()
_COUNTER = itertools.count(1)
#: The longest request id kept from a trusted proxy.
MAX_REQUEST_ID = 128


class FrontendRules:
    """A frontend's rules, compiled: its own and each route's, request and response, and its request ids.

    Rate-limit tables are kept across a reload for a rule left as it was in the same place.
    """

    def __init__(self, config: FrontendConfig, clock: IReactorTime, previous: FrontendRules | None = None) -> None:
        self.clock = clock
        kept = previous.tables if previous is not None else {}
        self.tables: dict[tuple[int, int, RuleConfig], LimiterTable] = {}
        self.rate_limits: list[tuple[str, int, RateLimit]] = []  # (where, index, rule): what the admin API shows
        self.request = self._compile(-1, config.http_request, kept)
        self.connection_limits = tuple(limit for where, _, limit in self.rate_limits if limit.connections)
        self.response = tuple(HeaderRule(rule) for rule in config.http_response)
        self.routes = tuple(
            (self._compile(index, route.http_request, kept), tuple(HeaderRule(rule) for rule in route.http_response))
            for index, route in enumerate(config.routes))
        header = config.unique_id_header
        self.id_header = header.encode() if header is not None else None
        self.id_lower = self.id_header.lower() if self.id_header is not None else b""

    @staticmethod
    def of(config: FrontendConfig, clock: IReactorTime, previous: FrontendRules | None = None) -> FrontendRules | None:
        """A frontend's rules; None when it has none and no unique-id header (its requests pay one check)."""
        if config.http_request or config.http_response or config.unique_id_header is not None or any(
                route.http_request or route.http_response for route in config.routes):
            return FrontendRules(config, clock, previous)
        return None

    def connection_opened(self, address: str) -> list[Entry] | None:
        """A connection from ``address`` opens: the entries of the frontend's ``connections`` limits that count it,
        to give back with :func:`connection_closed`; None if it is one too many for one of them."""
        held: list[Entry] = []
        for limit in self.connection_limits:
            condition = limit.condition
            if condition is not None and not condition.holds_for(address):
                continue
            entry = limit.open_connection(address)
            if entry is None:
                connection_closed(held)
                return None
            held.append(entry)
        return held

    def limits(self) -> list[dict[str, object]]:
        """Its rate limits as the admin API shows them: where each is, its key, its table, what it refused."""
        return [
            {"where": where, "rule": index, "key": limit.key, "keys": len(limit.table), "size": limit.table.size,
             "limited": limit.table.limited, "evicted": limit.table.evicted, "expired": limit.table.expired}
            for where, index, limit in self.rate_limits
        ]

    def _compile(self, place: int, rules: Sequence[RuleConfig],
                 kept: dict[tuple[int, int, RuleConfig], LimiterTable]) -> tuple[Rule, ...]:
        """The request rules of the frontend (``place`` -1) or of the route at index ``place``."""
        compiled: list[Rule] = []
        for index, rule in enumerate(rules):
            if rule.action != "rate-limit":
                compiled.append(request_rule(rule))
                continue
            key = (place, index, rule)
            table = kept.get(key)
            if table is None:  # a new rule, or one changed or moved
                table = LimiterTable(self.clock, rule.period, rule.table_size)
            self.tables[key] = table
            limit = RateLimit(rule, table)
            self.rate_limits.append(("frontend" if place < 0 else f"route {place}", index, limit))
            if rule.requests or rule.websockets or rule.concurrent:  # not a limit of connections alone
                compiled.append(limit)
        return tuple(compiled)

    def start(self, exchange: Exchange, router: Router) -> Backend | int | None:
        """Run the frontend's request rules, route the request, run its route's: the backend (or the route's deny
        status), or None when a rule answered it."""
        head = exchange.head
        run = exchange.rules = RuleRun(exchange, self._request_id(exchange, head))
        if self._run(self.request, run, exchange):
            return None
        target, index = (router.default, -1) if router.trivial else router.choose(head)
        if isinstance(target, int):  # the route's deny
            return target
        run.backend = target.name
        response = self.response
        if index >= 0:
            request, route_response = self.routes[index]
            if self._run(request, run, exchange):
                return None
            response = route_response + response
        run.response = response
        return target

    @staticmethod
    def _run(rules: tuple[Rule, ...], run: RuleRun, exchange: Exchange) -> bool:
        """Run ``rules`` on ``exchange``'s request; True if one answered it."""
        head = exchange.head
        for rule in rules:
            condition = rule.condition
            if condition is not None and not condition.holds(run, head):
                continue
            verdict = rule.request(run, exchange)
            if verdict is ALLOW:
                return False
            if verdict is not None:
                exchange.answer(*verdict)
                return True
        return False

    def _request_id(self, exchange: Exchange, head: RequestHead) -> bytes:
        """The request's id, in its forwarded headers: a trusted proxy's if it sent a usable one, else a new one
        (any other copy the client sent is dropped)."""
        header = self.id_header
        if header is None:
            return b""
        lower = self.id_lower
        found = header_value(head.forward, lower)
        if found is not None:
            head.forward = del_header(head.forward, lower)
            if exchange.client.trusted and 0 < len(found) <= MAX_REQUEST_ID and found.isascii() and \
                    all(0x21 <= byte <= 0x7E for byte in found):
                head.forward.append((header, found))
                return found
        request_id = b"%s-%x" % (_PREFIX, next(_COUNTER))
        head.forward.append((header, request_id))
        return request_id


def connection_closed(held: list[Entry]) -> None:
    """A connection counted by ``held`` (:meth:`FrontendRules.connection_opened`'s) has closed."""
    for entry in held:
        entry.connections -= 1
