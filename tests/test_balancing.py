"""Balancing algorithms, backup servers, maxconn with the backend queue, slow start."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource, server

from rubrisproxy.backend import (
    QUEUED,
    Backend,
    ConsistentHash,
    LeastConnections,
    PowerOfTwoChoices,
    RoundRobin,
    _balance,
    balancer_for,
    header_key,
    source_key,
    url_param_key,
)
from rubrisproxy.config import BackendConfig, CookieConfig, ServerConfig, Timeouts
from rubrisproxy.http import RequestHead
from rubrisproxy.settings import LiveSettings

from .helpers import ProxyTestCase, get

QUEUE_5 = LiveSettings.of(Timeouts(queue=5))  # timeout queue 5s


def servers(*weights: int, **options: object) -> list[ServerConfig]:
    return [ServerConfig(f"s{i + 1}", "127.0.0.1", 9000 + i, weight=w, **options) for i, w in enumerate(weights)]  # type: ignore[arg-type]


def request(target: bytes = b"/", headers: list[tuple[bytes, bytes]] | None = None) -> RequestHead:
    return RequestHead(b"GET", target, b"1.1", headers or [(b"Host", b"example.com")])


class Waiting:
    """A stand-in for an exchange waiting in a backend's queue."""

    def __init__(self, target: bytes = b"/") -> None:
        self.head = request(target)
        self.finished = False
        self.server = None
        self.timed_out = False

    def client_address_for_balancing(self) -> str:
        return "127.0.0.1"

    def dequeued(self, server):  # type: ignore[no-untyped-def]
        self.server = server

    def queue_timed_out(self) -> None:
        self.timed_out = True
        self.finished = True


class AlgorithmTests(unittest.TestCase):
    def pick(self, backend: Backend, count: int, target: bytes = b"/") -> Counter[str]:
        chosen: Counter[str] = Counter()
        for _ in range(count):
            server = backend.assign(Waiting(target))
            chosen[server.name] += 1  # type: ignore[union-attr]
            backend.release(server)  # type: ignore[arg-type]
        return chosen

    def test_weighted_round_robin_is_exact_and_smooth(self):
        backend = Backend(BackendConfig("app", tuple(servers(5, 1, 1))))
        order = []
        for _ in range(7):
            server = backend.assign(Waiting())
            order.append(server.name)  # type: ignore[union-attr]
            backend.release(server)  # type: ignore[arg-type]
        self.assertEqual(Counter(order), {"s1": 5, "s2": 1, "s3": 1})
        self.assertNotEqual(order[:3], ["s1", "s1", "s1"])  # smooth: interleaved, not in bursts
        self.assertEqual(self.pick(backend, 7000), {"s1": 5000, "s2": 1000, "s3": 1000})

    def test_zero_weight_takes_nothing(self):
        backend = Backend(BackendConfig("app", tuple(servers(1, 0))))
        self.assertEqual(self.pick(backend, 100), {"s1": 100})

    def test_leastconn_prefers_the_least_busy(self):
        backend = Backend(BackendConfig("app", tuple(servers(1, 1, 1)), balance="leastconn"))
        held = [backend.assign(Waiting()) for _ in range(3)]
        self.assertEqual(sorted(s.name for s in held), ["s1", "s2", "s3"])  # type: ignore[union-attr]
        backend.release(held[1])  # type: ignore[arg-type]
        self.assertIs(backend.assign(Waiting()), held[1])

    def test_power_of_two_choices_spreads_by_weight(self):
        backend = Backend(BackendConfig("app", tuple(servers(3, 1)), balance="random"))
        backend.balancer = PowerOfTwoChoices(random.Random(7))
        chosen = self.pick(backend, 4000)
        # With no load, the pair's first draw wins: shares follow the weights within a few percent.
        self.assertLess(abs(chosen["s1"] / 4000 - 0.75), 0.05)

    def test_power_of_two_choices_avoids_the_busy_server(self):
        backend = Backend(BackendConfig("app", tuple(servers(1, 1)), balance="random"))
        busy = backend.servers[0]
        busy.active = 100
        chosen = self.pick(backend, 1000)
        self.assertGreater(chosen["s2"], 700)

    def test_consistent_hash_moves_only_about_one_nth(self):
        keys = [b"/item/%d" % i for i in range(4000)]
        four = Backend(BackendConfig("app", tuple(servers(1, 1, 1, 1)), balance="uri"))
        five = Backend(BackendConfig("app", tuple(servers(1, 1, 1, 1, 1)), balance="uri"))
        before = {key: four.balancer.choose(four.servers, request(key), "x").name for key in keys}
        after = {key: five.balancer.choose(five.servers, request(key), "x").name for key in keys}
        moved = sum(1 for key in keys if before[key] != after[key])
        self.assertLess(abs(moved / len(keys) - 1 / 5), 0.06)
        self.assertTrue(all(after[key] == "s5" for key in keys if before[key] != after[key]))
        shares = Counter(after.values())
        self.assertTrue(all(0.13 < share / len(keys) < 0.27 for share in shares.values()), shares)

    def test_hash_keys(self):
        self.assertEqual(source_key(request(), "10.0.0.1"), b"10.0.0.1")
        self.assertEqual(url_param_key("user")(request(b"/a?x=1&user=42"), "x"), b"42")
        self.assertIsNone(url_param_key("user")(request(b"/a?x=1"), "x"))
        self.assertEqual(header_key("X-Tenant")(request(headers=[(b"x-tenant", b"t1")]), "x"), b"t1")

    def test_same_key_same_server_and_fallback_without_key(self):
        backend = Backend(BackendConfig("app", tuple(servers(1, 1, 1)), balance="url_param(user)"))
        self.assertEqual(len(self.pick(backend, 50, b"/?user=alice")), 1)
        self.assertEqual(len(self.pick(backend, 30, b"/")), 3)  # no key: round robin

    def test_balancer_names(self):
        self.assertIsInstance(balancer_for("roundrobin"), RoundRobin)
        self.assertIsInstance(balancer_for("leastconn"), LeastConnections)
        self.assertIsInstance(balancer_for("hdr(Host)"), ConsistentHash)


