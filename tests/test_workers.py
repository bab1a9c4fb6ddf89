"""Worker processes, run for real: ``twistd rubrisproxy --workers 2`` on loopback, its workers serving HTTP and
WebSocket, one killed and restarted, reloads, admin actions and metrics across both, SIGTERM's graceful stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tomllib
from io import BytesIO, StringIO
from typing import Any

from twisted.internet import defer, error, reactor, task, utils
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from rubrisproxy.config import CommandLine, ConfigError, ProxyConfig, apply_command_line, config_from_document
from rubrisproxy.logoutput import StreamOutput
from rubrisproxy.mainlog import MainLogObserver
from rubrisproxy.workers import HandleState, Supervisor, SupervisorState, share, worker_config
from rubrisproxy.workers._channel import AdminCall, Deliver, Hello, Ping, Query, Start, Unresponsive
from rubrisproxy.workers._handle import SupervisorChannel
from rubrisproxy.workers._merge import merge_csv, merge_json, merge_metrics
from rubrisproxy.workers._worker import Worker, WorkerChannel

from .eio.harness import spawn_node_many, start_server
from .helpers import ProxyTestCase, get, run_reactor_for
from .test_plugin import ROOT, Twistd, run_twistd
from .wsecho import EchoBackendFactory, connect_client, listen_echo_backend

#: Seconds the supervisor and its workers have to come up, or a worker to come back: a guard against a hung start,
#: never a wait (three Python processes importing the proxy take 2-4 s on an idle machine, past 20 s on a loaded
#: 2-core one).
UP = 45


def free_port() -> int:
    """A loopback TCP port nothing listens on (workers bind a real port: each its own with SO_REUSEPORT)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie is not running: its parent, killed, left it to init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Named(resource.Resource):
    """An origin that answers with its name, after ``delay`` seconds; ``seen`` counts the requests it got."""

    isLeaf = True

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__()
        self.name = name
        self.delay = delay
        self.seen = 0

    def render(self, request: server.Request) -> Any:
        self.seen += 1
        request.setHeader(b"connection", b"close")  # nothing left open in the test's reactor when the workers go
        body = self.name.encode()
        if not self.delay:
            return body

        def late() -> None:
            request.write(body)
            request.finish()

        reactor.callLater(self.delay, late)
        return server.NOT_DONE_YET


class WorkersTestCase(ProxyTestCase):
    """Starts ``twistd rubrisproxy --workers 2`` with a configuration file; everything is killed after the test."""

    timeout = 90

    def origin(self, name: str, delay: float = 0.0) -> int:
        return self.start_web_origin(Named(name, delay))

    @defer.inlineCallbacks
    def start_workers(self, servers: dict[str, int], extra: str = "", health: str = "none"):  # type: ignore[no-untyped-def]
        self.proxy_port, self.admin_port = free_port(), free_port()
        self.config_path = os.path.abspath(self.mktemp())
        self.write_config(servers, extra, health)
        process = self.process = run_twistd("--config", self.config_path, "--workers", "2")
        self.addCleanup(self._kill, process)
        yield process.wait_for(rb"all 2 workers serving", UP)
        workers = yield self.workers()
        self.pids = [w["pid"] for w in workers["workers"]]
        return process

    def write_config(self, servers: dict[str, int], extra: str = "", health: str = "none",
                     ports: tuple[int, ...] = ()) -> None:
        listen = ", ".join(f'"tcp:{port}:interface=127.0.0.1"' for port in (self.proxy_port, *ports))
        lines = [f'[frontends.web]\nlisten = [{listen}]\nbackend = "app"\n',
                 f'[admin]\nlisten = ["tcp:{self.admin_port}:interface=127.0.0.1"]\n',
                 "[shutdown]\ngrace = \"5s\"\n",
                 f'[backends.app]\nhealth.check = "{health}"\nhealth.interval = "200ms"\n']
        lines += [f'[[backends.app.servers]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n'
                  for name, port in servers.items()]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + extra)

    @defer.inlineCallbacks
    def _kill(self, process: Twistd):  # type: ignore[no-untyped-def]
        workers = getattr(self, "pids", []) if process is getattr(self, "process", None) else []
        for pid in [process.transport.pid, *workers]:
            if pid and not process.ended.called:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        yield process.ended
        yield self.poll(lambda: not any(_alive(pid) for pid in workers), "the workers gone")
        yield run_reactor_for(1)  # a turn that reads the closes of the connections they held

    @defer.inlineCallbacks
    def admin(self, path: str, method: bytes = b"GET", body: object = None):  # type: ignore[no-untyped-def]
        headers = Headers({b"content-type": [b"application/json"]}) if body is not None else None
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode())) if body is not None else None
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(method, f"http://127.0.0.1:{self.admin_port}/{path}".encode(),
                                                headers, producer)
        content = yield readBody(response)
        return response.code, content

    @defer.inlineCallbacks
    def workers(self):  # type: ignore[no-untyped-def]
        code, content = yield self.admin("workers")
        self.assertEqual(code, 200, content)
        return json.loads(content)

    @defer.inlineCallbacks
    def names(self, count: int, path: bytes = b"/"):  # type: ignore[no-untyped-def]
        """``count`` requests, each on a connection of its own: the status and body of each."""
        answers = []
        for _ in range(count):
            (response,) = yield self.request(get(path, b"Connection: close\r\n"))
            answers.append((response.status, response.body.decode()))
        return answers


