"""HTTP rules (docs/rules.md): their configuration, the rate limiter's tables, and rules applied by a running
proxy, with the inputs an attacker chooses."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.config import ConfigError, FrontendConfig, config_from_document
from rubrisproxy.frontend import FrontendRules, PeerSettings
from rubrisproxy.http import RedirectTarget, Target, client_ip, in_networks, masked, networks
from rubrisproxy.ratelimit import LimiterTable, retry_after
from rubrisproxy.routing import Router

from .helpers import ProxyTestCase, get, run_reactor_for

_BACKENDS = {"app": {"servers": ["127.0.0.1:1"]}}


def frontend_config(**keys: Any) -> FrontendConfig:
    """A frontend ``web`` read from a document with ``keys`` in its table, as the loader reads one."""
    document = {"backends": _BACKENDS, "frontends": {"web": {"listen": "tcp:8080", "backend": "app", **keys}}}
    return config_from_document(document).frontends[0]


class ConfigTests(SynchronousTestCase):
    """Every rule is checked at load; an error is one line naming the key."""

    def refused(self, keys: dict[str, Any], key: str, words: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            frontend_config(**keys)
        self.assertEqual(caught.exception.key, key)
        self.assertIn(words, caught.exception.problem)
        self.assertNotIn("\n", str(caught.exception))

    def test_header_values_that_could_split_a_message_are_refused(self) -> None:
        for value in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb", " edge", "caf\u00e9"):
            self.refused({"http-request": [{"action": "set-header", "name": "X-A", "value": value}]},
                         "frontends.web.http-request[0].value", "visible ASCII")
        for name in ("X-A\r\n", "X A", "X:A", ""):
            self.refused({"http-response": [{"action": "add-header", "name": name, "value": "v"}]},
                         "frontends.web.http-response[0].name", "a header name")

    def test_headers_that_frame_the_message_are_refused(self) -> None:
        for name in ("Content-Length", "transfer-encoding", "Connection", "Upgrade", "Host", "TE", "Trailer",
                     "Keep-Alive", "Proxy-Authorization", "Expect", "Via"):
            for rules in ("http-request", "http-response"):
                for action in ("set-header", "del-header"):
                    rule = {"action": action, "name": name, **({"value": "1"} if action == "set-header" else {})}
                    self.refused({rules: [rule]}, f"frontends.web.{rules}[0].name", "the proxy writes it")
        self.refused({"http-request": [{"action": "add-header", "name": "X-Forwarded-For", "value": "1.2.3.4"}]},
                     "frontends.web.http-request[0].name", "written by the proxy")
        self.refused({"unique-id-header": "Content-Length"}, "frontends.web.unique-id-header", "the proxy writes it")

    def test_substitutions_are_checked(self) -> None:
        rule = {"action": "set-header", "name": "X-A"}
        self.refused({"http-request": [{**rule, "value": "%[nope]"}]}, "frontends.web.http-request[0].value",
                     "unknown %[nope]")
        self.refused({"http-request": [{**rule, "value": "50%"}]}, "frontends.web.http-request[0].value", "lone %")
        self.refused({"http-request": [{**rule, "value": "%[srv_name]"}]}, "frontends.web.http-request[0].value",
                     "http-response")
        config = frontend_config(**{"http-response": [{**rule, "value": "%[srv_name] 100%%"}]})
        self.assertEqual(config.http_response[0].value, "%[srv_name] 100%%")

    def test_the_request_id_header_is_the_proxys(self) -> None:
        self.refused({"unique-id-header": "X-Request-ID", "http-request": [{"action": "del-header", "name": "x-request-id"}]},
                     "frontends.web.http-request[0].name", "unique-id-header")
        # A response may carry it back.
        frontend_config(**{"unique-id-header": "X-Request-ID", "http-response": [
            {"action": "set-header", "name": "X-Request-ID", "value": "%[unique-id]"}]})

    def test_actions_and_their_keys(self) -> None:
        self.refused({"http-request": [{"action": "tarpit"}]}, "frontends.web.http-request[0].action", "expected one of")
        self.refused({"http-response": [{"action": "deny"}]}, "frontends.web.http-response[0].action", "expected one of")
        self.refused({"http-request": [{"action": "deny", "name": "x"}]}, "frontends.web.http-request[0].name",
                     "unknown key")
        self.refused({"http-request": [{"action": "deny", "status": 200}]}, "frontends.web.http-request[0].status",
                     "4xx or 5xx")
        self.refused({"http-request": [{"action": "redirect"}]}, "frontends.web.http-request[0]", "exactly one")
        self.refused({"http-request": [{"action": "redirect", "scheme": "https", "prefix": "/a"}]},
                     "frontends.web.http-request[0]", "exactly one")
        self.refused({"http-request": [{"action": "redirect", "location": "/a", "code": 304}]},
                     "frontends.web.http-request[0].code", "301, 302")
        for prefix in ("example.com", "//evil.com", "/a?b", "https://x/#f", "/a b", "/a\r\nb", "/a\\b"):
            self.refused({"http-request": [{"action": "redirect", "prefix": prefix}]},
                         "frontends.web.http-request[0].prefix", "got")
        self.refused({"http-request": [{"action": "redirect", "location": "/a\r\nSet-Cookie: x"}]},
                     "frontends.web.http-request[0].location", "without spaces")
        self.refused({"http-request": [{"action": "rate-limit", "key": "src"}]}, "frontends.web.http-request[0]",
                     "at least one of")
        self.refused({"http-request": [{"action": "rate-limit", "key": "cookie(a)", "requests": 1}]},
                     "frontends.web.http-request[0].key", "src, sid or hdr(NAME)")
        self.refused({"http-request": [{"action": "deny", "src": ["10.0.0.0/33"]}]},
                     "frontends.web.http-request[0].src", "not a network")
        self.refused({"http-request": {"action": "deny"}}, "frontends.web.http-request", "a list of rule tables")

    def test_connection_limits_are_a_frontends_per_source(self) -> None:
        limit = {"action": "rate-limit", "connections": 5}
        self.refused({"http-request": [{**limit, "key": "sid"}]}, "frontends.web.http-request[0].connections",
                     "per source")
        self.refused({"http-request": [{**limit, "path-prefix": "/a"}]}, "frontends.web.http-request[0].connections",
                     "only src and unless-src")
        self.refused({"routes": [{"backend": "app", "http-request": [limit]}]},
                     "frontends.web.routes[0].http-request[0].connections", "the frontend's rules")
        (rule,) = frontend_config(**{"http-request": [{**limit, "unless-src": ["10.0.0.0/8"]}]}).http_request
        self.assertEqual(rule.connections, 5)

    def test_route_rules_and_forward_frontends(self) -> None:
        config = frontend_config(routes=[{"path-prefix": "/api", "backend": "app", "http-request": [
            {"action": "deny", "unless-src": ["10.0.0.0/8", "2001:db8::/32"]}]}])
        self.assertEqual(config.routes[0].http_request[0].unless_src, ("10.0.0.0/8", "2001:db8::/32"))
        with self.assertRaises(ConfigError) as caught:
            config_from_document({"frontends": {"out": {"mode": "forward", "listen": "tcp:3128",
                                                        "http-request": [{"action": "deny"}]}}})
        self.assertEqual(caught.exception.key, "frontends.out.http-request")

    def test_defaults(self) -> None:
        (deny, redirect, limit) = frontend_config(**{"http-request": [
            {"action": "deny"}, {"action": "redirect", "scheme": "HTTPS"}, {"action": "rate-limit", "requests": 5}]}
        ).http_request
        self.assertEqual((deny.status, redirect.code, redirect.scheme), (403, 302, "https"))
        self.assertEqual((limit.key, limit.period, limit.table_size, limit.ipv6_mask), ("src", 1.0, 100_000, 64))


class LimiterTableTests(SynchronousTestCase):
    """The sliding window, Retry-After, and the table's bounds."""

    def test_a_sliding_window(self) -> None:
        clock = Clock()
        clock.advance(100.0)  # the start of a period
        table = LimiterTable(clock, 10.0, 10)
        admitted = []
        for _ in range(6):
            entry, into = table.entry("a")
            admitted.append(table.request_wait(entry, into, 5))
        self.assertEqual(admitted[:5], [0.0] * 5)
        self.assertAlmostEqual(admitted[5], 10.0 + 10.0 * (1 - 4 / 5))  # this period, then a fifth of the next
        clock.advance(12.0)  # 2 s into the next period: 5 * 0.8 = 4 still counted
        entry, into = table.entry("a")
        self.assertEqual(table.request_wait(entry, into, 5), 0.0)  # 4 + 1 fit
        self.assertGreater(table.request_wait(entry, into, 5), 0.0)  # 4 + 1 + 1 does not
        clock.advance(20.0)
        entry, into = table.entry("a")
        self.assertEqual((entry.requests, entry.requests_before), (0, 0))  # two periods later: nothing counted

    def test_what_is_refused_is_not_counted(self) -> None:
        clock = Clock()
        table = LimiterTable(clock, 1.0, 10)
        entry, into = table.entry("a")
        table.request_wait(entry, into, 1)
        for _ in range(100):
            table.request_wait(entry, into, 1)
        self.assertEqual(entry.requests, 1)

    def test_the_table_stays_bounded_by_least_recent_use(self) -> None:
        clock = Clock()
        table = LimiterTable(clock, 1.0, 100)
        hot, _ = table.entry("hot")
        for index in range(10_000):  # a client rotating its key
            table.entry(f"k{index}")
            if index % 50 == 0:
                self.assertIs(table.entry("hot")[0], hot)  # seen recently: kept
        self.assertEqual(len(table), 100)
        self.assertEqual(table.evicted, 10_000 + 1 - 100)

    def test_idle_keys_expire(self) -> None:
        clock = Clock()
        table = LimiterTable(clock, 1.0, 100)
        for index in range(50):
            table.entry(f"k{index}")
        busy, _ = table.entry("busy")
        busy.active = 1  # a request in flight: kept while it lasts
        table._entries.move_to_end("busy", last=False)  # noqa: SLF001 - the oldest, yet in flight
        clock.advance(2.5)
        table.entry("new")
        self.assertEqual(len(table), 2)  # two periods idle: forgotten
        self.assertIs(table.entry("busy")[0], busy)
        self.assertEqual(table.expired, 50)

    def test_retry_after(self) -> None:
        self.assertEqual([retry_after(s) for s in (0.001, 1.0, 1.2, 59.9)], [1, 1, 2, 60])


