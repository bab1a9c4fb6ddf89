"""Several nodes sharing Redis: a real redis-server on loopback, two proxies built from configuration files in this
process, real origins. Stick entries and drains made through one node apply on the other; Redis killed and
restarted under traffic costs no request, logs once, and the nodes converge."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
from dataclasses import replace
from io import BytesIO
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols import portforward
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web import resource
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from rubrisproxy.clients import ClientRegistry, SessionSharing
from rubrisproxy.cluster import RedisTransport, decode_change, encode_change
from rubrisproxy.config import ClientsConfig, RedisAddress, config_from_document
from rubrisproxy.http import RequestHead
from rubrisproxy.lifecycle import IClientHandler, SessionEnd
from rubrisproxy.sharing import Change, Kind

from .eio.harness import run_client, spawn_node_emitter, start_server
from .helpers import GUARD, ProxyTestCase, get
from .redis_server import start_redis
from .test_balancing import Named


class Receiver:
    """A StateReceiver that keeps what it is given."""

    def __init__(self) -> None:
        self.changes: list[tuple[Change, bool]] = []
        self.admin: list[Change] = []

    def apply(self, change: Change, only_new: bool = False) -> None:
        self.changes.append((change, only_new))

    def admin_states(self) -> list[Change]:
        return self.admin

    def entry(self, kind: Kind, backend: str, key: bytes) -> Change | None:
        return None


class ClusterCase(ProxyTestCase):
    def capture_log(self) -> list[str]:
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            text = event.get("log_format") or ""
            if "cluster:" in text:
                lines.append(text.format(**{k: v for k, v in event.items() if isinstance(k, str)}))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

    @defer.inlineCallbacks
    def transports(self, redis, count=2, heartbeat=5.0):  # type: ignore[no-untyped-def]
        found = []
        for index in range(count):
            transport = RedisTransport(reactor, RedisAddress("127.0.0.1", redis.port, db=3), f"n{index}")
            transport._commands.heartbeat = transport._subscriber.heartbeat = heartbeat
            receiver = Receiver()
            transport.attach(receiver)
            transport.start()
            self.addCleanup(transport.stop)
            found.append((transport, receiver))
        yield self.poll(lambda: all(t.connected for t, _ in found), "both transports connected")
        yield defer.gatherResults([resynchronised(transport) for transport, _ in found])
        return found


def failed_attempts(transport: RedisTransport) -> int:
    """How many connection attempts in a row failed, on the connection that failed fewer (both retry apart)."""
    return min(transport._commands._failures, transport._subscriber._failures)


def resynchronised(transport: RedisTransport) -> defer.Deferred[object]:
    """Fires once ``transport``'s resynchronisation has read what it asked (connected, its SCAN may be unanswered:
    a change another node writes meanwhile would be read back by it too). A PING on the command connection comes
    back after the SCAN's reply; the Redis being new, that reply asks for nothing more."""
    answered: defer.Deferred[object] = defer.Deferred()
    connection = transport._commands.connection
    assert connection is not None
    connection.command(b"PING", callback=answered.callback)
    return answered.addTimeout(GUARD, reactor)


class TransportTests(ClusterCase):
    def test_a_change_survives_its_encoding_and_junk_is_refused(self) -> None:
        change = Change(Kind.SID, "app", b"\xffsid", "s1", expire=300.0, at=12.5)
        self.assertEqual(decode_change(encode_change("a", change)), ("a", change))
        for junk in (b"", b"[]", b"{}", b'{"n":1}', b"\xff", b"[" * 100_000,
                     encode_change("a", change).replace(b'"sid"', b'"other"'),
                     encode_change("a", Change(Kind.STICK, "app", b"k" * 5000, "s1")),
                     b'{"n":"x","k":"server","b":"app","key":"s1","v":"maint","w":1,"e":0,"t":Infinity}',
                     b'{"n":"x","k":"server","b":"app","key":"s1","v":"maint","w":1,"e":NaN,"t":1}'):
            self.assertIsNone(decode_change(junk))

    @defer.inlineCallbacks
    def test_a_change_reaches_the_other_node_and_not_its_own(self):  # type: ignore[no-untyped-def]
        redis = yield start_redis(self)
        (a, on_a), (b, on_b) = yield self.transports(redis)
        change = Change(Kind.STICK, "app", b"user-1", "s2", expire=60.0, at=1.0)
        a.publish(change)
        yield self.poll(lambda: on_b.changes, "the change received")
        self.assertEqual(on_b.changes, [(change, False)])
        self.assertEqual(on_a.changes, [])
        # where a node that connects later finds it, expiring with the entry
        self.assertIn("rubrisproxy:e:stick:app:user-1", redis.command("-n", "3", "KEYS", "*"))
        self.assertTrue(0 < int(redis.command("-n", "3", "PTTL", "rubrisproxy:e:stick:app:user-1")) <= 60_000)

    @defer.inlineCallbacks
    def test_redis_down_logs_once_queues_bounded_and_resynchronises(self):  # type: ignore[no-untyped-def]
        lines = self.capture_log()
        redis = yield start_redis(self)
        (a, on_a), (b, on_b) = yield self.transports(redis)
        on_a.admin = [Change(Kind.SERVER, "app", b"s1", "drain", 1, at=5.0)]
        redis.kill()
        yield self.poll(lambda: not a.connected and not b.connected, "both see Redis gone")
        for index in range(5):
            a.publish(Change(Kind.STICK, "app", b"k%d" % index, "s1", expire=60.0, at=2.0))
        self.assertEqual(a.describe()["queued"], 5)
        yield self.poll(lambda: failed_attempts(a) >= 3 and failed_attempts(b) >= 3, "several attempts failed")
        self.assertEqual(len([line for line in lines if "unreachable" in line]), 2)  # once per node
        yield redis.start()
        yield self.poll(lambda: a.connected and b.connected, "both reconnected", ticks=2000)
        yield self.poll(lambda: len(on_b.changes) >= 6, "what waited on a reached b")
        received = {change.key for change, _ in on_b.changes}
        self.assertEqual(received, {b"k0", b"k1", b"k2", b"k3", b"k4", b"s1"})
        # a's admin state, newer than none, is written back where a node that comes later finds it
        self.assertIn("app/s1", redis.command("-n", "3", "HKEYS", "rubrisproxy:servers"))
        self.assertEqual(len([line for line in lines if "reachable again" in line]), 2)
        self.assertEqual(len([line for line in lines if "unreachable" in line]), 2)


