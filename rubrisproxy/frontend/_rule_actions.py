"""The HTTP rules themselves (docs/rules.md): their conditions, each action, and :class:`RuleRun`, one request's
run through them. :class:`~rubrisproxy.frontend._rules.FrontendRules` compiles a frontend's and runs them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import TEMPLATE_VARIABLES, RuleConfig, template_parts
from ..engineio import sid_of
from ..http import (
    Headers,
    HTTPError,
    RedirectTarget,
    RequestHead,
    Template,
    client_ip,
    del_header,
    field_safe,
    header_value,
    in_networks,
    masked,
    networks,
    resolve,
    set_header,
)
from ..lifecycle import Termination
from ..ratelimit import Entry, LimiterTable, retry_after
from ..routing import is_websocket_upgrade

if TYPE_CHECKING:
    from ._exchange import Exchange

#: What a request rule may end with: an answer (and how the request ended), or ALLOW (no more rules run).
Verdict = tuple[HTTPError, Termination] | None
ALLOW: Verdict = (HTTPError(0, "allowed"), Termination.OK)


class RuleRun:
    """One request's run through its frontend's and route's rules: what the values of its headers may name, the
    response rules of its route and frontend, and the rate-limit entries it holds while in flight."""

    __slots__ = ("client_address", "secure", "frontend", "backend", "server", "request_id", "response", "held")

    def __init__(self, exchange: Exchange, request_id: bytes) -> None:
        self.client_address = exchange.client_address
        self.secure = exchange.client.secure
        self.frontend = exchange.client.frontend.name
        self.backend = self.server = ""
        self.request_id = request_id
        self.response: Sequence[HeaderRule] = ()
        self.held: list[Entry] | None = None

    def variable(self, name: str) -> bytes:
        if name == "src":
            return self.client_address.encode()
        if name == "unique-id":
            return self.request_id
        if name == "srv_name":
            return field_safe(self.server)
        return field_safe(self.backend if name == "be_name" else self.frontend)

    def respond(self, headers: Headers, server: str, head: RequestHead) -> Headers:
        """The response ``headers`` after the route's and the frontend's response rules (``head``: the request it
        answers, which their conditions read)."""
        self.server = server
        for rule in self.response:
            headers = rule.edit(headers, self, head)
        return headers

    def end(self) -> None:
        """The request ended: what its rate limits counted in flight is released."""
        held, self.held = self.held, None
        for entry in held or ():
            entry.active -= 1


class Condition:
    """A rule's conditions: the client in ``src`` and not in ``unless-src``, TLS or not, the path, the method."""

    __slots__ = ("src", "unless", "ssl", "path_prefix", "methods")

    def __init__(self, rule: RuleConfig) -> None:
        self.src = networks(rule.src)
        self.unless = networks(rule.unless_src)
        self.ssl = rule.ssl
        self.path_prefix = rule.path_prefix.encode() if rule.path_prefix is not None else None
        self.methods = frozenset(method.encode() for method in rule.methods)

    @staticmethod
    def of(rule: RuleConfig) -> Condition | None:
        """``rule``'s conditions, None when it has none."""
        if rule.src or rule.unless_src or rule.ssl is not None or rule.path_prefix is not None or rule.methods:
            return Condition(rule)
        return None

    def holds_for(self, address: str) -> bool:
        """Whether the conditions on the client's address hold for ``address``."""
        if self.src and not in_networks(client_ip(address), self.src):
            return False
        return not (self.unless and in_networks(client_ip(address), self.unless))

    def holds(self, run: RuleRun, head: RequestHead) -> bool:
        if (self.src or self.unless) and not self.holds_for(run.client_address):
            return False
        if self.ssl is not None and run.secure != self.ssl:
            return False
        if self.methods and head.method not in self.methods:
            return False
        return self.path_prefix is None or resolve(head).route_path.startswith(self.path_prefix)


class Rule:
    """An ``http-request`` rule: done when its condition holds."""

    __slots__ = ("condition",)

    def __init__(self, rule: RuleConfig) -> None:
        self.condition = Condition.of(rule)

    def request(self, run: RuleRun, exchange: Exchange) -> Verdict:
        """Do it for ``exchange``'s request; an answer, ALLOW, or None to go on."""
        raise NotImplementedError