class ServingTests(WorkersTestCase):
    @defer.inlineCallbacks
    def test_http_and_websocket_spread_over_both_workers_metrics_summed(self):  # type: ignore[no-untyped-def]
        echo = listen_echo_backend(EchoBackendFactory())
        self.addCleanup(echo.stopListening)
        http_port = self.origin("A")
        yield self.start_workers({"s1": http_port},
                                 '\n[backends.ws]\nservers = ["127.0.0.1:%d"]\nhealth.check = "none"\n'
                                 '[[frontends.web.routes]]\npath-prefix = "/chat"\nbackend = "ws"\n'
                                 % echo.getHost().port)
        answers = yield self.names(60)
        self.assertEqual(set(answers), {(200, "A")})
        for n in range(10):
            client = connect_client(self.proxy_port, "/chat")
            self.addCleanup(lambda c=client: c.transport.abortConnection() if c.transport.connected else None)
            yield client.opened
            client.sendMessage(b"hello %d" % n)
            messages = yield client.wait_messages(1)
            self.assertEqual(messages, [(b"hello %d" % n, False)])
            client.sendClose(1000)
            yield client.closed
        workers = yield self.workers()
        accepted = [w["accepted"] for w in workers["workers"]]
        self.assertEqual(sum(accepted), 70, workers)
        self.assertTrue(all(a > 0 for a in accepted), workers)  # 70 connections all on one worker: 2**-69
        self.assertEqual(len({w["pid"] for w in workers["workers"]}), 2, workers)
        code, metrics = yield self.admin("metrics")
        self.assertEqual(code, 200)
        self.assertIn(b'rubrisproxy_requests_total{frontend="web"} 70.0', metrics)
        self.assertIn(b'rubrisproxy_workers{state="serving"} 2.0', metrics)
        code, health = yield self.admin("healthz")
        self.assertEqual((code, json.loads(health)), (200, {"status": "ok", "workers_serving": 2, "workers": 2}))
        code, stats = yield self.admin("stats.json")
        stats = json.loads(stats)
        self.assertEqual(stats["frontends"][0]["accepted"], 70)
        self.assertEqual(stats["proxy"]["pid"], self.process.transport.pid)
        self.assertEqual([w["pid"] for w in stats["proxy"]["workers"]], self.pids)

    @defer.inlineCallbacks
    def test_websocket_sessions_resume_within_their_worker(self):  # type: ignore[no-untyped-def]
        echoes = [EchoBackendFactory(), EchoBackendFactory()]
        listeners = [listen_echo_backend(factory) for factory in echoes]
        for listener in listeners:
            self.addCleanup(lambda each=listener: each.stopListening() if each.connected else None)
        yield self.start_workers({"s1": listeners[0].getHost().port, "s2": listeners[1].getHost().port},
                                 '\n[websocket]\nbackend-ping-interval = 0\nclient-ping-interval = 0\n')
        clients = []
        for n in range(16):  # on either worker (all 16 on one: 2**-15), balanced over both servers
            client = connect_client(self.proxy_port, "/chat")
            self.addCleanup(lambda c=client: c.transport.abortConnection() if c.transport.connected else None)
            yield client.opened
            client.sendMessage(b"one %d" % n)
            yield client.wait_messages(1)
            clients.append(client)
        listeners[0].stopListening()  # server s1 dies: its WebSockets are cut
        for protocol in list(echoes[0].open):
            protocol.transport.abortConnection()
        for n, client in enumerate(clients):
            client.sendMessage(b"two %d" % n)
            messages = yield client.wait_messages(2)
            self.assertEqual(messages[1], (b"two %d" % n, False))
            self.assertFalse(client.closed.called)
        self.assertEqual(len(echoes[1].open), 16)  # every session moved to s2, in whichever worker it lives
        workers = yield self.workers()
        self.assertTrue(all(w["accepted"] > 0 for w in workers["workers"]), workers)

    @defer.inlineCallbacks
    def test_a_killed_worker_is_restarted_and_the_other_keeps_serving(self):  # type: ignore[no-untyped-def]
        yield self.start_workers({"s1": self.origin("A")})
        kept = []
        for _ in range(20):  # keep-alive connections, on either worker
            client = yield self.connect()
            client.send(get())
            yield client.responses(1)
            kept.append(client)
        workers = yield self.workers()
        on_killed = workers["workers"][1]["accepted"]  # the kept connections worker 1 holds
        killed = self.pids[1]
        os.kill(killed, signal.SIGKILL)
        yield self.process.wait_for(rb"worker 1 \(pid %d\) ended \(signal 9\).*restarting it in" % killed)
        yield self.poll(lambda: sum(not c.transport.connected for c in kept) >= on_killed,
                        "the dead worker's connections seen closed")
        lost = [c for c in kept if not c.transport.connected]
        survivors = [c for c in kept if c.transport.connected]
        self.assertEqual(len(lost), on_killed)  # those, and none of worker 0's
        self.assertTrue(lost and survivors, (len(lost), len(survivors)))  # 20 all on one worker: 2**-19
        for client in survivors:  # worker 0's connections carry on
            client.send(get())
            (_, response) = yield client.responses(2)
            self.assertEqual((response.status, response.body), (200, b"A"))
        answers = yield self.names(20)  # while it is down, or starting again: the other serves every one
        self.assertEqual(set(answers), {(200, "A")})
        match = yield self.process.wait_for(rb"worker 1 \(pid (?!%d\))(\d+)\) serving" % killed, UP)
        restarted = int(match.group(1))
        self.assertNotEqual(restarted, killed)
        workers = yield self.workers()
        self.pids = [w["pid"] for w in workers["workers"]]
        self.assertEqual([(w["pid"], w["state"], w["restarts"]) for w in workers["workers"]],
                         [(self.pids[0], "serving", 0), (restarted, "serving", 1)])
        self.assertEqual(workers["workers"][1]["last_exit"], "signal 9")
        listed = yield utils.getProcessOutput(sys.executable, ["-m", "rubrisproxy.ctl", "ctl", "--admin",
                                                               f"http://127.0.0.1:{self.admin_port}", "workers"],
                                              env=dict(os.environ), path=ROOT)
        self.assertRegex(listed.decode(), rf"(?m)^1 +{restarted} +serving +1 .* signal 9 ")
        code, metrics = yield self.admin("metrics")
        self.assertIn(b'rubrisproxy_worker_restarts_total{worker="1"} 1.0', metrics)
        answers = yield self.names(40)
        self.assertEqual(set(answers), {(200, "A")})
        workers = yield self.workers()
        self.assertTrue(all(w["accepted"] > 0 for w in workers["workers"]), workers)  # the new one serves too