class ReconfigureTests(unittest.TestCase):
    def test_a_reload_logs_each_server_removed_and_added(self):
        """Servers are matched by name: one whose address changed is removed and added again, and the log says both
        (automatic names are positional: the second address of two, left alone, becomes s1)."""
        config = BackendConfig(name="app", servers=(ServerConfig("s1", "127.0.0.1", 18001),
                                                    ServerConfig("s2", "127.0.0.1", 18002)))
        backend = Backend(config)
        lines: list[str] = []
        observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        added = backend.reconfigure(replace(config, servers=(ServerConfig("s1", "127.0.0.1", 18002),)))
        self.assertEqual([(s.name, s.config.port) for s in added], [("s1", 18002)])
        self.assertEqual([line for line in lines if " app/s" in line],
                         ["server app/s1 REMOVED", "server app/s2 REMOVED", "server app/s1 ADDED at 127.0.0.1:18002"])


class BackupTests(unittest.TestCase):
    def test_backup_only_when_no_normal_server_is_up(self):
        configs = servers(1, 1) + [ServerConfig("spare", "127.0.0.1", 9100, backup=True)]
        backend = Backend(BackendConfig("app", tuple(configs)))
        self.assertEqual({s.name for s in backend.usable()}, {"s1", "s2"})
        backend.servers[0].set_up(False)
        backend.servers[1].set_up(False)
        self.assertEqual([s.name for s in backend.usable()], ["spare"])
        backend.servers[1].set_up(True)
        self.assertEqual([s.name for s in backend.usable()], ["s2"])


class QueueTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend(BackendConfig("app", tuple(servers(1, 1, maxconn=1))), self.clock, QUEUE_5)

    def test_full_servers_queue_in_order_and_free_slots_go_to_the_oldest(self):
        first, second = self.backend.assign(Waiting()), self.backend.assign(Waiting())
        waiting = [Waiting() for _ in range(3)]
        self.assertEqual([self.backend.assign(w) for w in waiting], [QUEUED] * 3)
        self.assertEqual(self.backend.queue_length, 3)
        self.backend.release(first)  # type: ignore[arg-type]
        self.assertIs(waiting[0].server, first)
        self.assertIsNone(waiting[1].server)
        self.backend.release(second)  # type: ignore[arg-type]
        self.assertIs(waiting[1].server, second)
        self.assertEqual(self.backend.queue_length, 1)

    def test_queue_timeout(self):
        self.backend.assign(Waiting())
        self.backend.assign(Waiting())
        late = Waiting()
        self.backend.assign(late)
        self.clock.advance(4.9)
        self.assertFalse(late.timed_out)
        self.clock.advance(0.2)
        self.assertTrue(late.timed_out)
        self.assertEqual(self.backend.queue_length, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_abandoned_waiter_is_skipped(self):
        held = self.backend.assign(Waiting())
        self.backend.assign(Waiting())
        gone, next_one = Waiting(), Waiting()
        self.backend.assign(gone)
        self.backend.assign(next_one)
        gone.finished = True
        self.backend.release(held)  # type: ignore[arg-type]
        self.assertIs(next_one.server, held)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RetryQueueTests(unittest.TestCase):
    """A retry that avoids a server waits only for the others, and is not waited behind for the one it avoids."""

    def test_a_newcomer_takes_the_server_a_waiting_retry_avoids(self):
        backend = Backend(BackendConfig("app", tuple(servers(1, 1, maxconn=1))), Clock(), QUEUE_5)
        s1, s2 = backend.servers
        backend.take(s1)
        backend.take(s2)
        retry = Waiting()
        self.assertIs(backend.assign(retry, frozenset({s2})), QUEUED)
        backend.release(s2)
        self.assertIsNone(retry.server)
        self.assertIs(backend.assign(Waiting()), s2)

    def test_a_retry_takes_a_backup_its_elders_may_not(self):
        configs = (ServerConfig("s1", "127.0.0.1", 9000, maxconn=1),
                   ServerConfig("b1", "127.0.0.1", 9001, maxconn=1, backup=True))
        backend = Backend(BackendConfig("app", configs), Clock(), QUEUE_5)
        s1, b1 = backend.servers
        backend.take(s1)
        backend.take(b1)
        plain, retry = Waiting(), Waiting()
        self.assertEqual([backend.assign(plain), backend.assign(retry, frozenset({s1}))], [QUEUED, QUEUED])
        backend.release(b1)  # only a request that avoids s1 sees the backup
        self.assertIs(retry.server, b1)
        self.assertIsNone(plain.server)


class PersistedQueueTests(unittest.TestCase):
    """A request that persistence sends to a full server waits for that server, not another."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend(BackendConfig("app", tuple(servers(1, 1, maxconn=1))), self.clock, QUEUE_5)
        self.s1, self.s2 = self.backend.servers
        self.backend.engineio.remember(b"abc", "s1")  # type: ignore[union-attr]

    def poll(self) -> Waiting:
        return Waiting(b"/socket.io/?EIO=4&transport=polling&sid=abc")

    def test_waits_for_its_server_while_another_is_free(self):
        self.assertIs(self.backend.assign(self.poll()), self.s1)
        waiting = self.poll()
        self.assertIs(self.backend.assign(waiting), QUEUED)  # s2 is free, but the sid is s1's
        self.assertEqual(self.s2.active, 0)
        other = Waiting()
        self.assertIs(self.backend.assign(other), self.s2)  # an unpinned newcomer does not queue behind it
        self.backend.release(self.s2)
        self.assertIsNone(waiting.server)
        self.backend.release(self.s1)
        self.assertIs(waiting.server, self.s1)
        self.assertEqual(self.backend.queue_length, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_unpinned_request_behind_it_takes_another_server_as_it_frees(self):
        self.backend.assign(self.poll())
        self.backend.assign(Waiting())  # both full now
        pinned, unpinned = self.poll(), Waiting()
        self.assertEqual([self.backend.assign(pinned), self.backend.assign(unpinned)], [QUEUED, QUEUED])
        self.backend.release(self.s2)
        self.assertIsNone(pinned.server)
        self.assertIs(unpinned.server, self.s2)

    def test_balanced_once_its_server_is_down(self):
        self.backend.assign(self.poll())
        self.backend.assign(Waiting())
        waiting = self.poll()
        self.assertIs(self.backend.assign(waiting), QUEUED)
        self.s1.set_up(False)
        self.backend.release(self.s2)
        self.assertIs(waiting.server, self.s2)

    def test_gets_its_freed_server_though_an_older_retry_cannot(self):
        self.backend.assign(self.poll())
        self.backend.assign(Waiting())
        retry, pinned = Waiting(), self.poll()
        self.assertIs(self.backend.assign(retry, frozenset({self.s1})), QUEUED)  # it failed on s1 already
        self.assertIs(self.backend.assign(pinned), QUEUED)
        self.backend.release(self.s1)
        self.assertIs(pinned.server, self.s1)
        self.assertIsNone(retry.server)

    def test_balanced_at_once_when_its_server_goes_down(self):
        self.backend.assign(self.poll())  # s1 is held by a long request; s2 is idle
        waiting = self.poll()
        self.assertIs(self.backend.assign(waiting), QUEUED)
        self.s1.set_up(False)  # no slot frees, but s2 has had one all along
        self.assertIs(waiting.server, self.s2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_long_line_for_one_server_costs_the_others_nothing(self):
        self.backend.assign(self.poll())
        lines = [self.poll() for _ in range(2000)]
        for waiting in lines:
            self.backend.assign(waiting)
        for _ in range(2000):  # each would scan the whole line if the lines were one
            self.backend.release(self.backend.assign(Waiting()))  # type: ignore[arg-type]
        self.assertEqual(self.backend.queue_length, 2000)
        for _ in range(2000):
            self.backend.release(self.s1)
        self.assertTrue(all(waiting.server is self.s1 for waiting in lines))
        self.assertEqual(self.backend.queue_length, 0)

    def test_a_stickiness_cookie_pins_too(self):
        config = BackendConfig("app", tuple(servers(1, 1, maxconn=1)), cookie=CookieConfig("SRV"))
        backend = Backend(config, self.clock, QUEUE_5)
        first, pinned = Waiting(), Waiting()
        first.head = pinned.head = request(headers=[(b"Host", b"example.com"), (b"Cookie", b"SRV=s1")])
        self.assertIs(backend.assign(first), backend.servers[0])
        self.assertIs(backend.assign(pinned), QUEUED)
        self.clock.advance(5.1)
        self.assertTrue(pinned.timed_out)  # nothing freed s1 in time: a 503 rather than a foreign server


class SlowStartTests(unittest.TestCase):
    def test_weight_ramps_after_coming_up(self):
        clock = Clock()
        backend = Backend(BackendConfig("app", tuple(servers(10, 10)), slow_start=100), clock)
        fresh = backend.servers[1]
        fresh.set_up(False)
        clock.advance(1000)
        fresh.set_up(True)
        self.assertAlmostEqual(fresh.effective_weight, 0.5)  # the 5% floor
        clock.advance(50)
        self.assertAlmostEqual(fresh.effective_weight, 5.0)
        clock.advance(60)
        self.assertEqual(fresh.effective_weight, 10.0)
        self.assertEqual(backend.servers[0].effective_weight, 10.0)  # up from the start: no ramp


class ExchangeQueueTests(unittest.TestCase):
    """maxconn and timeout queue as clients see them (in-memory transports, a Clock)."""

    def setUp(self) -> None:
        from .test_framing import connect, make_frontend

        self.clock = Clock()
        self.frontend, self.connector = make_frontend(self.clock)
        config = BackendConfig("app", (ServerConfig("s1", "127.0.0.1", 1, maxconn=1),))
        self.frontend.backend = Backend(config, self.clock, QUEUE_5)
        self.frontend.router = None
        self.frontend.__post_init__()
        self.clients = [connect(self.frontend) for _ in range(3)]

    def send(self, index: int, path: bytes = b"/") -> None:
        self.clients[index][0].dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_waits_for_a_slot_then_times_out_with_503(self):
        from .helpers import parse_responses

        self.send(0)
        self.send(1)
        self.assertEqual(len(self.connector.connections), 1)  # the second waits: maxconn 1
        self.clock.advance(5.1)
        (response,) = parse_responses(self.clients[1][1].value())
        self.assertEqual(response.status, 503)
        self.assertEqual(self.frontend.access_log.entries[-1].termination, "queue-timeout")

    def test_the_freed_slot_goes_to_the_waiting_request(self):
        from .helpers import parse_responses

        self.send(0, b"/first")
        self.send(1, b"/second")
        self.clock.advance(2)
        origin = self.connector.connections[0]
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        self.assertIn(b"GET /second", origin.transport.value())  # reused for the waiting request
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        self.assertEqual(parse_responses(self.clients[1][1].value())[0].body, b"2")
        record = self.frontend.access_log.entries[-1]
        self.assertEqual((record.target, record.queue_ms), ("/second", 2000.0))
        self.assertEqual(self.frontend.backend.servers[0].active, 0)


class Named(resource.Resource):
    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        return self.name


class RealOriginTests(ProxyTestCase):
    """Each algorithm over three real origins on loopback, through the proxy."""

    @defer.inlineCallbacks
    def served(self, balance: str, requests: list[bytes], weights=(1, 1, 1)):  # type: ignore[no-untyped-def]
        ports = [self.start_web_origin(Named(b"s%d" % (i + 1))) for i in range(3)]
        frontend = self.start_proxy(*ports)
        configs = tuple(replace(s.config, weight=w) for s, w in zip(frontend.backend.servers, weights, strict=True))
        frontend.backend = Backend(BackendConfig("app", configs, balance=balance), frontend.clock)
        frontend.router = None
        frontend.__post_init__()
        responses = yield self.request(b"".join(requests), len(requests))
        return [r.body.decode() for r in responses]

    @defer.inlineCallbacks
    def test_roundrobin_weights(self):
        served = yield self.served("roundrobin", [get(b"/")] * 60, weights=(3, 2, 1))
        self.assertEqual(Counter(served), {"s1": 30, "s2": 20, "s3": 10})

    @defer.inlineCallbacks
    def test_leastconn_and_random_spread(self):
        # The random balancer's draws are seeded: the spread asserted is that of one fixed sequence, not chance.
        self.patch(_balance, "random", SimpleNamespace(Random=lambda: random.Random(20261206)))
        for balance in ("leastconn", "random"):
            served = yield self.served(balance, [get(b"/")] * 90)
            counts = Counter(served)
            self.assertEqual(set(counts), {"s1", "s2", "s3"}, balance)
            self.assertTrue(all(15 <= n <= 45 for n in counts.values()), (balance, counts))

    @defer.inlineCallbacks
    def test_hashing_keeps_a_key_on_one_server(self):
        spellings = [b"/b", b"//b", b"/./b", b"/x/../b", b"/%62"]  # one path, as the origin receives it
        by_uri = yield self.served("uri", [get(b"/a?x=%d" % i) for i in range(10)] + [get(p) for p in spellings] * 3)
        self.assertEqual(len(set(by_uri[:10])), 1)  # the query is not part of the uri key
        self.assertEqual(len(set(by_uri[10:])), 1)
        by_param = yield self.served("url_param(user)", [get(b"/?user=%d" % (i % 3)) for i in range(30)])
        self.assertEqual(len({(i % 3, s) for i, s in enumerate(by_param)}), 3)
        by_header = yield self.served("hdr(X-Tenant)", [get(b"/", b"X-Tenant: t%d\r\n" % (i % 2)) for i in range(20)])
        self.assertEqual(len({(i % 2, s) for i, s in enumerate(by_header)}), 2)
        by_source = yield self.served("source", [get(b"/")] * 10)
        self.assertEqual(len(set(by_source)), 1)


class HeldOrigin(resource.Resource):
    """Answers with its name; a request whose target holds ``hold`` is kept open until the test answers it."""

    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name
        self.held: list = []  # type: ignore[type-arg]

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        if b"hold" in request.uri:
            self.held.append(request)
            return server.NOT_DONE_YET
        return self.name


class PersistedQueueOverSocketsTests(ProxyTestCase):
    """A learned sid whose server is at its maxconn waits for it, while other requests use the free server."""

    @defer.inlineCallbacks
    def test_a_sid_waits_for_its_full_server(self):  # type: ignore[no-untyped-def]
        s1, s2 = HeldOrigin(b"s1"), HeldOrigin(b"s2")
        frontend = self.start_proxy(self.start_web_origin(s1), self.start_web_origin(s2), maxconn=1)
        frontend.backend.engineio.remember(b"abc", "s1")  # type: ignore[union-attr]
        long_poll = yield self.connect()
        long_poll.send(get(b"/socket.io/?EIO=4&transport=polling&sid=abc&hold=1"))
        yield self.poll(lambda: s1.held, "s1 holds the long poll")
        send = yield self.connect()
        send.send(get(b"/socket.io/?EIO=4&transport=polling&sid=abc"))
        yield self.poll(lambda: frontend.backend.queue_length == 1, "the sid's next request waits for s1")
        (other,) = yield self.request(get(b"/plain"))  # not pinned: it takes s2 meanwhile
        self.assertEqual(other.body, b"s2")
        s1.held[0].write(b"s1")
        s1.held[0].finish()
        (answer,) = yield send.responses(1)
        self.assertEqual(answer.body, b"s1")
        self.assertEqual(frontend.backend.queue_length, 0)