class CompiledRulesTests(SynchronousTestCase):
    """What a frontend's rules compile to, and what a reload keeps."""

    def test_no_rules_cost_nothing(self) -> None:
        self.assertIsNone(FrontendRules.of(frontend_config(), Clock()))
        self.assertIsNotNone(FrontendRules.of(frontend_config(**{"unique-id-header": "X-ID"}), Clock()))

    def test_a_reload_keeps_the_tables_of_unchanged_rules(self) -> None:
        clock = Clock()
        limit = {"action": "rate-limit", "requests": 1}
        first = FrontendRules.of(frontend_config(**{"http-request": [limit]}), clock)
        assert first is not None
        first.rate_limits[0][2].table.limited = 7
        second = FrontendRules.of(frontend_config(**{"http-request": [limit]}), clock, first)
        assert second is not None
        self.assertIs(second.rate_limits[0][2].table, first.rate_limits[0][2].table)
        self.assertEqual(second.limits()[0]["limited"], 7)
        moved = FrontendRules.of(frontend_config(**{"http-request": [{"action": "allow", "src": "10.0.0.1"}, limit]}),
                                 clock, second)
        assert moved is not None
        self.assertIsNot(moved.rate_limits[0][2].table, first.rate_limits[0][2].table)


class AddressTests(SynchronousTestCase):
    """Source networks, IPv6 and IPv4-mapped addresses."""

    def test_networks(self) -> None:
        office = networks(["10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112"])
        self.assertTrue(in_networks(client_ip("10.1.2.3"), office))
        self.assertTrue(in_networks(client_ip("::ffff:10.1.2.3"), office))  # a dual-stack listener's IPv4 client
        self.assertTrue(in_networks(client_ip("192.168.7.7"), office))
        self.assertTrue(in_networks(client_ip("2001:db8::1"), office))
        self.assertTrue(in_networks(client_ip("fe80::1%eth0"), networks(["fe80::/10"])))
        self.assertFalse(in_networks(client_ip("2001:db9::1"), office))
        self.assertFalse(in_networks(client_ip("11.0.0.1"), office))
        self.assertFalse(in_networks(client_ip("unix-socket"), office))

    def test_ipv6_sources_count_by_network(self) -> None:
        one = masked(client_ip("2001:db8:1:2:aaaa::1"), "", 64)
        self.assertEqual(one, masked(client_ip("2001:db8:1:2:bbbb::2"), "", 64))
        self.assertNotEqual(one, masked(client_ip("2001:db8:1:3::1"), "", 64))
        self.assertEqual(masked(client_ip("2001:db8::1"), "", 128), "2001:db8::1")
        self.assertEqual(masked(client_ip("10.0.0.1"), "", 64), "10.0.0.1")
        self.assertIsInstance(client_ip("::1"), ipaddress.IPv6Address)