class LivenessTests(WorkersTestCase):
    @defer.inlineCallbacks
    def test_a_stopped_worker_is_named_unresponsive_then_killed_and_restarted(self):
        yield self.start_workers({"s1": self.origin("A")}, '[process]\nworker-timeout = "2s"\n')
        wedged = self.pids[0]
        self.addCleanup(lambda: os.kill(wedged, signal.SIGKILL) if _alive(wedged) else None)
        os.kill(wedged, signal.SIGSTOP)  # as a worker stuck in a blocking call or a busy loop
        started = reactor.seconds()
        (code, listed), (metrics_code, metrics) = yield defer.gatherResults([self.admin("workers"),
                                                                             self.admin("metrics")])
        self.assertLess(reactor.seconds() - started, 2 + 1 + 2)  # the timeout, a ping's interval, slack
        self.assertEqual((code, metrics_code), (200, 200), (listed, metrics))
        workers = json.loads(listed)
        self.assertEqual(workers["unresponsive_workers"], [0])
        self.assertEqual([(w["pid"], w["state"], w["accepted"] is None) for w in workers["workers"]],
                         [(wedged, "unresponsive", True), (self.pids[1], "serving", False)])
        self.assertIn(b"rubrisproxy_workers_unresponsive 1.0", metrics)  # worker 0's figures are missing
        self.assertIn(b'rubrisproxy_workers{state="unresponsive"} 1.0', metrics)
        self.assertIn(b'rubrisproxy_requests_total{frontend="web"}', metrics)  # worker 1's
        code, health = yield self.admin("healthz")  # before the restart (at least its 0.5 s backoff)
        self.assertEqual((code, json.loads(health)["workers_serving"]), (200, 1))
        yield self.process.wait_for(rb"worker 0 \(pid %d\) did not answer \w+ within 2s: unresponsive;" % wedged)
        match = yield self.process.wait_for(rb"worker 0 \(pid (?!%d\))(\d+)\) serving" % wedged, UP)
        self.assertFalse(_alive(wedged))  # killed (SIGKILL: a stopped process cannot act on SIGTERM), reaped
        self.assertEqual(self.process.output.count(b"unresponsive; killing it"), 1)
        workers = yield self.workers()
        self.pids = [w["pid"] for w in workers["workers"]]
        self.assertEqual(self.pids[0], int(match.group(1)))
        self.assertEqual([(w["state"], w["restarts"], w["unresponsive"], w["last_exit"]) for w in workers["workers"]],
                         [("serving", 1, 1, "signal 9, unresponsive"), ("serving", 0, 0, "")])
        self.assertEqual(workers["unresponsive_workers"], [])
        answers = yield self.names(40)  # the stopped worker's listener is closed: every new connection served
        self.assertEqual(set(answers), {(200, "A")})
        code, metrics = yield self.admin("metrics")
        self.assertIn(b'rubrisproxy_worker_unresponsive_total{worker="0"} 1.0', metrics)
        self.assertIn(b"rubrisproxy_workers_unresponsive 0.0", metrics)