class _Alternate(portforward.ProxyServer):
    """A connection of :class:`Alternating`: sent on to the next node in turn; notes the sids it carries."""

    def connectionMade(self) -> None:
        factory = self.factory
        self.node = factory.turn % len(factory.ports)
        factory.turn += 1
        factory.port = factory.ports[self.node]
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        factory = self.factory
        if data.startswith(b"GET /socket.io/?") and b"sid=" not in data.partition(b"\r\n")[0]:
            factory.handshake = self.node  # a new session: its sid is learned on this node
        for sid in re.findall(rb"[?&]sid=([^&\s]+)", data.partition(b"\r\n")[0]):
            factory.seen.setdefault(sid, {factory.handshake}).add(self.node)
        super().dataReceived(data)


class Alternating(Factory):
    """A TCP balancer without stickiness (an ELB in TCP mode): each new connection to the next node in turn.
    ``seen`` maps each sid to the nodes its requests went through, its handshake's included (for clients that
    connect one after another)."""

    protocol = _Alternate
    noisy = False

    def __init__(self, ports: list[int]) -> None:
        self.host = "127.0.0.1"
        self.ports = ports
        self.port = ports[0]
        self.turn = 0
        self.handshake = -1
        self.seen: dict[bytes, set[int]] = {}


class HungRedisTests(ClusterCase):
    @defer.inlineCallbacks
    def test_a_redis_that_hangs_is_noticed_and_left_until_it_answers_again(self):  # type: ignore[no-untyped-def]
        lines = self.capture_log()
        redis = yield start_redis(self)
        (a, _), (b, on_b) = yield self.transports(redis, heartbeat=0.3)
        os.kill(redis.process.pid, signal.SIGSTOP)
        self.addCleanup(lambda: redis.process is None or os.kill(redis.process.pid, signal.SIGCONT))
        yield self.poll(lambda: not a.connected and not b.connected, "the hang noticed")
        change = Change(Kind.STICK, "app", b"while-hung", "s1", expire=60.0, at=1.0)
        a.publish(change)
        yield task.deferLater(reactor, 1.0, lambda: None)  # reconnections meanwhile: accepted, never answered
        self.assertEqual(len([line for line in lines if "no answer to PING within 0.3s" in line]), 2, lines)
        os.kill(redis.process.pid, signal.SIGCONT)
        yield self.poll(lambda: a.connected and b.connected, "both back", ticks=2000)
        # pushed, or read back by b's resynchronisation if b came back after a sent it
        yield self.poll(lambda: change in [each for each, _ in on_b.changes], "what waited on a reached b")
        self.assertEqual(len([line for line in lines if "unreachable" in line]), 2, lines)