class RedirectTests(SynchronousTestCase):
    """Where a redirect points: what the rule says, nothing a request can stretch."""

    target = Target(b"www.example.com:80", b"/a/b", b"?x=1", False)

    def test_haproxy_semantics(self) -> None:
        self.assertEqual(RedirectTarget(b"/x", None, None).to(self.target, False), b"/x")
        self.assertEqual(RedirectTarget(None, b"https://new.example.com/", None).to(self.target, False),
                         b"https://new.example.com/a/b?x=1")
        self.assertEqual(RedirectTarget(None, b"/v2", None, drop_query=True).to(self.target, False), b"/v2/a/b")
        self.assertEqual(RedirectTarget(None, None, b"https").to(self.target, False), b"https://www.example.com/a/b?x=1")
        self.assertEqual(RedirectTarget(None, None, b"http").to(Target(b"h:443", b"/", b"", False), True), b"http://h/")
        self.assertEqual(RedirectTarget(None, None, b"https").to(Target(b"h:8080", b"/", b"", False), False),
                         b"https://h:8080/")
        self.assertIsNone(RedirectTarget(None, None, b"https").to(Target(None, b"/", b"", False), False))

    def test_no_byte_can_break_the_location_line(self) -> None:
        crafted = Target(b"h", b"/a\r\nSet-Cookie:\x00\x80 x", b"?\n", False)
        for redirect in (RedirectTarget(None, b"/", None), RedirectTarget(None, None, b"https")):
            location = redirect.to(crafted, False)
            assert location is not None
            self.assertTrue(all(0x21 <= byte <= 0x7E for byte in location), location)