class FakeChannel:
    """A worker's channel that answers each call at once (``answering``) or never."""

    transport = None

    def __init__(self, answering: bool) -> None:
        self.answering = answering
        self.calls: list[tuple[type, defer.Deferred[Any]]] = []

    def callRemote(self, command: type, **arguments: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((command, d))
        if self.answering:
            d.callback({"status": 200, "content_type": "application/json", "body": b'{"n": 1}'} if command is AdminCall
                       else {"answer": arguments["question"] + b"?"} if command is Query else {})
        return d


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)


class DeadlineTests(SynchronousTestCase):
    """The supervisor's deadlines and heartbeat on a :class:`task.Clock`, its workers' channels fakes: worker 0
    answers, worker 1 never does."""

    def setUp(self) -> None:
        config = ConfigTests.load(ConfigTests(), ConfigTests.SERVED + '[process]\nworkers = 2\nworker-timeout = "2s"\n')
        self.clock = task.Clock()
        self.supervisor = Supervisor(self.clock, config)
        self.events: list[dict[str, Any]] = []
        self.supervisor.log = Logger(observer=self.events.append)
        self.supervisor.state = SupervisorState.RUNNING
        for handle, answering in zip(self.supervisor.handles, (True, False), strict=True):
            handle.channel = FakeChannel(answering)
            handle.process = FakeProcess(100 + handle.index)
            handle.pid = handle.process.pid
            handle.ended = defer.Deferred()
            handle.state = HandleState.SERVING

    def logged(self, text: str) -> int:
        return sum(text in event["log_format"] for event in self.events)

    def test_an_unanswered_ping_makes_the_worker_unresponsive_and_killed_once(self) -> None:
        one, two = self.supervisor.handles
        self.supervisor.heartbeat.start()
        self.clock.advance(1.0)
        self.assertEqual([c for c, _ in two.channel.calls], [Ping])
        self.clock.advance(0.5)
        asked = self.supervisor.ask("GET", "frontends", "", b"", "test")
        self.clock.advance(0.5)
        self.assertEqual([c for c, _ in one.channel.calls], [Ping, AdminCall, Ping])
        self.assertEqual([c for c, _ in two.channel.calls], [Ping, AdminCall])
        self.assertNoResult(asked)
        self.clock.advance(1.0)  # worker 1's ping, 2 s unanswered
        self.assertEqual((one.state, two.state), (HandleState.SERVING, HandleState.UNRESPONSIVE))
        self.assertEqual((one.process.signals, two.process.signals), ([], [signal.SIGKILL]))
        answers = self.successResultOf(asked)  # answered at once by the one that answers, not at its own deadline
        self.assertEqual(([h for h, _ in answers.answered], answers.unanswered), ([one], (two,)))
        self.assertEqual(answers.values[0]["body"], b'{"n": 1}')
        self.assertEqual(self.supervisor.serving(), [one])
        self.clock.advance(5.0)
        self.assertEqual(two.unresponsive, 1)
        self.assertEqual(self.logged("did not answer {what}"), 1)
        two.process_ended(Failure(error.ProcessTerminated(signal=signal.SIGKILL)))
        self.assertEqual((two.state, two.last_exit, two.restarts), (HandleState.WAITING, "signal 9, unresponsive", 1))
        self.assertEqual(two.restart_timer.getTime(), self.clock.seconds() + 0.5)
        self.supervisor.state = SupervisorState.STOPPING  # the restart is not run here: no processes
        self.supervisor.heartbeat.stop()

    def test_a_question_gets_the_answers_of_the_workers_that_answer_by_the_deadline(self) -> None:
        one, two = self.supervisor.handles
        self.assertEqual(self.successResultOf(self.supervisor.asked(1, "state", b"sid")), [b"sid?"])  # worker 0's
        asked = self.supervisor.asked(0, "state", b"sid")  # worker 1 never answers
        self.assertEqual([c for c, _ in two.channel.calls], [Query])
        self.clock.advance(1.999)
        self.assertNoResult(asked)
        self.clock.advance(0.001)
        self.assertEqual(self.successResultOf(asked), [])
        self.assertEqual(two.state, HandleState.UNRESPONSIVE)
        two.state = HandleState.WAITING  # restarting: not asked
        self.assertEqual(self.successResultOf(self.supervisor.asked(0, "state", b"sid")), [])
        self.assertEqual(len(two.channel.calls), 1)

    def test_every_call_has_the_deadline(self) -> None:
        one, two = self.supervisor.handles
        for handle in (one, two):
            handle.channel.answering = False
        asked = self.supervisor.ask("GET", "frontends", "", b"", "test")
        applied = self.supervisor.apply(self.supervisor.config)
        self.clock.advance(1.999)
        self.assertNoResult(asked)
        self.clock.advance(0.001)
        answers = self.successResultOf(asked)
        self.assertEqual((answers.answered, answers.unanswered), ((), (one, two)))
        self.assertEqual(self.successResultOf(applied), [])  # nobody answered: restarted, each gets it then
        self.assertEqual([h.state for h in (one, two)], [HandleState.UNRESPONSIVE] * 2)
        self.assertEqual(self.logged("did not answer {what}"), 2)

    def test_an_answer_read_in_the_turn_its_deadline_passed_counts(self) -> None:
        two = self.supervisor.handles[1]
        call = two.call(Ping)
        (_, sent) = two.channel.calls[-1]
        self.clock.callLater(2.0, sent.callback, {})  # the supervisor was busy: read only after the deadline's timer
        self.clock.advance(2.0)
        self.assertEqual((self.successResultOf(call), two.state, two.process.signals), ({}, HandleState.SERVING, []))

    def test_a_worker_that_does_not_answer_its_start_is_killed_and_restarted_not_fatal(self) -> None:
        two = self.supervisor.handles[1]
        self.supervisor.state = SupervisorState.STARTING
        two.state = HandleState.SPAWNED
        self.supervisor.start_worker(two)
        self.assertEqual(two.state, HandleState.STARTING)
        self.clock.advance(2.0)
        self.assertEqual((two.state, two.process.signals), (HandleState.UNRESPONSIVE, [signal.SIGKILL]))
        self.assertEqual(self.logged("cannot serve"), 0)  # not the start failure that ends the proxy's start
        call = two.call(Start, config=b"", index=1, workers=2)
        self.clock.advance(2.0)
        self.assertIsInstance(self.failureResultOf(call).value, Unresponsive)  # a later call too, at its deadline
        self.assertEqual((two.unresponsive, self.logged("did not answer {what}")), (1, 1))  # declared once