def node_config(name: str, redis_url: str, ports: list[int], stick: bool = True, frontend: str = "") -> str:
    """A node's configuration file: ``frontend`` holds more keys of its frontend's table."""
    servers = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    text = (f'[cluster]\nredis = "{redis_url}"\nnode = "{name}"\n'
            f'[admin]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            f'[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n{frontend}'
            f'[backends.app]\nservers = [{servers}]\n')
    if stick:
        text += '[backends.app.stick]\non = "header(X-User)"\n'
    return text


class NodesCase(ClusterCase):
    """Nodes started from configuration files, asked through their frontend and admin listeners."""

    def port_of(self, node: Any) -> int:
        return node.getServiceNamed("frontend:web").ports[0].getHost().port  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def ask(self, node: Any, extra: bytes = b"") -> Any:
        self.proxy_port = self.port_of(node)
        (response,) = yield self.request(get(b"/", extra))
        return response

    @defer.inlineCallbacks
    def admin(self, node: Any, method: bytes, path: str, body: object = None) -> Any:
        port = node.getServiceNamed("admin").ports[0].getHost().port
        headers = Headers({b"content-type": [b"application/json"]} if body is not None else {})
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body is not None else None
        response = yield Agent(reactor).request(method, f"http://127.0.0.1:{port}{path}".encode(), headers, producer)
        return response.code, json.loads((yield readBody(response)))



class TwoNodesTests(NodesCase):
    @defer.inlineCallbacks
    def start_nodes(self, stick: bool = True):  # type: ignore[no-untyped-def]
        self.redis = yield start_redis(self)
        ports = [self.start_web_origin(Named(b"s1")), self.start_web_origin(Named(b"s2"))]
        self.nodes = [self.start_from_config(node_config(name, self.redis.url, ports, stick)) for name in ("a", "b")]
        yield self.poll(lambda: all(n.parts.transport.connected for n in self.nodes), "both nodes in the cluster")

    @defer.inlineCallbacks
    def test_a_stick_entry_learned_on_one_node_is_used_by_the_other(self):  # type: ignore[no-untyped-def]
        yield self.start_nodes()
        a, b = self.nodes
        learned = {}
        for user in range(6):
            response = yield self.ask(a, b"X-User: u%d\r\n" % user)
            learned[user] = response.body
        self.assertEqual(set(learned.values()), {b"s1", b"s2"})
        yield self.ask(b)  # no key: b's round robin moves on, so on its own it would pick otherwise
        table = b.parts.backends["app"].table.store
        yield self.poll(lambda: len(table) == 6, "b holds a's entries")
        for user, server in learned.items():
            response = yield self.ask(b, b"X-User: u%d\r\n" % user)
            self.assertEqual(response.body, server, f"user {user}")
        code, stick = yield self.admin(b, b"GET", "/backends/app/stick")
        self.assertEqual(code, 200)
        self.assertEqual(stick["size"], 6)

    @defer.inlineCallbacks
    def test_a_drain_through_one_nodes_api_applies_on_the_other(self):  # type: ignore[no-untyped-def]
        yield self.start_nodes(stick=False)
        a, b = self.nodes
        code, answer = yield self.admin(a, b"POST", "/backends/app/servers/s1/drain", {})
        self.assertEqual((code, answer["state"]), (200, "drain"))
        on_b = b.parts.backends["app"].server_named("s1")
        yield self.poll(lambda: on_b.state == "drain", "s1 drained on b")
        bodies = set()
        for _ in range(4):
            response = yield self.ask(b)
            bodies.add(response.body)
        self.assertEqual(bodies, {b"s2"})
        code, answer = yield self.admin(b, b"POST", "/backends/app/servers/s1/weight", {"weight": 7})
        on_a = a.parts.backends["app"].server_named("s1")
        yield self.poll(lambda: on_a.weight == 7, "the weight set on b applied on a")
        self.assertEqual(on_a.state, "drain")  # a weight change carries the state as it is
        yield self.admin(b, b"POST", "/backends/app/servers/s1/ready", {})
        yield self.poll(lambda: on_a.state == "up", "s1 ready again on a")
        code, cluster = yield self.admin(a, b"GET", "/cluster")
        self.assertEqual((code, cluster["node"], cluster["connected"], cluster["dropped"]), (200, "a", True, 0))

    @defer.inlineCallbacks
    def test_redis_restarted_under_traffic_no_request_fails_and_state_converges(self):  # type: ignore[no-untyped-def]
        lines = self.capture_log()
        yield self.start_nodes()
        a, b = self.nodes
        self.redis.kill()
        yield self.poll(lambda: not a.parts.transport.connected and not b.parts.transport.connected, "Redis gone")
        statuses = []
        learned = {}
        for user in range(4):  # traffic on both nodes while Redis is away: served from local state
            response = yield self.ask(a, b"X-User: d%d\r\n" % user)
            learned[user] = response.body
            statuses.append(response.status)
            response = yield self.ask(b)
            statuses.append(response.status)
        code, _ = yield self.admin(a, b"POST", "/backends/app/servers/s2/maint", {})
        self.assertEqual(code, 200)
        yield self.redis.start()
        yield self.poll(lambda: a.parts.transport.connected and b.parts.transport.connected, "reconnected", ticks=2000)
        on_b = b.parts.backends["app"]
        yield self.poll(lambda: on_b.server_named("s2").state == "maint",
                        "a's maint reached b")
        yield self.poll(lambda: len(on_b.table.store) == 4, "a's entries reached b")
        self.assertEqual({status for status in statuses}, {200})
        self.assertEqual(len([line for line in lines if "unreachable" in line]), 2, lines)  # once per node
        self.assertEqual(len([line for line in lines if "reachable again" in line]), 2, lines)


class AcrossNodes(ClusterCase):
    """Real python-socketio servers and clients through two nodes behind a balancer with no stickiness: each new
    connection goes to the other node, so a client's polling requests and its upgrade cross nodes."""

    @defer.inlineCallbacks
    def start(self, config: Any) -> Any:
        self.redis = yield start_redis(self)
        ports = yield defer.gatherResults([start_server(self, "eio-1"), start_server(self, "eio-2")])
        self.nodes = [self.start_from_config(config(name, ports)) for name in ("a", "b")]
        balancer = Alternating([n.getServiceNamed("frontend:web").ports[0].getHost().port for n in self.nodes])
        listener = reactor.listenTCP(0, balancer, interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        return balancer, f"http://127.0.0.1:{listener.getHost().port}"

    def check_reports(self, reports: list[dict[str, Any]], balancer: Alternating) -> None:
        for report in reports:
            self.assertIsNone(report["error"], report)
            self.assertEqual(report["transport"], "websocket", report)
            servers = {*report["names"], *report["polling_servers"], report["websocket_server"]}
            self.assertEqual(len(servers), 1, report)
        crossed = [sid for sid, nodes in balancer.seen.items() if len(nodes) > 1]
        self.assertTrue(crossed, f"no client's requests crossed nodes: {balancer.seen}")


class SocketIOAcrossNodesTests(AcrossNodes):
    @defer.inlineCallbacks
    def test_a_client_polling_through_one_node_and_upgrading_through_the_other_stays_on_its_server(self):  # type: ignore[no-untyped-def]
        def config(name: str, ports: list[int]) -> str:
            return node_config(name, self.redis.url, ports, stick=False)

        balancer, url = yield self.start(config)
        yield self.poll(lambda: all(n.parts.transport.connected for n in self.nodes), "both nodes in the cluster")
        self.proxy_port = balancer.ports[1]
        yield self.request(get(b"/"))  # b's round robin one ahead of a's: on its own, b would choose otherwise
        reports = []
        for _ in range(4):  # one after another: each one's connections alternate between the nodes
            reports.append((yield run_client(url, 3)))
        self.check_reports(reports, balancer)


def prefix_config(name: str, ports: list[int]) -> str:
    """A node with no cluster at all: the sid prefix alone keeps each session on its server."""
    servers = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    return (f'[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n'
            f'[backends.app]\nservers = [{servers}]\nengineio-sid-prefix = true\n'
            f'[backends.app.websocket]\nmode = "session"\n')


class SidPrefixAcrossNodesTests(AcrossNodes):
    """The same clients through two nodes that share nothing (no Redis): the sid the client sees names its server."""

    @defer.inlineCallbacks
    def start_prefixed(self) -> Any:
        ports = yield defer.gatherResults([start_server(self, "eio-1"), start_server(self, "eio-2")])
        self.nodes = [self.start_from_config(prefix_config(name, ports)) for name in ("a", "b")]
        balancer = Alternating([n.getServiceNamed("frontend:web").ports[0].getHost().port for n in self.nodes])
        listener = reactor.listenTCP(0, balancer, interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        self.proxy_port = balancer.ports[1]
        yield self.request(get(b"/"))  # b's round robin one ahead of a's
        return balancer, f"http://127.0.0.1:{listener.getHost().port}"

    @defer.inlineCallbacks
    def test_python_socketio_clients_stay_on_their_server_through_nodes_that_share_nothing(self):  # type: ignore[no-untyped-def]
        balancer, url = yield self.start_prefixed()
        reports = []
        for _ in range(4):
            reports.append((yield run_client(url, 3)))
        self.check_reports(reports, balancer)
        for report in reports:
            self.assertRegex(report["sid"], r"^[0-9a-f]{8}~")  # what the client saw
        for node in self.nodes:  # what each learned, under the sid the client uses
            for sid, _, _ in node.parts.backends["app"].engineio.store.items(100):
                self.assertRegex(sid, rb"^[0-9a-f]{8}~")

    @defer.inlineCallbacks
    def test_the_socketio_javascript_client_polling_then_upgrading_stays_on_its_server(self):  # type: ignore[no-untyped-def]
        balancer, url = yield self.start_prefixed()
        clients = [spawn_node_emitter(self, url, "upgrade", "1500") for _ in range(3)]
        for client in clients:
            line = yield client.next_line()
            while not line.startswith(("DONE", "ERROR")):
                self.assertFalse(line.startswith(("MOVED", "DISCONNECTED")), line)
                line = yield client.next_line()
            self.assertTrue(line.startswith("DONE"), line)
            report = json.loads(line[5:])
            self.assertEqual((report["connected"], report["transport"], report["unacked"]), (True, "websocket", []))
            self.assertEqual(len(report["servers"]), 1, report)
            self.assertRegex(report["sid"], r"^[0-9a-f]{8}~")
        polled = [sid for sid, nodes in balancer.seen.items() if len(nodes) > 1]
        self.assertTrue(polled, balancer.seen)

    @defer.inlineCallbacks
    def test_a_websocket_first_session_s_open_packet_is_prefixed_too(self):  # type: ignore[no-untyped-def]
        balancer, url = yield self.start_prefixed()
        client = spawn_node_emitter(self, url, "", "500")
        line = yield client.next_line()
        while not line.startswith(("DONE", "ERROR")):
            line = yield client.next_line()
        report = json.loads(line[5:])
        self.assertEqual((report["connected"], report["transport"], report["unacked"]), (True, "websocket", []))
        self.assertRegex(report["sid"], r"^[0-9a-f]{8}~")

    def test_a_token_is_taken_off_every_sid_and_names_its_server(self) -> None:
        from rubrisproxy.backend._sidprefix import SidPrefix

        prefix = SidPrefix("app")
        token = prefix.token("s2")
        self.assertEqual(prefix.server_of(token + b"~abc", ["s1", "s2"]), "s2")
        for hostile in (b"deadbeef~abc", token, token + b"~", b"~abc", b"x" * 10_000 + b"~abc", token[:7] + b"~abc"):
            self.assertIsNone(prefix.server_of(hostile, ["s1", "s2"]), hostile[:20])
        self.assertEqual(prefix.strip(b"/socket.io/?EIO=4&sid=%s~a&x=1&sid=%s~b" % (token, token)),
                         b"/socket.io/?EIO=4&sid=a&x=1&sid=b")
        self.assertEqual(prefix.strip(b"/p?q=%s~a" % token), b"/p?q=%s~a" % token)  # only sid= values

    def test_open_packets_are_prefixed_in_each_payload_framing(self) -> None:
        from rubrisproxy.backend._sidprefix import SidPrefix

        prefix = SidPrefix("app")
        token = prefix.token("s1")
        v4 = b'0{"sid":"Ab_-9","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}'
        self.assertEqual(prefix.prefix_open(v4 + b"\x1e40", "s1"), v4.replace(b'"Ab_', b'"' + token + b"~Ab_") + b"\x1e40")
        packet = b'0{"sid": "Ab", "upgrades": [], "pingTimeout": 60000, "pingInterval": 25000}'
        grown = packet.replace(b'"Ab"', b'"' + token + b'~Ab"')
        self.assertEqual(prefix.prefix_open(b"%d:%s2:40" % (len(packet), packet), "s1"),
                         b"%d:%s2:40" % (len(grown), grown))
        binary = b"\x00" + bytes(int(d) for d in str(len(packet))) + b"\xff" + packet
        self.assertEqual(prefix.prefix_open(binary, "s1"), b"\x00" + bytes(int(d) for d in str(len(grown))) + b"\xff" + grown)
        for hostile in (b"5:" + packet, b"\x00\x01\xff" + packet, b"0{}", b'0{"sid":"\\u0041b","pingInterval":1,"pingTimeout":1}',
                        b"x" * 20 + packet):
            self.assertIsNone(prefix.prefix_open(hostile, "s1"), hostile[:20])


DESTROYED: list[tuple[str, str]] = []


@implementer(IClientHandler)
class DestroyedEverywhere:
    """A client-destroy handler configured on every node: what it hears goes to DESTROYED."""

    def client_destroyed(self, session: Any, reason: SessionEnd) -> None:
        DESTROYED.append((session.id, reason.value))


class SharedSessionNodesTests(NodesCase):
    @defer.inlineCallbacks
    def test_a_client_on_two_nodes_is_destroyed_once(self):  # type: ignore[no-untyped-def]
        self.redis = yield start_redis(self)
        ports = [self.start_web_origin(Named(b"s1")), self.start_web_origin(Named(b"s2"))]
        clients = ('[frontends.web.clients]\nidentify = ["header(X-Client)"]\nexpire = "1s"\n')
        handlers = 'handlers = ["tests.test_cluster.DestroyedEverywhere"]\n'
        nodes = [self.start_from_config(node_config(name, self.redis.url, ports, stick=False, frontend=handlers)
                                        + clients) for name in ("a", "b")]
        yield self.poll(lambda: all(n.parts.transport.connected for n in nodes), "both nodes in the cluster")
        del DESTROYED[:]
        yield self.ask(nodes[0], b"X-Client: c1\r\n")
        for _ in range(8):  # 2 s on b alone: twice the expiry
            yield task.deferLater(reactor, 0.25, lambda: None)
            yield self.ask(nodes[1], b"X-Client: c1\r\n")
        self.assertEqual(DESTROYED, [])
        yield self.poll(lambda: DESTROYED, "the session expired", ticks=1000)
        yield task.deferLater(reactor, 2.5, lambda: None)
        self.assertEqual(DESTROYED, [("header:c1", "expired")])
        self.assertEqual([len(n.parts.frontends["web"].frontend.clients.sessions) for n in nodes], [0, 0])


class NoRedisTests(NodesCase):
    """A node whose Redis was never there."""

    @defer.inlineCallbacks
    def test_a_node_whose_redis_never_answers_serves_and_logs_once(self):  # type: ignore[no-untyped-def]
        lines = self.capture_log()
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
        ports = [self.start_web_origin(Named(b"s1")), self.start_web_origin(Named(b"s2"))]
        node = self.start_from_config(node_config("lonely", url, ports))
        for user in range(10):
            response = yield self.ask(node, b"X-User: u%d\r\n" % user)
            self.assertEqual(response.status, 200)
        yield self.admin(node, b"POST", "/backends/app/servers/s1/drain", {})
        yield self.poll(lambda: failed_attempts(node.parts.transport) >= 3, "several attempts failed")
        code, cluster = yield self.admin(node, b"GET", "/cluster")
        self.assertEqual((code, cluster["connected"], cluster["queued"]), (200, False, 11))
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("unreachable", lines[0])



class ClusterConfigTests(ClusterCase):
    def test_the_start_says_where_the_cluster_is(self) -> None:
        from rubrisproxy.startup import startup_lines

        config = config_from_document({"cluster": {"redis": "unix:///run/redis.sock?db=3", "node": "edge-1"},
                                       "backends": {"app": {"servers": ["127.0.0.1:1"]}}})
        self.assertIn("cluster: node edge-1, sharing state through Redis at unix:///run/redis.sock?db=3",
                      startup_lines(config, None))
        self.assertFalse([line for line in startup_lines(replace(config, cluster=None), None) if "cluster" in line])

    def test_each_key_is_checked_naming_it(self) -> None:
        from rubrisproxy.config import ConfigError

        for table, key in (({"redis": "http://x"}, "cluster.redis"), ({"redis": "redis://h:99999"}, "cluster.redis"),
                           ({"redis": "redis://h/16"}, "cluster.redis"), ({"redis": "redis://u:p@h"}, "cluster.redis"),
                           ({"redis": "unix:///s?db=x"}, "cluster.redis"), ({}, "cluster.redis"),
                           ({"redis": "redis://h", "node": "a b"}, "cluster.node"),
                           ({"redis": "redis://h", "other": 1}, "cluster.other")):
            with self.assertRaises(ConfigError) as caught:
                config_from_document({"cluster": table})
            self.assertTrue(str(caught.exception).startswith(key + ":"), str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            config_from_document({"backends": {"app": {"engineio-sticky": False, "engineio-sid-prefix": True}}})
        self.assertTrue(str(caught.exception).startswith("backends.app.engineio-sid-prefix:"))
        parsed = config_from_document({"cluster": {"redis": "redis://[::1]:7000/2"}}).cluster
        self.assertEqual((parsed.redis.host, parsed.redis.port, parsed.redis.db), ("::1", 7000, 2))
        self.assertEqual(str(parsed.redis), "redis://[::1]:7000/2")

    def test_without_cluster_nothing_is_shared(self) -> None:
        config = config_from_document({"backends": {"app": {"servers": ["127.0.0.1:1"], "stick": {"on": "source"}}}})
        self.assertIsNone(config.cluster)
        service = self.start_from_config('[backends.app]\nservers = ["127.0.0.1:1"]\n[backends.app.stick]\non = "source"\n')
        self.assertIsNone(service.parts.transport)
        self.assertEqual(type(service.parts.backends["app"].table.store).__name__, "MemoryStickStore")


class FakeEngineIO(resource.Resource):
    """An Engine.IO server's polling answers, enough for the sid prefix: a handshake opens a session (v4, or v3's
    text framing for EIO=3); a request with a sid it opened is answered with what it saw, any other with 400."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.opened: list[str] = []
        self.seen: list[bytes] = []

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        self.seen.append(request.uri)
        sid = request.args.get(b"sid", [None])[0]
        if sid is None:
            opened = f"{self.name}-{len(self.opened)}"
            self.opened.append(opened)
            packet = json.dumps({"sid": opened, "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000}).encode()
            return b"0" + packet if request.args.get(b"EIO") != [b"3"] else b"%d:0%s2:40" % (len(packet) + 1, packet)
        if sid.decode() not in self.opened:
            request.setResponseCode(400)
            return b'{"code":1,"message":"Session ID unknown"}'
        return b"6"  # a noop packet


class SidPrefixTests(ProxyTestCase):
    """The sid prefix through one proxy, with Engine.IO servers that say what they saw."""

    def setUp(self) -> None:
        self.origins = [FakeEngineIO("s1"), FakeEngineIO("s2")]
        ports = [self.start_web_origin(origin) for origin in self.origins]
        service = self.start_from_config(
            '[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbackend = "app"\n'
            f'[backends.app]\nservers = ["127.0.0.1:{ports[0]}", "127.0.0.1:{ports[1]}"]\nengineio-sid-prefix = true\n')
        self.backend = service.parts.backends["app"]
        self.proxy_port = service.getServiceNamed("frontend:web").ports[0].getHost().port

    @defer.inlineCallbacks
    def handshake(self, eio: bytes = b"4") -> Any:
        (response,) = yield self.request(get(b"/socket.io/?EIO=" + eio + b"&transport=polling"))
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header(b"content-length"))  # its length changed: sent chunked
        return response

    @defer.inlineCallbacks
    def poll(self, sid: bytes) -> Any:  # type: ignore[override]
        (response,) = yield self.request(get(b"/socket.io/?EIO=4&transport=polling&sid=" + sid))
        return response

    @defer.inlineCallbacks
    def test_the_client_sees_the_token_and_the_server_never_does(self):  # type: ignore[no-untyped-def]
        for _ in range(4):
            response = yield self.handshake()
            sid = json.loads(response.body[1:])["sid"].encode()
            token, _, raw = sid.partition(b"~")
            server = raw.split(b"-")[0].decode()
            self.assertEqual(token, self.backend.engineio.prefix.token(server))
            for _ in range(3):
                answer = yield self.poll(sid)
                self.assertEqual((answer.status, answer.body), (200, b"6"))
        for origin in self.origins:
            self.assertEqual([uri for uri in origin.seen if b"~" in uri], [])
            self.assertEqual(len([uri for uri in origin.seen if b"sid=" in uri]), 6)  # each its own sessions' polls

    @defer.inlineCallbacks
    def test_a_v3_handshake_is_reframed(self):  # type: ignore[no-untyped-def]
        response = yield self.handshake(b"3")
        length, _, rest = response.body.partition(b":")
        packet = rest[:int(length)]
        self.assertEqual(rest[int(length):], b"2:40")
        self.assertRegex(json.loads(packet[1:])["sid"], r"^[0-9a-f]{8}~s[12]-0$")

    @defer.inlineCallbacks
    def test_a_sid_learned_elsewhere_is_routed_by_its_token_alone(self):  # type: ignore[no-untyped-def]
        response = yield self.handshake()
        sid = json.loads(response.body[1:])["sid"].encode()
        self.backend.engineio.store = type(self.backend.engineio.store)(self.backend.clock, 300, 10)  # forgotten
        for _ in range(4):  # the round robin would split them; the token keeps them on the server
            answer = yield self.poll(sid)
            self.assertEqual((answer.status, answer.body), (200, b"6"))

    @defer.inlineCallbacks
    def test_hostile_sids(self):  # type: ignore[no-untyped-def]
        response = yield self.handshake()
        sid = json.loads(response.body[1:])["sid"].encode()
        token, _, raw = sid.partition(b"~")
        # a forged token: balanced as a new request would be; the server reached answers for itself
        for forged in (b"deadbeef~" + raw, b"~" + raw, token + b"~", token + b"~nobody", b"x" * 7000):
            answer = yield self.poll(forged)
            self.assertIn(answer.status, (200, 400), forged[:30])
        answer = yield self.poll(b"y" * 9000)  # past the request line's limit
        self.assertEqual(answer.status, 414)
        # both a learned sid and another: the first routes, both reach the server without their tokens
        other = self.backend.engineio.prefix.token("s2" if raw.startswith(b"s1") else "s1") + b"~zz"
        answer = yield self.poll(sid + b"&sid=" + other)
        self.assertEqual(answer.status, 200)
        # a drained server keeps its sessions; a removed one's are answered as unknown, at once
        server = raw.split(b"-")[0].decode()
        self.backend.drain_server(server)
        answer = yield self.poll(sid)
        self.assertEqual((answer.status, answer.body), (200, b"6"))
        self.backend.remove_server(server)
        answer = yield self.poll(sid)
        self.assertEqual(answer.status, 400)


class Wire:
    """Carries changes between registries in one process: each reaches the others at once, or, while ``held``,
    once released."""

    def __init__(self) -> None:
        self.registries: list[Any] = []
        self.held: list[tuple[Any, Change]] | None = None
        self.sent: list[Change] = []

    def deliver(self, sender: Any, change: Change) -> None:
        self.sent.append(change)
        for registry in self.registries:
            if registry is not sender:
                if self.held is not None:
                    self.held.append((registry, change))
                else:
                    registry.apply(change)

    def release(self) -> None:
        held, self.held = self.held or [], None
        for registry, change in held:
            registry.apply(change)


class _Sending:
    """One registry's end of the wire (so the wire knows who sent what)."""

    def __init__(self, wire: Wire, registry: Any) -> None:
        self.wire, self.registry = wire, registry

    def attach(self, receiver: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def publish(self, change: Change) -> None:
        self.wire.deliver(self.registry, change)


@implementer(IClientHandler)
class _Recorder:
    def __init__(self, node: str, calls: list[tuple[str, str, str]]) -> None:
        self.node, self.calls = node, calls

    def client_destroyed(self, session: Any, reason: Any) -> None:
        self.calls.append((self.node, session.id, reason.value))


class SharedSessionTests(SynchronousTestCase):
    """Client sessions shared between two proxies: one owner, whose handlers alone hear of the end."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.wire = Wire()
        self.calls: list[tuple[str, str, str]] = []
        self.registries = []
        for node in ("a", "b"):
            handler = _Recorder(node, self.calls)
            registry = ClientRegistry("web", ClientsConfig(("sid", "header(X-Client)", "connection"), 10), self.clock,
                                      (handler,))
            registry.sharing = SessionSharing(_Sending(self.wire, registry), node)
            self.registries.append(registry)
        self.wire.registries = self.registries

    def use(self, index: int, client: bytes = b"c1", target: bytes = b"/") -> Any:
        registry = self.registries[index]
        head = RequestHead(method=b"GET", target=target, version=b"1.1", headers=[(b"X-Client", client)] if client else [])
        session = registry.request_started(head, object(), True, "192.0.2.1")
        registry.request_ended(session, "s1", 200)
        return session

    def test_the_owner_alone_expires_it_once_no_proxy_has_used_it(self) -> None:
        a, b = self.registries
        self.assertEqual(self.use(0).owner, "a")
        self.assertEqual(self.use(1).owner, "a")  # b heard a's claim
        for _ in range(30):  # used on b only, for three expiries' time
            self.clock.advance(1)
            self.use(1)
        self.assertEqual(self.calls, [])
        self.assertIn("header:c1", a.sessions)  # b's word kept it alive on a
        self.clock.advance(30)
        self.assertEqual(self.calls, [("a", "header:c1", "expired")])
        self.assertEqual((a.sessions, b.sessions), ({}, {}))
        sent = len(self.wire.sent)
        self.assertLessEqual(sent, 2 + 30 // 5 + 1)  # a claim, b's word at most once per half expire, a's end

    def test_an_end_seen_by_a_proxy_that_does_not_own_it_is_reported_by_the_owner(self) -> None:
        self.use(0, b"", b"/socket.io/?EIO=4&sid=S1")
        b = self.registries[1]
        session = b.request_started(RequestHead(method=b"GET", target=b"/socket.io/?EIO=4&sid=S1", version=b"1.1",
                                                headers=[]), object(), True, "192.0.2.1")
        self.assertEqual(session.owner, "a")
        b.request_ended(session, "s1", 400)  # the server no longer knows the sid: the session ends, seen on b
        self.assertEqual(self.calls, [("a", "sid:S1", "closed-by-server")])
        self.assertEqual((self.registries[0].sessions, b.sessions), ({}, {}))
        self.clock.advance(100)
        self.assertEqual(len(self.calls), 1)

    def test_two_claims_at_once_leave_one_owner(self) -> None:
        self.wire.held = []
        self.use(1)
        self.clock.advance(0.5)
        self.use(0)  # neither has heard of the other's claim
        self.wire.release()
        self.assertEqual({r.sessions["header:c1"].owner for r in self.registries}, {"b"})  # the earlier claim
        self.clock.advance(100)
        self.assertEqual(self.calls, [("b", "header:c1", "expired")])


class LookupTests(NodesCase):
    """A sid whose push has not arrived yet (the client came back through another node faster than Redis could
    tell it) is asked of Redis, once."""

    @defer.inlineCallbacks
    def test_an_unknown_sid_is_asked_once_and_found(self):  # type: ignore[no-untyped-def]
        self.redis = yield start_redis(self)
        origins = [FakeEngineIO("s1"), FakeEngineIO("s2")]
        ports = [self.start_web_origin(origin) for origin in origins]
        a, b = (self.start_from_config(node_config(name, self.redis.url, ports, stick=False)) for name in ("a", "b"))
        yield self.poll(lambda: a.parts.transport.connected and b.parts.transport.connected, "both in the cluster")
        yield self.ask(b)  # b's round robin one ahead of a's
        b.parts.transport._receiver = None  # b hears no push: as if the client were faster than Redis
        self.proxy_port = self.port_of(a)
        (opened,) = yield self.request(get(b"/socket.io/?EIO=4&transport=polling"))
        sid = json.loads(opened.body[1:])["sid"].encode()
        self.proxy_port = self.port_of(b)
        for _ in range(3):
            (answer,) = yield self.request(get(b"/socket.io/?EIO=4&transport=polling&sid=" + sid))
            self.assertEqual((answer.status, answer.body), (200, b"6"))
        self.assertEqual(b.parts.transport.lookups, 1)  # found, then known
        for _ in range(3):  # a sid nobody learned: asked once, then balanced as any
            (answer,) = yield self.request(get(b"/socket.io/?EIO=4&transport=polling&sid=forged"))
            self.assertEqual(answer.status, 400)
        self.assertEqual(b.parts.transport.lookups, 2)
        self.assertEqual(a.parts.transport.lookups, 0)


class MemoryBus:
    """Topics between workers in one process: what one publishes reaches the others (a ``bus.Bus`` each); with
    ``held``, publications wait in ``late`` (a push still on its way), and questions go unanswered while
    ``mute``."""

    def __init__(self) -> None:
        self.ends: list[MemoryBus.End] = []
        self.held = self.mute = False
        self.late: list[Any] = []

    class End:
        def __init__(self, bus: MemoryBus, index: int) -> None:
            self.bus, self.index = bus, index
            self.subscribers: dict[str, list[Any]] = {}
            self.responders: dict[str, Any] = {}

        def publish(self, topic: str, payload: bytes, retain: str = "") -> None:
            for other in self.bus.ends:
                if other is not self:
                    for subscriber in other.subscribers.get(topic, ()):
                        if self.bus.held:
                            self.bus.late.append(lambda s=subscriber: s(payload, self.index))
                        else:
                            subscriber(payload, self.index)

        def subscribe(self, topic: str, subscriber: Any) -> None:
            self.subscribers.setdefault(topic, []).append(subscriber)

        def ask(self, topic: str, question: bytes, answered: Any) -> None:
            if self.bus.mute:
                return
            answers = [other.responders[topic](question, self.index) for other in self.bus.ends
                       if other is not self and topic in other.responders]
            answered([answer for answer in answers if answer])

        def respond(self, topic: str, responder: Any) -> None:
            self.responders[topic] = responder

    def end(self) -> MemoryBus.End:
        end = MemoryBus.End(self, len(self.ends))
        self.ends.append(end)
        return end


class SiblingWorkersTests(SynchronousTestCase):
    """Two workers' proxies in one process, sharing through a bus as the supervisor's channel does."""

    def test_a_stick_entry_and_a_learned_sid_reach_the_sibling_and_admin_states_stay_home(self) -> None:
        from rubrisproxy.cluster import BusTransport, Siblings
        from rubrisproxy.service import build_service

        bus, clock = MemoryBus(), Clock()
        config = config_from_document({"backends": {"app": {"servers": ["127.0.0.1:1", "127.0.0.1:2"],
                                                            "stick": {"on": "header(X-User)"}}}})
        parts = []
        for index in range(2):
            root = build_service(config, clock, report=False, siblings=Siblings(bus.end(), index))
            self.assertIsInstance(root.parts.transport, BusTransport)
            root.parts.transport.start()
            parts.append(root.parts)
        one, two = (p.backends["app"] for p in parts)
        one.table.store.put(b"u1", "s2")
        one.engineio.remember(b"sid-1", "s1")
        self.assertEqual(two.table.store.get(b"u1"), "s2")
        self.assertEqual(two.engineio.store.get(b"sid-1"), "s1")
        parts[0].shared.admin_changed(one, one.drain_server("s1"))  # the supervisor hands it to every worker itself
        self.assertEqual(two.server_named("s1").state, "up")
        self.assertEqual((parts[0].transport.published, parts[1].transport.received), (2, 2))
        for p in parts:
            p.transport.stop()

    def siblings(self, clock: Clock, bus: MemoryBus) -> list[Any]:
        from rubrisproxy.cluster import Siblings
        from rubrisproxy.service import build_service

        config = config_from_document({"backends": {"app": {"servers": ["127.0.0.1:1", "127.0.0.1:2"]}}})
        parts = []
        for index in range(2):
            root = build_service(config, clock, report=False, siblings=Siblings(bus.end(), index))
            root.parts.transport.start()
            self.addCleanup(root.parts.transport.stop)
            parts.append(root.parts)
        return parts

    def test_a_sid_whose_push_has_not_arrived_is_asked_of_the_siblings(self) -> None:
        bus, clock = MemoryBus(), Clock()
        one, two = self.siblings(clock, bus)
        bus.held = True  # the handshake answered by worker 0; its client comes back to worker 1 first
        one.backends["app"].engineio.remember(b"sid-1", "s2")
        store = two.backends["app"].engineio.store
        self.assertIsNone(store.get(b"sid-1"))
        looked_up: list[str | None] = []
        self.assertTrue(store.lookup(b"sid-1", lambda: looked_up.append(store.get(b"sid-1"))))
        self.assertEqual(looked_up, ["s2"])
        self.assertEqual((two.transport.lookups, clock.getDelayedCalls()), (1, []))  # answered: its wait cancelled
        for late in bus.late:  # the push, when it comes, changes nothing
            late()
        self.assertEqual(store.get(b"sid-1"), "s2")

    def test_a_sid_no_sibling_holds_is_answered_none_and_asked_once(self) -> None:
        bus, clock = MemoryBus(), Clock()
        _, two = self.siblings(clock, bus)
        store = two.backends["app"].engineio.store
        answered: list[str | None] = []
        self.assertTrue(store.lookup(b"forged", lambda: answered.append(store.get(b"forged"))))
        self.assertEqual(answered, [None])
        self.assertFalse(store.lookup(b"forged", lambda: answered.append("again")))  # not asked again for a while
        self.assertEqual(two.transport.lookups, 1)

    def test_made_up_sids_are_asked_about_at_most_the_budget_a_second(self) -> None:
        from rubrisproxy.cluster._bus import ASKS_PER_SECOND

        bus, clock = MemoryBus(), Clock()
        _, two = self.siblings(clock, bus)
        store = two.backends["app"].engineio.store
        asked = [store.lookup(b"made-up-%d" % n, lambda: None) for n in range(ASKS_PER_SECOND + 5)]
        self.assertEqual((asked.count(True), two.transport.lookups), (ASKS_PER_SECOND, ASKS_PER_SECOND))
        clock.advance(1.0)
        self.assertTrue(store.lookup(b"made-up-next-second", lambda: None))

    def test_siblings_that_do_not_answer_are_given_up_after_the_wait(self) -> None:
        from rubrisproxy.cluster._bus import ASK_WAIT, MAX_ASKS

        bus, clock = MemoryBus(), Clock()
        _, two = self.siblings(clock, bus)
        bus.mute = True
        store = two.backends["app"].engineio.store
        answered: list[bytes] = []
        for n in range(MAX_ASKS):
            self.assertTrue(store.lookup(b"sid-%d" % n, lambda n=n: answered.append(b"sid-%d" % n)))
        self.assertFalse(store.lookup(b"one-too-many", lambda: answered.append(b"no")))  # bounded in flight
        clock.advance(ASK_WAIT)
        self.assertEqual(len(answered), MAX_ASKS)
        self.assertTrue(store.lookup(b"sid-after", lambda: None))  # none in flight any more
        clock.advance(ASK_WAIT)
        self.assertEqual(clock.getDelayedCalls(), [])


class SidPrefixFramingTests(ProxyTestCase):
    """The prefixed handshake to clients that cannot take chunks: its Content-Length dropped, the body delimited by
    the close (HTTP/1.0) or the stream's end (HTTP/2)."""

    setUp = SidPrefixTests.setUp

    @defer.inlineCallbacks
    def test_an_http_1_0_client_gets_it_delimited_by_the_close(self):  # type: ignore[no-untyped-def]
        client = yield self.connect()
        client.send(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.0\r\nHost: test\r\n\r\n")
        data = yield self.poll_closed(client)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertNotIn(b"content-length", head.lower())
        self.assertRegex(json.loads(body[1:])["sid"], r"^[0-9a-f]{8}~s[12]-0$")

    @defer.inlineCallbacks
    def poll_closed(self, client: Any) -> Any:
        yield self.poll(lambda: not client.transport.connected, "the response delimited by the close")
        return client.received

    @defer.inlineCallbacks
    def test_an_http_2_client_gets_it_in_its_stream(self):  # type: ignore[no-untyped-def]
        from twisted.internet.utils import getProcessOutputAndValue

        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("no curl")
        url = f"http://127.0.0.1:{self.proxy_port}/socket.io/?EIO=4&transport=polling"
        out, err, code = yield getProcessOutputAndValue(curl, ["-s", "--http2-prior-knowledge", url])
        self.assertEqual(code, 0, err)
        self.assertRegex(json.loads(out[1:])["sid"], r"^[0-9a-f]{8}~s[12]-0$")