class RuleProxyTests(ProxyTestCase):
    """Rules applied by a running proxy, on requests from curl-like raw clients."""

    def start(self, peers: PeerSettings | None = None, **keys: Any) -> Any:
        frontend = self.start_proxy(self.start_web_origin(), peers=peers)
        config = frontend_config(**keys)
        frontend.router = Router(config.routes, {"app": frontend.backend}, frontend.backend)
        frontend.rules = FrontendRules.of(config, reactor)
        return frontend

    def body_headers(self, response: Any) -> dict[bytes, list[bytes]]:
        found: dict[bytes, list[bytes]] = {}
        for line in response.body.split(b"\n"):
            name, _, value = line.partition(b": ")
            found.setdefault(name.lower(), []).append(value)
        return found

    @defer.inlineCallbacks
    def test_header_rules_on_requests_and_responses(self):  # type: ignore[no-untyped-def]
        self.start(**{
            "unique-id-header": "X-Request-ID",
            "http-request": [
                {"action": "set-header", "name": "X-Client", "value": "%[src]/%[unique-id]/%[fe_name]"},
                {"action": "add-header", "name": "X-Tag", "value": "two"},
                {"action": "del-header", "name": "X-Secret"},
                {"action": "set-header", "name": "X-Only-TLS", "value": "1", "ssl": True},
            ],
            "http-response": [
                {"action": "set-header", "name": "X-Request-ID", "value": "%[unique-id]"},
                {"action": "add-header", "name": "X-Served", "value": "%[be_name]/%[srv_name]"},
            ],
            "routes": [{"path-prefix": "/headers", "backend": "app",
                        "http-request": [{"action": "set-header", "name": "X-Route", "value": "yes"}],
                        "http-response": [{"action": "set-header", "name": "X-Served", "value": "route"}]}],
        })
        (response,) = yield self.request(get(b"/headers", b"X-Tag: one\r\nX-Secret: s\r\nX-Client: forged\r\n"
                                                          b"X-Request-ID: forged\r\n"))
        sent = self.body_headers(response)
        request_id = response.header(b"X-Request-ID")
        self.assertEqual(sent[b"x-request-id"], [request_id])  # the client's is replaced
        self.assertRegex(request_id.decode(), r"^[0-9a-f]{16}-[0-9a-f]+$")
        self.assertEqual(sent[b"x-client"], [b"127.0.0.1/%s/web" % request_id])
        self.assertEqual(sent[b"x-tag"], [b"one", b"two"])
        self.assertNotIn(b"x-secret", sent)
        self.assertNotIn(b"x-only-tls", sent)
        self.assertEqual(sent[b"x-route"], [b"yes"])  # after the frontend's
        # Responses: the route's rules first, then the frontend's (HAProxy's backend, then frontend).
        self.assertEqual([v for n, v in response.headers if n.lower() == b"x-served"], [b"route", b"app/s1"])
        (record,) = self.access_log.entries
        self.assertEqual(record.request_id, request_id.decode())

    @defer.inlineCallbacks
    def test_a_trusted_proxys_request_id_is_kept(self):  # type: ignore[no-untyped-def]
        self.start(PeerSettings.build("proxied", ("127.0.0.1/32",), "off", "x-forwarded-for"),
                   **{"unique-id-header": "X-Request-ID"})
        (response,) = yield self.request(get(b"/headers", b"X-Request-ID: lb-1234\r\n"))
        self.assertEqual(self.body_headers(response)[b"x-request-id"], [b"lb-1234"])
        (response,) = yield self.request(get(b"/headers", b"X-Request-ID: has space\r\n"))  # unusable: replaced
        self.assertNotEqual(self.body_headers(response)[b"x-request-id"], [b"has space"])

    @defer.inlineCallbacks
    def test_an_untrusted_proxys_request_id_is_replaced(self):  # type: ignore[no-untyped-def]
        self.start(PeerSettings.build("proxied", ("10.0.0.0/8",), "off", "x-forwarded-for"),
                   **{"unique-id-header": "X-Request-ID"})
        (response,) = yield self.request(get(b"/headers", b"X-Request-ID: lb-1234\r\nx-request-id: again\r\n"))
        (sent,) = self.body_headers(response)[b"x-request-id"]
        self.assertNotIn(sent, (b"lb-1234", b"again"))

    @defer.inlineCallbacks
    def test_deny_unless_from_the_office_uses_the_real_address(self):  # type: ignore[no-untyped-def]
        rules = {"http-request": [{"action": "deny", "unless-src": ["10.0.0.0/8"], "status": 404}]}
        self.start(**rules)
        # A local client's forwarded-for is its own claim: ignored.
        (response,) = yield self.request(get(b"/", b"X-Forwarded-For: 10.1.1.1\r\nX-Real-IP: 10.1.1.1\r\n"))
        self.assertEqual(response.status, 404)
        self.assertEqual(self.access_log.entries[-1].termination, "denied")

    @defer.inlineCallbacks
    def test_an_untrusted_peers_forwarded_for_does_not_pass(self):  # type: ignore[no-untyped-def]
        self.start(PeerSettings.build("proxied", ("10.0.0.0/8",), "off", "x-forwarded-for"),
                   **{"http-request": [{"action": "deny", "unless-src": ["10.0.0.0/8"]}]})
        (response,) = yield self.request(get(b"/", b"X-Forwarded-For: 10.1.1.1\r\n"))
        self.assertEqual(response.status, 403)

    @defer.inlineCallbacks
    def test_a_trusted_proxys_client_is_the_source(self):  # type: ignore[no-untyped-def]
        self.start(PeerSettings.build("proxied", ("127.0.0.1/32",), "off", "x-forwarded-for"),
                   **{"http-request": [{"action": "deny", "unless-src": ["10.0.0.0/8"]}]})
        (allowed,) = yield self.request(get(b"/", b"X-Forwarded-For: 10.1.1.1\r\n"))
        (refused,) = yield self.request(get(b"/", b"X-Forwarded-For: 10.1.1.1, 192.0.2.7\r\n"))  # the rightmost hop
        self.assertEqual((allowed.status, refused.status), (200, 403))

    @defer.inlineCallbacks
    def test_allow_stops_the_rules(self):  # type: ignore[no-untyped-def]
        self.start(**{"http-request": [{"action": "allow", "src": ["127.0.0.1"]}, {"action": "deny"}]})
        (response,) = yield self.request(get(b"/"))
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_redirects(self):  # type: ignore[no-untyped-def]
        self.start(**{"http-request": [
            {"action": "redirect", "scheme": "https", "path-prefix": "/s", "code": 308},
            {"action": "redirect", "prefix": "/", "path-prefix": "/p"},
            {"action": "redirect", "prefix": "https://new.example.com", "drop-query": True, "path-prefix": "/q"},
        ]})
        (response,) = yield self.request(b"GET /s/x?y=1 HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")
        # The host is the one the client asked for: it is sent back to itself, nowhere else.
        self.assertEqual((response.status, response.header(b"Location")), (308, b"https://evil.example/s/x?y=1"))
        # A path that starts like a host is normalised: the relative Location stays on this site.
        (response,) = yield self.request(b"GET //evil.example/../p/x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(response.header(b"Location"), b"/p/x")
        (response,) = yield self.request(b"GET /p//evil.example HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(response.header(b"Location"), b"/p/evil.example")
        (response,) = yield self.request(b"GET http://other.example/q/z?a=b HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(response.header(b"Location"), b"https://new.example.com/q/z")
        self.assertEqual(self.access_log.entries[-1].termination, "redirect")
        self.assertEqual(self.raw_requests_to_origin(), 0)

    def raw_requests_to_origin(self) -> int:
        return sum(record.server != "-" for record in self.access_log.entries)

    @defer.inlineCallbacks
    def test_a_redirect_keeps_the_connection_and_a_head_gets_no_body(self):  # type: ignore[no-untyped-def]
        self.start(**{"http-request": [{"action": "redirect", "location": "/there", "path-prefix": "/here"}]})
        client = yield self.connect()
        client.send(b"HEAD /here HTTP/1.1\r\nHost: h\r\n\r\n" + get(b"/here") + get(b"/other"))
        yield client.until(lambda data: data.count(b"HTTP/1.1 ") == 3 and data.endswith(b"path=/other"))
        first, second, _ = client.received.split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.endswith(b"\r\n\r\n"), first)  # no body after the HEAD's head
        self.assertTrue(second.startswith(b"302 Found"))
        self.assertNotIn(b"Connection: close", client.received)

    @defer.inlineCallbacks
    def test_a_rate_limit_answers_429_with_retry_after(self):  # type: ignore[no-untyped-def]
        frontend = self.start(**{"http-request": [{"action": "rate-limit", "requests": 3, "period": "1h"}]})
        statuses = []
        for _ in range(5):
            (response,) = yield self.request(get(b"/"))
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 200, 200, 429, 429])
        self.assertGreaterEqual(int(response.header(b"Retry-After")), 1)
        self.assertEqual(frontend.terminations["rate-limited"], 2)
        self.assertEqual(frontend.rules.limits()[0]["limited"], 2)
        self.assertEqual(self.access_log.entries[-1].termination, "rate-limited")

    @defer.inlineCallbacks
    def test_a_client_rotating_its_header_keeps_the_table_bounded(self):  # type: ignore[no-untyped-def]
        frontend = self.start(**{"http-request": [
            {"action": "rate-limit", "key": "hdr(X-Key)", "requests": 1, "period": "1h", "table-size": 10}]})
        client = yield self.connect()
        client.send(b"".join(get(b"/", b"X-Key: k%d\r\n" % index) for index in range(40)))
        yield client.until(lambda data: data.count(b"HTTP/1.1 200") == 40)
        (limit,) = frontend.rules.limits()
        self.assertEqual((limit["keys"], limit["evicted"], limit["limited"]), (10, 30, 0))
        (response,) = yield self.request(get(b"/"))  # no key: not limited
        self.assertEqual(response.status, 200)

    @defer.inlineCallbacks
    def test_the_concurrent_limit_counts_requests_in_flight(self):  # type: ignore[no-untyped-def]
        frontend = self.start(**{"http-request": [{"action": "rate-limit", "concurrent": 1}]})
        table = frontend.rules.rate_limits[0][2].table
        (response,) = yield self.request(get(b"/"))
        self.assertEqual(response.status, 200)
        entry, _ = table.entry("127.0.0.1")
        self.assertEqual(entry.active, 0)  # released when it ended
        entry.active = 1  # another request in flight
        (response,) = yield self.request(get(b"/"))
        self.assertEqual((response.status, response.header(b"Retry-After")), (429, b"1"))
        yield run_reactor_for(1)

    @defer.inlineCallbacks
    def test_connections_over_the_limit_are_closed_as_they_open(self):  # type: ignore[no-untyped-def]
        frontend = self.start(**{"http-request": [{"action": "rate-limit", "connections": 2}]})
        first = yield self.connect()
        second = yield self.connect()
        third = yield self.connect()
        yield self.poll(lambda: not third.transport.connected, "the third connection closed")
        self.assertEqual(frontend.connection_ends.get("rate-limited"), 1)
        (response,) = yield self.request_on(second, get(b"/"))
        self.assertEqual(response.status, 200)
        first.transport.loseConnection()
        yield self.poll(lambda: len(frontend.connections) == 1, "the first connection gone")
        fourth = yield self.connect()
        (response,) = yield self.request_on(fourth, get(b"/"))
        self.assertEqual(response.status, 200)
        self.assertEqual(frontend.rules.limits()[0]["limited"], 1)
        entry, _ = frontend.rules.rate_limits[0][2].table.entry("127.0.0.1")
        self.assertEqual(entry.connections, 2)

    @defer.inlineCallbacks
    def test_a_proxys_connections_are_not_counted_as_a_clients(self):  # type: ignore[no-untyped-def]
        frontend = self.start(PeerSettings.build("proxied", ("127.0.0.1/32",), "off", "x-forwarded-for"),
                              **{"http-request": [{"action": "rate-limit", "connections": 1}]})
        clients = []
        for _ in range(3):
            clients.append((yield self.connect()))
        for client in clients:
            (response,) = yield self.request_on(client, get(b"/"))
            self.assertEqual(response.status, 200)
        self.assertNotIn("rate-limited", frontend.connection_ends)

    @defer.inlineCallbacks
    def request_on(self, client, data: bytes):  # type: ignore[no-untyped-def]
        client.send(data)
        responses = yield client.responses(1)
        return responses

    @defer.inlineCallbacks
    def test_new_websockets_per_period(self):  # type: ignore[no-untyped-def]
        frontend = self.start(**{"http-request": [{"action": "rate-limit", "websockets": 1, "requests": 10,
                                                   "period": "1h"}]})
        upgrade = (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        (first,) = yield self.request(upgrade)  # the origin refuses it, but it was a new WebSocket
        (second,) = yield self.request(upgrade)
        (plain,) = yield self.request(get(b"/"))
        self.assertNotEqual(first.status, 429)
        self.assertEqual((second.status, plain.status), (429, 200))
        entry, _ = frontend.rules.rate_limits[0][2].table.entry("127.0.0.1")
        self.assertEqual((entry.requests, entry.websockets), (2, 1))  # the refused upgrade is not counted

    @defer.inlineCallbacks
    def test_engineio_sid_as_the_key(self):  # type: ignore[no-untyped-def]
        self.start(**{"http-request": [{"action": "rate-limit", "key": "sid", "requests": 1, "period": "1h"}]})
        poll = b"/socket.io/?EIO=4&transport=polling&sid=%s"
        statuses = []
        for target in (poll % b"a", poll % b"a", poll % b"b", b"/socket.io/?EIO=4&transport=polling"):
            (response,) = yield self.request(get(target))
            statuses.append(response.status)
        self.assertEqual(statuses[1], 429)
        self.assertNotIn(429, statuses[2:])