class AdminTests(WorkersTestCase):
    @defer.inlineCallbacks
    def test_a_drain_and_an_added_server_reach_both_workers(self):  # type: ignore[no-untyped-def]
        yield self.start_workers({"s1": self.origin("A"), "s2": self.origin("B")})
        code, body = yield self.admin("backends/app/servers/s1/drain", b"POST", {})
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["state"], "drain")
        answers = yield self.names(30)
        self.assertEqual(set(answers), {(200, "B")})  # a worker that had not drained s1 would send it half
        code, body = yield self.admin("backends/app/servers", b"POST",
                                      {"name": "s3", "address": f"127.0.0.1:{self.origin('C')}", "maxconn": 5})
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["maxconn"], 6)  # each worker's share, 3, summed
        code, body = yield self.admin("backends/app/servers/s2/maint", b"POST", {})
        answers = yield self.names(30)
        self.assertEqual(set(answers), {(200, "C")})
        code, body = yield self.admin("backends/app")
        servers = {s["name"]: s for s in json.loads(body)["servers"]}
        self.assertEqual({n: s["state"] for n, s in servers.items()}, {"s1": "drain", "s2": "maint", "s3": "up"})
        self.assertEqual(servers["s3"]["total"], 30)  # summed over the workers

    @defer.inlineCallbacks
    def test_a_restarted_worker_gets_the_admin_actions_and_the_reload(self):  # type: ignore[no-untyped-def]
        servers = {"s1": self.origin("A"), "s2": self.origin("B")}
        yield self.start_workers(servers)
        yield self.admin("backends/app/servers/s1/drain", b"POST", {})
        self.write_config(servers,
                          '[[frontends.web.routes]]\npath-prefix = "/denied"\ndeny = 403\n')
        code, body = yield self.admin("reload", b"POST", {})
        self.assertEqual(code, 200, body)
        self.assertIn("frontend web reconfigured", json.loads(body)["changes"])
        os.kill(self.pids[0], signal.SIGKILL)
        yield self.process.wait_for(rb"worker 0 \(pid (?!%d\))\d+\) serving" % self.pids[0], UP)
        workers = yield self.workers()
        self.pids = [w["pid"] for w in workers["workers"]]
        answers = yield self.names(30)
        self.assertEqual(set(answers), {(200, "B")})
        answers = yield self.names(20, b"/denied")
        self.assertEqual({status for status, _ in answers}, {403})

    @defer.inlineCallbacks
    def test_sighup_reloads_every_worker_once_checked(self):  # type: ignore[no-untyped-def]
        servers = {"s1": self.origin("A")}
        yield self.start_workers(servers)
        with open(self.config_path, "a") as f:
            f.write('[timeouts]\nserver = "forever"\n')
        self.process.transport.signalProcess("HUP")
        yield self.process.wait_for(rb"reload refused, nothing changed: timeouts.server")
        added = free_port()
        self.write_config(servers, '[[frontends.web.routes]]\npath-prefix = "/denied"\ndeny = 403\n', ports=(added,))
        self.process.transport.signalProcess("HUP")
        yield self.process.wait_for(rb"reloaded \S+ in 2 workers")
        answers = yield self.names(30, b"/denied")
        self.assertEqual({status for status, _ in answers}, {403})
        self.assertEqual(self.process.output.count(b"reloaded the configuration"), 2)  # each worker applied it
        self.assertEqual(self.process.output.count(b"listening on tcp:%d" % added), 2)  # the new listener: both
        before = yield self.workers()
        self.proxy_port = added
        answers = yield self.names(40)
        self.assertEqual(set(answers), {(200, "A")})
        after = yield self.workers()
        spread = [a["accepted"] - b["accepted"] for a, b in zip(after["workers"], before["workers"], strict=True)]
        self.assertTrue(all(n > 0 for n in spread), spread)  # the kernel spreads the new port over both

    @defer.inlineCallbacks
    def test_health_checks_probe_once_and_reach_both_workers(self):  # type: ignore[no-untyped-def]
        dead = free_port()
        yield self.start_workers({"s1": self.origin("A"), "s2": dead}, health="tcp")
        yield self.process.wait_for(rb"server app/s2 is DOWN")
        answers = yield self.names(30)
        self.assertEqual(set(answers), {(200, "A")})
        self.assertEqual(self.process.output.count(b"server app/s2 is DOWN"), 1)  # one prober: worker 0
        code, body = yield self.admin("backends/app")
        servers = {s["name"]: s for s in json.loads(body)["servers"]}
        self.assertEqual(servers["s2"]["state"], "down")


