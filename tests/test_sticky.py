"""Stickiness: insert and prefix cookies, stick tables (request keys and learned ones), the store's bounds."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web import resource

from rubrisproxy.backend import Backend
from rubrisproxy.backend._sticky import MemoryStickStore
from rubrisproxy.config import BackendConfig, CookieConfig, StickConfig, config_from_document

from .helpers import ProxyTestCase, get


class Named(resource.Resource):
    """Answers with its name; sets the application's session cookie when asked."""

    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name
        self.cookies_seen: list[bytes | None] = []

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        self.cookies_seen.append(request.getHeader(b"cookie"))
        if request.path == b"/login":
            request.setHeader(b"set-cookie", b"JSESSIONID=abc123; Path=/")
        return self.name


class StickyProxyTests(ProxyTestCase):
    def start(self, **backend_options):  # type: ignore[no-untyped-def]
        self.origins = [Named(b"s1"), Named(b"s2")]
        frontend = self.start_proxy(*[self.start_web_origin(origin) for origin in self.origins])
        config = BackendConfig("app", tuple(s.config for s in frontend.backend.servers), **backend_options)
        frontend.backend = Backend(config, frontend.clock)
        frontend.router = None
        frontend.__post_init__()
        return frontend

    @defer.inlineCallbacks
    def test_insert_cookie_pins_the_client_and_falls_back_when_down(self):
        frontend = self.start(cookie=CookieConfig("SERVERID"))
        (first,) = yield self.request(get(b"/"))
        cookie = first.header(b"Set-Cookie")
        self.assertIsNotNone(cookie)
        self.assertTrue(cookie.startswith(b"SERVERID=" + first.body + b";"))
        responses = yield self.request(b"".join(get(b"/", b"Cookie: SERVERID=" + first.body + b"\r\n") for _ in range(6)), 6)
        self.assertEqual({r.body for r in responses}, {first.body})
        self.assertTrue(all(r.header(b"Set-Cookie") is None for r in responses))  # already named: no new cookie
        frontend.backend.server_named(first.body.decode()).set_up(False)
        (moved,) = yield self.request(get(b"/", b"Cookie: SERVERID=" + first.body + b"\r\n"))
        self.assertNotEqual(moved.body, first.body)
        self.assertTrue(moved.header(b"Set-Cookie").startswith(b"SERVERID=" + moved.body))

    @defer.inlineCallbacks
    def test_prefix_cookie_rewrites_both_ways(self):
        self.start(cookie=CookieConfig("JSESSIONID", mode="prefix"))
        (login,) = yield self.request(get(b"/login"))
        server = login.body
        self.assertEqual(login.header(b"Set-Cookie"), b"JSESSIONID=" + server + b"~abc123; Path=/")
        responses = yield self.request(
            b"".join(get(b"/", b"Cookie: theme=dark; JSESSIONID=" + server + b"~abc123\r\n") for _ in range(4)), 4
        )
        self.assertEqual({r.body for r in responses}, {server})
        origin = self.origins[int(server[1:]) - 1]
        self.assertEqual(origin.cookies_seen[-1], b"theme=dark; JSESSIONID=abc123")  # the origin sees its own value

    @defer.inlineCallbacks
    def test_stick_table_on_a_header(self):
        self.start(stick=StickConfig(on="header(X-User)"))
        alice = yield self.request(b"".join(get(b"/", b"X-User: alice\r\n") for _ in range(5)), 5)
        bob = yield self.request(b"".join(get(b"/", b"X-User: bob\r\n") for _ in range(5)), 5)
        self.assertEqual(len({r.body for r in alice}), 1)
        self.assertEqual(len({r.body for r in bob}), 1)

    @defer.inlineCallbacks
    def test_stick_table_learns_from_set_cookie(self):
        self.start(stick=StickConfig(on="cookie(JSESSIONID)", learn="set-cookie(JSESSIONID)"))
        (login,) = yield self.request(get(b"/login"))
        responses = yield self.request(b"".join(get(b"/", b"Cookie: JSESSIONID=abc123\r\n") for _ in range(5)), 5)
        self.assertEqual({r.body for r in responses}, {login.body})


class StoreTests(unittest.TestCase):
    def test_expiry_refresh_and_size(self):
        clock = Clock()
        store = MemoryStickStore(clock, expire=60, size=2)
        store.put(b"a", "s1")
        clock.advance(50)
        self.assertEqual(store.get(b"a"), "s1")  # reading refreshes it
        clock.advance(50)
        self.assertEqual(store.get(b"a"), "s1")
        clock.advance(61)
        self.assertIsNone(store.get(b"a"))
        for key in (b"x", b"y", b"z"):
            store.put(key, "s2")
        self.assertEqual((len(store), store.get(b"x"), store.get(b"z")), (2, None, "s2"))

    def test_config(self):
        config = config_from_document({"backends": {"app": {
            "cookie": {"name": "SRV", "mode": "prefix"},
            "stick": {"on": "url_param(sid)", "expire": "10m", "learn": "header(X-Sid)"},
            "servers": [{"address": "example.com:443", "tls": True}],
        }}})
        backend = config.backends["app"]
        self.assertEqual((backend.cookie.mode, backend.stick.expire, backend.servers[0].tls), ("prefix", 600, True))