class HeaderRule(Rule):
    """set-header, add-header, del-header: on the request the origin receives, or on the response."""

    __slots__ = ("name", "lower", "value", "_edit")

    def __init__(self, rule: RuleConfig) -> None:
        super().__init__(rule)
        self.name = rule.name.encode()
        self.lower = self.name.lower()
        self.value = Template(template_parts("value", rule.value, TEMPLATE_VARIABLES))
        self._edit = {"set-header": self._set, "add-header": self._add, "del-header": self._delete}[rule.action]

    def edit(self, headers: Headers, run: RuleRun, head: RequestHead) -> Headers:
        """``headers`` (a response's) edited, if the condition holds for the request ``head``."""
        condition = self.condition
        if condition is not None and not condition.holds(run, head):
            return headers
        return self._edit(headers, run)

    def _set(self, headers: Headers, run: RuleRun) -> Headers:
        return set_header(headers, self.lower, self.name, self.value.render(run))

    def _add(self, headers: Headers, run: RuleRun) -> Headers:
        headers.append((self.name, self.value.render(run)))
        return headers

    def _delete(self, headers: Headers, run: RuleRun) -> Headers:
        return del_header(headers, self.lower)

    def request(self, run: RuleRun, exchange: Exchange) -> Verdict:
        head = exchange.head
        head.forward = self._edit(head.forward, run)
        return None


class Redirect(Rule):
    """redirect: answered with ``code`` and a Location as HAProxy's location, prefix or scheme make it."""

    __slots__ = ("target", "code")

    def __init__(self, rule: RuleConfig) -> None:
        super().__init__(rule)
        location, prefix, scheme = (None if text is None else text.encode()
                                    for text in (rule.location, rule.prefix, rule.scheme))
        self.target = RedirectTarget(location, prefix, scheme, rule.drop_query)
        self.code = rule.code

    def request(self, run: RuleRun, exchange: Exchange) -> Verdict:
        where = self.target.to(resolve(exchange.head), run.secure)
        if where is None:
            return HTTPError(400, "no Host to redirect to"), Termination.BAD_REQUEST
        return HTTPError(self.code, "redirected", headers=b"Location: %s\r\n" % where), Termination.REDIRECT


class Deny(Rule):
    """deny: answered with ``status``."""

    __slots__ = ("status",)

    def __init__(self, rule: RuleConfig) -> None:
        super().__init__(rule)
        self.status = rule.status

    def request(self, run: RuleRun, exchange: Exchange) -> Verdict:
        return HTTPError(self.status, "denied by an http-request rule"), Termination.DENIED


class Allow(Rule):
    """allow: no more http-request rules run for this request (HAProxy's ``http-request allow``)."""

    __slots__ = ()

    def request(self, run: RuleRun, exchange: Exchange) -> Verdict:
        return ALLOW


class RateLimit(Rule):
    """rate-limit: per key, requests and new WebSockets over a sliding window, and requests in flight; over any,
    answered 429 with Retry-After. A request without the key (no such header, no sid) is not limited."""

    __slots__ = ("table", "key", "header", "requests", "websockets", "concurrent", "connections", "ipv6_mask")

    def __init__(self, rule: RuleConfig, table: LimiterTable) -> None:
        super().__init__(rule)
        self.table = table
        self.key = rule.key
        self.header = rule.key[4:-1].lower().encode() if rule.key.startswith("hdr(") else b""
        self.requests, self.websockets, self.concurrent = rule.requests, rule.websockets, rule.concurrent
        self.connections = rule.connections
        self.ipv6_mask = rule.ipv6_mask

    def open_connection(self, address: str) -> Entry | None:
        """A connection from ``address`` (which its conditions let it count) opens: the entry that counts it, or
        None if it is one too many (refused, and counted so)."""
        entry, _ = self.table.entry(masked(client_ip(address), address, self.ipv6_mask))
        if entry.connections >= self.connections:
            self.table.limited += 1
            return None
        entry.connections += 1
        return entry

    def _key(self, run: RuleRun, head: RequestHead) -> str | bytes | None:
        if self.header:
            return header_value(head.headers, self.header)
        if self.key == "sid":
            return sid_of(head.target)
        return masked(client_ip(run.client_address), run.client_address, self.ipv6_mask)

    def request(self, run: RuleRun, exchange: Exchange) -> Verdict:
        head = exchange.head
        key = self._key(run, head)
        if key is None:
            return None
        table = self.table
        entry, into = table.entry(key)
        wait = 1.0 if self.concurrent and entry.active >= self.concurrent else 0.0
        if not wait and self.requests:
            wait = table.request_wait(entry, into, self.requests)  # counted if admitted
        if not wait and self.websockets and head.upgrade and is_websocket_upgrade(head):
            wait = table.websocket_wait(entry, into, self.websockets)
            if wait and self.requests:
                entry.requests -= 1  # not admitted after all
        if wait:
            table.limited += 1
            error = HTTPError(429, f"over a rate limit on {self.key}", headers=b"Retry-After: %d\r\n" % retry_after(wait))
            return error, Termination.RATE_LIMITED
        if self.concurrent:
            entry.active += 1
            if run.held is None:
                run.held = []
            run.held.append(entry)
        return None


def request_rule(rule: RuleConfig) -> Rule:
    """The rule ``rule`` configures (a rate limit is built with its table, by its frontend's rules)."""
    kind: type[Rule] = {"redirect": Redirect, "deny": Deny, "allow": Allow}.get(rule.action, HeaderRule)
    return kind(rule)