class StopTests(WorkersTestCase):
    @defer.inlineCallbacks
    def test_sigterm_drains_every_worker_then_exits(self):  # type: ignore[no-untyped-def]
        slow = Named("slow", delay=1.0)
        yield self.start_workers({"s1": self.start_web_origin(slow)})
        clients = []
        for _ in range(6):  # on either worker, or both
            client = yield self.connect()
            client.send(get(b"/", b"Connection: close\r\n"))
            clients.append(client)
        yield self.poll(lambda: slow.seen == 6, "every request in flight at the origin")
        self.process.transport.signalProcess("TERM")
        responses = yield defer.gatherResults([c.responses(1) for c in clients])
        self.assertEqual({(r.status, r.body) for (r,) in responses}, {(200, b"slow")})  # in flight: finished
        yield self.process.ended
        self.assertEqual(self.process.signal, signal.SIGTERM)
        for index, pid in enumerate(self.pids):
            self.assertIn(b"worker %d (pid %d) stopped (exit status 0)" % (index, pid), self.process.output)
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertIn(b"all workers stopped", self.process.output)
        self.assertEqual(self.process.output.count(b"stopped accepting; draining"), 2)

    @defer.inlineCallbacks
    def test_sigterm_to_every_process_at_once_as_systemd_sends_it(self):  # type: ignore[no-untyped-def]
        yield self.start_workers({"s1": self.origin("A")})
        self.process.transport.signalProcess(signal.SIGUSR1)  # passed on: each reopens its log files, and lives
        yield self.process.wait_for(rb"(?s)(log files reopened.*){3}")
        answers = yield self.names(10)
        self.assertEqual(set(answers), {(200, "A")})
        for pid in [self.process.transport.pid, *self.pids]:
            os.kill(pid, signal.SIGTERM)
        yield self.process.ended
        self.assertEqual(self.process.signal, signal.SIGTERM)
        self.assertIn(b"all workers stopped", self.process.output)
        self.assertEqual(self.process.output.count(b"stopped (exit status 0)"), 2, self.process.output.decode()[-3000:])
        self.assertNotIn(b"Traceback", self.process.output)

    @defer.inlineCallbacks
    def test_a_second_proxy_on_the_same_ports_is_refused(self):  # type: ignore[no-untyped-def]
        yield self.start_workers({"s1": self.origin("A")})
        second = run_twistd("--listen", f"tcp:{self.proxy_port}:interface=127.0.0.1", "--backend", "127.0.0.1:9",
                            "--workers", "2")
        self.addCleanup(self._kill, second)
        code = yield second.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"cannot listen on tcp:%d" % self.proxy_port, second.output)

    @defer.inlineCallbacks
    def test_workers_whose_supervisor_is_killed_stop_by_themselves(self):  # type: ignore[no-untyped-def]
        yield self.start_workers({"s1": self.origin("A")})
        os.kill(self.process.transport.pid, signal.SIGKILL)
        yield self.process.ended
        for _ in range(100):  # their channel closed: each stops as on SIGTERM (nothing in flight: at once)
            alive = [pid for pid in self.pids if _alive(pid)]
            if not alive:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(alive, [])

    @defer.inlineCallbacks
    def test_a_port_another_program_holds_ends_the_start(self):  # type: ignore[no-untyped-def]
        taken = reactor.listenTCP(0, server.Site(Named("x")), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        process = run_twistd("--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", "127.0.0.1:9",
                             "--workers", "2")
        self.addCleanup(self._kill, process)
        code = yield process.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"cannot listen on tcp:%d" % port, process.output)
        self.assertNotIn(b"serving", process.output)


class SocketIOTests(WorkersTestCase):
    """Real python-socketio servers and the real Socket.IO JavaScript client through ``--workers 2``: with 24
    clients, some client's polling requests and its upgrade land on different workers; each client's requests
    must still reach one server (their learned sids are shared between the workers: cluster.BusTransport)."""

    @defer.inlineCallbacks
    def test_each_javascript_client_reaches_one_server_across_workers(self):  # type: ignore[no-untyped-def]
        ports = yield defer.gatherResults([start_server(self, "A"), start_server(self, "B")])
        yield self.start_workers({"s1": ports[0], "s2": ports[1]})
        report = yield spawn_node_many(self, f"http://127.0.0.1:{self.proxy_port}", 24)
        self.assertEqual(len(report), 24, report)
        failed = [c for c in report if (c["error"], c["transport"]) != (None, "websocket") or c["polling"] != c["websocket"]]
        if failed:  # with what the proxy logged (its workers' access lines come in batches: a moment later)
            yield run_reactor_for(2)
            self.fail(f"{failed}\n{self.process.output.decode(errors='replace')}")
        workers = yield self.workers()
        self.assertTrue(all(w["requests"] > 0 for w in workers["workers"]), workers)


class ConfigTests(SynchronousTestCase):
    def load(self, text: str, **flags: Any) -> ProxyConfig:
        return apply_command_line(config_from_document(tomllib.loads(text)), CommandLine(**flags))

    SERVED = '[frontends.web]\nlisten = ["tcp:8080"]\n[backends.default]\nservers = ["127.0.0.1:9001"]\n'

    def test_workers_from_the_file_and_the_flag(self) -> None:
        self.assertEqual(self.load(self.SERVED).process.workers, 1)
        self.assertEqual(self.load(self.SERVED + "[process]\nworkers = 4\n").process.workers, 4)
        self.assertEqual(self.load(self.SERVED, workers="3").process.workers, 3)
        self.assertEqual(self.load(self.SERVED + '[process]\nworkers = "auto"\n').process.workers,
                         len(os.sched_getaffinity(0)))

    def test_bad_counts_name_their_key(self) -> None:
        for value in ("0", "257", "true", '"many"', "1.5"):
            with self.assertRaisesRegex(ConfigError, r"^process\.workers: "):
                self.load(self.SERVED + f"[process]\nworkers = {value}\n")
        with self.assertRaisesRegex(ConfigError, r"^--workers: "):
            self.load(self.SERVED, workers="none")
        with self.assertRaisesRegex(ConfigError, r"^process\.typo: "):
            self.load(self.SERVED + "[process]\ntypo = 1\n")

    def test_worker_timeout(self) -> None:
        self.assertEqual(self.load(self.SERVED).process.worker_timeout, 5.0)
        loaded = self.load(self.SERVED + '[process]\nworker-timeout = "2s"\n', workers="2").process
        self.assertEqual((loaded.workers, loaded.worker_timeout), (2, 2.0))  # --workers keeps the file's timeout
        for value in ('"50ms"', "0", "-1", "true", '"soon"'):
            with self.assertRaisesRegex(ConfigError, r"^process\.worker-timeout: "):
                self.load(self.SERVED + f"[process]\nworker-timeout = {value}\n")

    def test_what_several_workers_cannot_share_is_refused(self) -> None:
        for listen in ("unix:/tmp/x.sock", "tcp:0:interface=127.0.0.1", "tcp:port=0"):
            text = self.SERVED.replace('"tcp:8080"', f'"{listen}"') + "[process]\nworkers = 2\n"
            with self.assertRaisesRegex(ConfigError, r"^frontends\.web\.listen: .*SO_REUSEPORT"):
                self.load(text)
            self.load(text.replace("workers = 2", "workers = 1"))  # one process: as before
        with self.assertRaisesRegex(ConfigError, r"^process\.workers: the demo"):
            self.load("", workers="2")

    def test_each_worker_takes_a_share_of_maxconn_rounded_up(self) -> None:
        config = self.load('[frontends.web]\nlisten = ["tcp:8080"]\n[admin]\nlisten = ["tcp:9000:interface=127.0.0.1"]\n'
                           '[[backends.default.servers]]\nname = "a"\naddress = "127.0.0.1:1"\nmaxconn = 5\n'
                           '[[backends.default.servers]]\nname = "b"\naddress = "127.0.0.1:2"\n')
        shared = worker_config(config, 2)
        self.assertEqual([s.maxconn for s in shared.backends["default"].servers], [3, 0])
        self.assertEqual(shared.admin.listen, ())  # the supervisor's
        self.assertEqual([share(m, 4) for m in (0, 1, 4, 5, 100)], [0, 1, 1, 2, 25])


class MergeTests(SynchronousTestCase):
    def test_counts_are_summed_and_the_rest_is_worker_0_s(self) -> None:
        one = {"backends": [{"name": "app", "queue": 1, "servers": [
            {"name": "s1", "state": "up", "weight": 2, "total": 10, "responses": {"2xx": 9}, "state_seconds": 5.0}]}]}
        two = {"backends": [{"name": "app", "queue": 2, "servers": [
            {"name": "s1", "state": "down", "weight": 2, "total": 7, "responses": {"2xx": 7}, "state_seconds": 4.0},
            {"name": "s2", "state": "up", "weight": 1, "total": 1, "responses": {"2xx": 1}, "state_seconds": 1.0}]}]}
        merged = merge_json([one, two])
        (app,) = merged["backends"]
        self.assertEqual(app["queue"], 3)
        self.assertEqual(app["servers"], [
            {"name": "s1", "state": "up", "weight": 2, "total": 17, "responses": {"2xx": 16}, "state_seconds": 5.0},
            {"name": "s2", "state": "up", "weight": 1, "total": 1, "responses": {"2xx": 1}, "state_seconds": 1.0}])
        sessions = merge_json([{"current": [{"id": "a", "age": 1.0}]}, {"current": [{"id": "b", "age": 2.0}]}])
        self.assertEqual(sessions, {"current": [{"id": "a", "age": 1.0}, {"id": "b", "age": 2.0}]})

    def test_metrics_are_summed_but_states(self) -> None:
        text = ('# HELP rubrisproxy_requests Requests received.\n# TYPE rubrisproxy_requests counter\n'
                'rubrisproxy_requests_total{frontend="web"} %d.0\n'
                '# HELP rubrisproxy_server_up Up.\n# TYPE rubrisproxy_server_up gauge\n'
                'rubrisproxy_server_up{backend="app",server="s1"} 1.0\n')
        merged = merge_metrics([(text % 3).encode(), (text % 4).encode()])
        self.assertIn(b'rubrisproxy_requests_total{frontend="web"} 7.0', merged)
        self.assertIn(b'rubrisproxy_server_up{backend="app",server="s1"} 1.0', merged)

    def test_csv_cells_are_summed_by_row(self) -> None:
        head = "# pxname,svname,scur,weight,status\n"
        merged = merge_csv([head + "app,s1,3,2,UP\n", head + "app,s1,4,2,UP\n"])
        self.assertEqual(merged, head + "app,s1,7,2,UP\n")


class EarlierSupervisorChannel(amp.AMP):
    """A supervisor's end of the channel as an earlier version had it: it knows Hello, and no Ask."""

    @Hello.responder
    def hello(self, version: int, pid: int) -> dict[str, Any]:
        return {}


class ChannelTests(SynchronousTestCase):
    def test_a_supervisor_that_takes_no_questions_is_asked_once_and_said_so_once(self) -> None:
        clock = task.Clock()
        worker = Worker(clock, MainLogObserver(StreamOutput(StringIO())))
        events: list[dict[str, Any]] = []
        worker.log = Logger(observer=events.append)
        _, _, pump = iosim.connectedServerAndClient(EarlierSupervisorChannel, lambda: WorkerChannel(worker), clock=clock)
        pump.flush()
        sent: list[bytes] = []
        pump.client.transport.write = lambda data, write=pump.client.transport.write: (sent.append(data), write(data))
        answers: list[list[bytes]] = []
        for _ in range(3):
            worker.ask("state", b"sid-1", answers.append)
            pump.flush()
        self.assertEqual(answers, [[], [], []])
        self.assertEqual(sum(b"Ask" in data for data in sent), 1)  # the first question only
        self.assertEqual([e["log_level"].name for e in events], ["info"])
        self.assertIsNotNone(worker.channel)  # the channel serves on

    def test_a_question_goes_through_the_supervisor_to_the_sibling_and_back(self) -> None:
        config = ConfigTests.load(ConfigTests(), ConfigTests.SERVED + "[process]\nworkers = 2\n")
        clock = task.Clock()
        supervisor = Supervisor(clock, config)
        workers, pumps = [], []
        for handle in supervisor.handles:
            worker = Worker(clock, MainLogObserver(StreamOutput(StringIO())))
            _, _, pump = iosim.connectedServerAndClient(lambda h=handle: SupervisorChannel(h),
                                                        lambda w=worker: WorkerChannel(w), clock=clock)
            pump.flush()  # the worker's hello
            handle.state = HandleState.SERVING
            workers.append(worker)
            pumps.append(pump)
        workers[1].respond("state", lambda question, sender: b"%s, asked by %d" % (question, sender))
        workers[0].respond("state", lambda question, sender: b"")  # nothing to say: not among the answers
        answers: list[list[bytes]] = []
        workers[0].ask("state", b"sid-1", answers.append)
        for _ in range(3):
            for pump in pumps:
                pump.flush()
        self.assertEqual(answers, [[b"sid-1, asked by 0"]])
        workers[1].ask("state", b"sid-2", answers.append)
        for _ in range(3):
            for pump in pumps:
                pump.flush()
        self.assertEqual(answers[1:], [[]])
        for call in clock.getDelayedCalls():  # the supervisor's start of each worker, not run here
            call.cancel()

    def test_values_past_64k_travel_in_pieces(self) -> None:
        payload = os.urandom(200_000)
        box = Deliver.makeArguments({"topic": "t", "payload": payload, "sender": 1}, None)
        self.assertTrue(all(len(value) < 65536 for value in box.values()))
        self.assertEqual(Deliver.parseArguments(box, None), {"topic": "t", "payload": payload, "sender": 1})
        empty = Deliver.makeArguments({"topic": "t", "payload": b"", "sender": -1}, None)
        self.assertEqual(Deliver.parseArguments(empty, None)["payload"], b"")
