"""The logs an operator reads: the main log's lines (text or JSON), start-up lines, log files reopened on a
signal, access lines written in batches; and a real twistd run whose every line is checked."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from typing import Any

from twisted.application.service import Application, IService
from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel, eventAsText, formatEvent, globalLogPublisher
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.trial import unittest

from rubrisproxy.accesslog import AccessLog, AccessRecord
from rubrisproxy.backend import Server
from rubrisproxy.config import CommandLine, ConfigError, ServerConfig, config_from_document, load_config
from rubrisproxy.http import HTTPError, RequestHead, ResponseHead, quoted
from rubrisproxy.logoutput import ACCESS_LINES, EventOutput, FileOutput, StreamOutput, Timestamps, TurnBatchedOutput
from rubrisproxy.mainlog import LoggedService, MainLogObserver, ReopenOnSignal, _message, twistd_output
from rubrisproxy.service import AccessLogService, build_service
from rubrisproxy.startup import startup_lines
from rubrisproxy.websocket._handshake import check_switch, check_upgrade

from .helpers import EchoResource, ProxyTestCase, get
from .test_plugin import ROOT, TWISTD, Twistd
from .wsecho import EchoBackendFactory, connect_client

#: 2025-12-06T06:40:01.123Z
AT = 1765003201.1234
ISO = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
#: What a Python repr looks like in a line: <Name ...>, Name(field=...), b'...' or b"...".
REPR = re.compile(rb"<[A-Za-z_][\w.]* [^>]*>|\b[A-Z]\w*Address\(|\w+\(\w+=|(?<![\w\\])b'|(?<![\w\\])b\"")


def record(at: float = AT, **changes: Any) -> AccessRecord:
    fields: dict[str, Any] = dict(
        at=at, client="127.0.0.1", frontend="web", method="GET", target="/", version="1.1", status=200,
        bytes_in=0, bytes_out=10, backend="app", server="s1", wait_ms=0.1, queue_ms=0.0, connect_ms=0.2,
        response_ms=0.3, total_ms=0.5, termination="ok",
    )
    fields.update(changes)
    return AccessRecord(**fields)


class MemoryOutput:
    """Keeps the batches written to it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.reopened = 0
        self.closed = False

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]

    def write_lines(self, lines: list[str]) -> None:
        self.batches.append(list(lines))

    def reopen(self) -> None:
        self.reopened += 1

    def close(self) -> None:
        self.closed = True


class TimestampTests(unittest.TestCase):
    def test_iso_8601_utc_with_milliseconds(self):
        stamp = Timestamps()
        self.assertEqual(stamp(AT), "2025-12-06T06:40:01.123Z")
        self.assertEqual(stamp(AT + 0.8765), "2025-12-06T06:40:01.999Z")  # truncated, never the next second
        self.assertEqual(stamp(AT + 59), "2025-12-06T06:41:00.123Z")
        self.assertEqual(stamp(1765003200.0), "2025-12-06T06:40:00.000Z")


class MainLogObserverTests(unittest.TestCase):
    def event(self, **fields: Any) -> dict[str, Any]:
        event = {"log_time": AT, "log_level": LogLevel.warn, "log_namespace": "rubrisproxy.test",
                 "log_format": "server {server} is {state}", "server": "app/s1", "state": "DOWN"}
        event.update(fields)
        return event

    def test_text_line(self):
        output = MemoryOutput()
        MainLogObserver(output)(self.event())
        self.assertEqual(output.lines, ["2025-12-06T06:40:01.123Z [rubrisproxy.test#warn] server app/s1 is DOWN"])

    def test_text_a_message_of_several_lines_cannot_pass_for_other_lines(self):
        output = MemoryOutput()
        MainLogObserver(output)(self.event(state="DOWN\n2025-12-06T06:40:02.000Z [rubrisproxy#info] all is well"))
        (line,) = output.lines
        self.assertEqual(line.split("\n")[1], "\t2025-12-06T06:40:02.000Z [rubrisproxy#info] all is well")

    def test_text_traceback_on_the_lines_after(self):
        output = MemoryOutput()
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        MainLogObserver(output)(self.event(log_failure=failure, log_level=LogLevel.critical))
        (line,) = output.lines
        first, *rest = line.split("\n")
        self.assertTrue(first.endswith("server app/s1 is DOWN"))
        self.assertTrue(rest and all(each.startswith("\t") for each in rest))
        self.assertIn("ZeroDivisionError", line)

    def test_json_line(self):
        output = MemoryOutput()
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            failure = Failure()
        observer = MainLogObserver(output, "json")
        observer(self.event())
        observer(self.event(log_failure=failure))
        plain, failed = (json.loads(line) for line in output.lines)
        self.assertEqual(plain, {"time": "2025-12-06T06:40:01.123Z", "level": "warn", "namespace": "rubrisproxy.test",
                                 "message": "server app/s1 is DOWN"})
        self.assertIn("ZeroDivisionError", failed["traceback"])
        self.assertNotIn("\n", output.lines[1])

    def test_access_lines_are_written_as_they_are(self):
        for format in ("text", "json"):
            output = MemoryOutput()
            lines = ['{"time":"x","event":"request"}', '{"time":"y","event":"request"}']
            MainLogObserver(output, format)({"log_time": AT, ACCESS_LINES: lines, "log_format": "{access_text}"})
            self.assertEqual(output.lines, lines)

    def test_text_access_lines_in_a_json_main_log_become_objects(self):
        output = MemoryOutput()
        line = '2025-12-06T06:40:01.123Z 127.0.0.1 web app/s1 0/0/0/0/1 200 0 10 ok retries=0 "GET / HTTP/1.1"'
        MainLogObserver(output, "json")({"log_time": AT, ACCESS_LINES: [line]})
        (written,) = output.lines
        self.assertEqual(json.loads(written)["message"], line)

    def test_a_batch_seen_by_another_observer_is_its_lines(self):
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        EventOutput("rubrisproxy.access").write_lines(["one", "two"])
        (event,) = [e for e in events if e.get("log_namespace") == "rubrisproxy.access"]
        self.assertEqual(event[ACCESS_LINES], ["one", "two"])
        self.assertEqual(event["log_format"].format(**event), "one\ntwo")


class TwistdOutputTests(unittest.TestCase):
    """Where the main log goes, from twistd's own options: where twistd itself would write."""

    def test_foreground_without_a_file_is_standard_output(self):
        for options in ({"nodaemon": True, "logfile": None}, {"nodaemon": True, "logfile": "-"}):
            output = twistd_output(options)
            self.assertIsInstance(output, StreamOutput)

    def test_a_file(self):
        path = self.mktemp()
        output = twistd_output({"nodaemon": True, "logfile": path})
        self.addCleanup(output.close)  # type: ignore[union-attr]
        self.assertIsInstance(output, FileOutput)
        self.assertEqual(output.path, os.path.abspath(path))  # type: ignore[union-attr]

    def test_a_daemon_writes_twistd_log_and_cannot_use_standard_output(self):
        cwd = os.getcwd()
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        output = twistd_output({"nodaemon": False, "logfile": None})
        self.addCleanup(output.close)  # type: ignore[union-attr]
        self.assertEqual(output.path, os.path.join(directory, "twistd.log"))  # type: ignore[union-attr]
        with self.assertRaises(SystemExit):
            twistd_output({"nodaemon": False, "logfile": "-"})

    def test_logger_and_syslog_keep_twistds_observer(self):
        self.assertIsNone(twistd_output({"nodaemon": True, "logger": "some.factory"}))
        self.assertIsNone(twistd_output({"nodaemon": True, "syslog": True}))

    def test_the_observer_is_given_to_the_application(self):
        application = Application("rubrisproxy")
        observer = MainLogObserver(MemoryOutput())
        LoggedService(build_service(load_config(CommandLine(backends=["127.0.0.1:1"])), MemoryReactorClock()),
                      observer).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)
        self.assertEqual(len(list(IService(application))), 1)


class TurnBatchedOutputTests(unittest.TestCase):
    """The main log's lines of one reactor turn are written together, on the next turn."""

    def setUp(self) -> None:
        self.addCleanup(setattr, threadable, "ioThread", threadable.ioThread)
        threadable.registerAsIOThread()  # as the reactor does as it starts (trial's leaves it unset)
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.memory = MemoryOutput()
        self.output = TurnBatchedOutput(self.memory, self.reactor)

    def test_a_turns_lines_are_one_batch_written_on_the_next_turn(self):
        self.output.write_lines(["a"])
        self.output.write_lines(["b", "c"])
        self.assertEqual(self.memory.batches, [])
        self.reactor.advance(0)
        self.assertEqual(self.memory.batches, [["a", "b", "c"]])
        self.output.write_lines(["d"])
        self.reactor.advance(0)
        self.assertEqual(self.memory.batches, [["a", "b", "c"], ["d"]])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_lines_from_another_thread_go_at_once(self):
        self.output.write_lines(["held"])
        thread = threading.Thread(target=self.output.write_lines, args=(["from a thread"],))
        thread.start()
        thread.join()
        self.assertEqual(self.memory.lines, ["from a thread"])
        self.reactor.advance(0)
        self.assertEqual(self.memory.lines, ["from a thread", "held"])

    def test_without_a_running_reactor_lines_go_at_once_after_those_held(self):
        self.output.write_lines(["held"])
        self.reactor.running = False
        self.output.write_lines(["stopped"])
        self.assertEqual(self.memory.batches, [["held", "stopped"]])
        self.output.write_lines(["after"])
        self.assertEqual(self.memory.batches, [["held", "stopped"], ["after"]])

    def test_what_is_held_is_written_as_the_reactor_shuts_down_or_the_file_is_reopened_or_closed(self):
        self.output.write_lines(["a"])
        for trigger, args, kwargs in self.reactor.triggers["after"]["shutdown"]:
            trigger(*args, **kwargs)
        self.assertEqual(self.memory.lines, ["a"])
        self.output.write_lines(["b"])
        self.output.reopen()
        self.assertEqual((self.memory.lines, self.memory.reopened), (["a", "b"], 1))
        self.output.write_lines(["c"])
        self.output.close()
        self.assertEqual((self.memory.lines, self.memory.closed), (["a", "b", "c"], True))


class FileOutputTests(unittest.TestCase):
    def test_reopen_after_the_file_was_moved(self):
        """As logrotate does: move the file away, signal; new lines go to a new file at the path."""
        path = self.mktemp()
        output = FileOutput(path)
        self.addCleanup(output.close)
        output.write_lines(["before"])
        os.rename(path, path + ".1")
        output.write_lines(["still the old file"])
        output.reopen()
        output.write_lines(["after"])
        with open(path + ".1") as f:
            self.assertEqual(f.read(), "before\nstill the old file\n")
        with open(path) as f:
            self.assertEqual(f.read(), "after\n")

    def test_a_reopen_that_fails_keeps_the_old_file(self):
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        output = FileOutput(os.path.join(directory, "access.log"))
        self.addCleanup(output.close)
        os.rename(directory, directory + ".moved")  # the path's directory is gone: it cannot be opened
        output.reopen()
        output.write_lines(["kept"])
        with open(os.path.join(directory + ".moved", "access.log")) as f:
            self.assertEqual(f.read(), "kept\n")

    def test_a_failing_write_drops_its_lines_and_says_so_once(self):
        if not os.path.exists("/dev/full"):
            raise unittest.SkipTest("no /dev/full here")
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        output = FileOutput("/dev/full")  # every write fails: no space left on the device
        self.addCleanup(output.close)
        access_log = AccessLog(output=output, batch=1)
        for _ in range(3):
            access_log.write(record())  # the request that logs is not failed by it
        self.assertEqual(output.dropped, 3)
        errors = [e for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("cannot write to /dev/full", errors[0]["log_format"].format(**errors[0]))
        output.path = self.mktemp()  # as if space came back
        output.reopen()
        access_log.write(record())
        with open(output.path) as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        self.assertIn("3 lines were dropped so far", formatEvent(events[-1]))

    def test_lines_after_close_are_dropped_not_raised(self):
        path = self.mktemp()
        output = FileOutput(path)
        output.write_lines(["one"])
        output.close()
        output.write_lines(["two"])
        output.reopen()
        with open(path) as f:
            self.assertEqual(f.read(), "one\n")


class AccessLogFlushTests(unittest.TestCase):
    """Lines are held and written once a second on the reactor's clock, or when a batch is full; on stop,
    nothing held is lost and later lines are written at once; the file is closed after shutdown."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.output = MemoryOutput()
        self.access_log = AccessLog(output=self.output, batch=4)
        self.service = AccessLogService(self.access_log, self.clock)
        self.service.startService()

    def test_flushed_within_a_second(self):
        self.access_log.write(record())
        self.clock.advance(0.99)
        self.assertEqual(self.output.batches, [])
        self.clock.advance(0.01)
        (batch,) = self.output.batches
        self.assertEqual(len(batch), 1)
        self.clock.advance(5)
        self.assertEqual(len(self.output.batches), 1)  # nothing new: no empty writes

    def test_a_full_batch_is_written_at_once(self):
        for _ in range(4):
            self.access_log.write(record())
        self.assertEqual([len(batch) for batch in self.output.batches], [4])

    def test_stop_writes_what_is_held_then_each_line(self):
        self.access_log.write(record())
        self.access_log.write(record())
        self.service.stopService()
        self.assertEqual([len(batch) for batch in self.output.batches], [2])
        self.access_log.write(record(status=503))  # a connection still draining
        self.assertEqual([len(batch) for batch in self.output.batches], [2, 1])
        self.assertFalse(self.output.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [(close, args, kwargs)] = self.clock.triggers["after"]["shutdown"]
        close(*args, **kwargs)
        self.assertTrue(self.output.closed)

    def test_reopen_writes_what_is_held_first(self):
        self.access_log.write(record())
        self.access_log.reopen()
        self.assertEqual((len(self.output.lines), self.output.reopened), (1, 1))

    def test_restarted_it_holds_lines_again(self):
        self.service.stopService()
        self.service.startService()
        self.access_log.write(record())
        self.assertEqual(self.output.batches, [])
        self.assertEqual(len(self.clock.triggers["after"]["shutdown"]), 1)


class ReopenOnSignalTests(unittest.TestCase):
    def test_sigusr1_reopens_from_the_reactor_thread_and_stop_restores_the_handler(self):
        calls: list[Any] = []

        class Reactor:
            def callFromThread(self, f: Any, *args: Any) -> None:
                calls.append(f)

        reopened: list[str] = []
        previous = signal.getsignal(signal.SIGUSR1)
        service = ReopenOnSignal([lambda: reopened.append("main"), lambda: reopened.append("access")], Reactor())
        service.startService()
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
        finally:
            service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), previous)
        (call,) = calls
        self.assertEqual(reopened, [])  # only in the reactor thread
        call()
        self.assertEqual(reopened, ["main", "access"])


class NoReprTests(unittest.TestCase):
    def test_a_server_reads_as_its_name_and_address(self):
        server = Server(ServerConfig(name="s1", host="127.0.0.1", port=8080), "default")
        self.assertEqual(str(server), "default/s1 (http://127.0.0.1:8080)")
        self.assertEqual(f"{server}", "default/s1 (http://127.0.0.1:8080)")

    def test_quoted_bytes(self):
        self.assertEqual(quoted(b""), '""')
        self.assertEqual(quoted(b'a"b\\c\x00\xff'), '"a\\"b\\\\c\\x00\\xff"')
        self.assertEqual(quoted(b"x" * 70), '"' + "x" * 64 + '"...')


class HandshakeDetailTests(unittest.TestCase):
    """What a refused WebSocket handshake logs names the bytes sent, or their absence, never a repr."""

    KEY = (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")

    def upgrade(self, *headers: tuple[bytes, bytes]) -> RequestHead:
        head = RequestHead(b"GET", b"/", b"1.1", [(b"Upgrade", b"websocket"), self.KEY, *headers])
        head.upgrade, head.connection = True, frozenset({b"upgrade"})
        return head

    def test_no_origin_where_origins_are_listed(self):
        head = self.upgrade((b"Sec-WebSocket-Version", b"13"))
        with self.assertRaises(HTTPError) as caught:
            check_upgrade(head, origins=("https://app.example",))
        self.assertEqual((caught.exception.status, caught.exception.detail),
                         (403, "an upgrade without Origin is not allowed here"))

    def test_an_origin_not_listed(self):
        head = self.upgrade((b"Sec-WebSocket-Version", b"13"), (b"Origin", b"https://evil.example\xff"))
        with self.assertRaises(HTTPError) as caught:
            check_upgrade(head, origins=("https://app.example",))
        self.assertEqual(caught.exception.detail, 'Origin "https://evil.example\\xff" is not allowed')

    def test_a_bad_version(self):
        for sent, shown in ((None, '""'), (b"\x01", '"\\x01"')):
            headers = [(b"Sec-WebSocket-Version", sent)] if sent is not None else []
            with self.assertRaises(HTTPError) as caught:
                check_upgrade(self.upgrade(*headers))
            self.assertEqual(caught.exception.detail, f"unsupported Sec-WebSocket-Version {shown}")

    def test_a_backend_answer_without_upgrade(self):
        head = ResponseHead(101, b"Switching Protocols", b"1.1", [])
        self.assertEqual(check_switch(head, self.KEY[1], ()), "no Upgrade header")
        head = ResponseHead(101, b"Switching Protocols", b"1.1", [(b"Upgrade", b"h2c")])
        self.assertEqual(check_switch(head, self.KEY[1], ()), 'Upgrade is "h2c", not websocket')


class LogConfigTests(unittest.TestCase):
    def test_format_from_the_file_and_the_flag(self):
        self.assertEqual(config_from_document({}).log.format, "text")
        self.assertEqual(config_from_document({"log": {"format": "json"}}).log.format, "json")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[log]\nformat = "json"\n')
        config = load_config(CommandLine(config_path=path, backends=["127.0.0.1:1"], log_format="text"))
        self.assertEqual(config.log.format, "text")

    def test_bad_values_name_their_key(self):
        for document, key in (({"log": {"format": "xml"}}, "log.format"), ({"log": {"level": "debug"}}, "log"),
                              ({"log": "json"}, "log")):
            with self.assertRaises(ConfigError) as caught:
                config_from_document(document)
            self.assertTrue(str(caught.exception).startswith(key), str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(backends=["127.0.0.1:1"], log_format="yaml"))
        self.assertIn("--log-format", str(caught.exception))


class StartupLinesTests(unittest.TestCase):
    def test_version_file_frontends_backends_and_checks(self):
        config = config_from_document({
            "frontends": {"web": {"listen": ["tcp:8080", "tcp6:8080"], "backend": "app"}},
            "backends": {"app": {"servers": ["10.0.0.1:80", "https://10.0.0.2:443"],
                                 "health": {"check": "http", "path": "/health", "interval": "5s"}},
                         "quiet": {"servers": ["10.0.0.3:80"], "health": {"check": "none"}}},
        })
        lines = startup_lines(config, "/etc/rubrisproxy.toml")
        self.assertRegex(lines[0], r"^rubrisproxy \d+\.\d+\.\d+\S* starting; configuration: /etc/rubrisproxy.toml$")
        self.assertIn("frontend web: listen tcp:8080, tcp6:8080; backend app", lines)
        self.assertIn("backend app: s1 http://10.0.0.1:80, s2 https://10.0.0.2:443; roundrobin; http health checks "
                      "every 5s (rise 2, fall 3, GET /health expecting 200-399)", lines)
        self.assertIn("backend quiet: s1 http://10.0.0.3:80; roundrobin; no health checks", lines)
        self.assertIn("admin API: off", lines)
        self.assertIn("access log: the main log (text, with connection lines); main log format: text", lines)

    def test_the_admin_listener_demo_mode_opens_is_reported(self):
        demo = load_config(CommandLine(demo=True))
        self.assertIn("admin API and stats page: tcp:9000:interface=127.0.0.1 (demo mode; --admin sets another)",
                      startup_lines(demo, None))
        demo = load_config(CommandLine(demo=True, admin=["tcp:9100:interface=127.0.0.1"]))
        self.assertIn("admin API: tcp:9100:interface=127.0.0.1", startup_lines(demo, None))


def check_lines(case: unittest.TestCase, lines: list[bytes], parse_json: bool = False) -> None:
    """Every line starts with an ISO 8601 timestamp (or, as JSON, parses to an object with one), and none holds
    a Python repr; a traceback's own lines (indented under the line that carries them) are let be."""
    case.assertTrue(lines)
    for line in lines:
        if parse_json:
            fields = json.loads(line)
            case.assertIsInstance(fields, dict)
            case.assertRegex(fields["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        elif not line.startswith(b"\t"):
            case.assertRegex(line, ISO, "no timestamp")
        case.assertNotRegex(line, REPR, "a Python repr")


def twistd_config(path: str, origin: int, dead: int, echo: list[int]) -> None:
    with open(path, "w") as f:
        f.write(f"""
[admin]
listen = ["tcp:0:interface=127.0.0.1"]

[frontends.web]
listen = ["tcp:0:interface=127.0.0.1"]
backend = "app"

[[frontends.web.routes]]
path-prefix = "/chat"
backend = "ws"

[backends.app]
servers = ["127.0.0.1:{origin}", "127.0.0.1:{dead}"]
health = {{ check = "http", interval = "100ms", fall = 1 }}

[backends.ws]
servers = [{", ".join(f'"127.0.0.1:{port}"' for port in echo)}]
health = {{ check = "none" }}
websocket = {{ client-ping-interval = 0, backend-ping-interval = 0 }}
""")


class TwistdRunTests(ProxyTestCase):
    """``twistd rubrisproxy`` run for real, with traffic, admin calls, a failing health check, a reload, a
    WebSocket session moved between servers, bad requests and a log rotation; then every line is read."""

    timeout = 90

    def setUp(self) -> None:
        self.origin = self.start_web_origin(EchoResource())
        dead = reactor.listenTCP(0, EchoBackendFactory(), interface="127.0.0.1")
        self.dead = dead.getHost().port
        dead.stopListening()  # a port nothing listens on: its checks fail
        self.echo_factories = [EchoBackendFactory(), EchoBackendFactory()]
        ports = [reactor.listenTCP(0, factory, interface="127.0.0.1") for factory in self.echo_factories]
        for port in ports:
            self.addCleanup(port.stopListening)
        self.config = os.path.abspath(self.mktemp())
        twistd_config(self.config, self.origin, self.dead, [p.getHost().port for p in ports])

    def start(self, *args: str, twistd: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        """``twistd [twistd options] rubrisproxy --config FILE [args]``."""
        process = Twistd()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = [sys.executable, *TWISTD, *twistd, "rubrisproxy", "--config", self.config, *args]
        reactor.spawnProcess(process, sys.executable, command, env=env, path=ROOT)
        self.addCleanup(lambda: process.ended.called or os.kill(process.transport.pid, signal.SIGKILL))
        return process

    @defer.inlineCallbacks
    def wait_in(self, path: str, pattern: bytes, process: Any):  # type: ignore[no-untyped-def]
        """Wait for ``pattern`` in the file at ``path`` (the proxy's stdout when ``path`` is None)."""
        if path is None:
            match = yield process.wait_for(pattern)
            return match
        found: list[re.Match[bytes]] = []

        def present() -> bool:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    match = re.search(pattern, f.read())
                if match:
                    found.append(match)
            return bool(found)

        yield self.poll(present, f"{pattern!r} in {path}", ticks=1500)
        return found[0]

    @defer.inlineCallbacks
    def traffic(self, process: Any, log: str | None):  # type: ignore[no-untyped-def]
        """Requests, admin calls, a failing check, a reload and a moved WebSocket session."""
        match = yield self.wait_in(log, rb"frontend web listening on \S+ \(127\.0\.0\.1:(\d+)\)", process)
        self.proxy_port = int(match.group(1))
        match = yield self.wait_in(log, rb"admin listening on \S+ \(127\.0\.0\.1:(\d+)\)", process)
        admin = int(match.group(1))
        yield self.wait_in(log, rb"server app/s2 is DOWN", process)
        for _ in range(3):
            (response,) = yield self.request(get(b"/hello"))
            self.assertEqual(response.status, 200)
        for path in (b"/frontends", b"/backends/app"):
            yield self.admin_call(admin, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        yield self.admin_call(admin, b"POST /backends/app/servers/s1/drain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        yield self.admin_call(admin, b"POST /backends/app/servers/s1/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        # hostile requests: their errors name the bytes without a Python repr
        for data in (b"GET / HTTP/1.1\r\nHost: a\xff\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                     b"Connection: upgrade\r\nSec-WebSocket-Version: \x01\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"):
            client = yield self.connect()
            client.send(data)
            yield client.closed
        process.transport.signalProcess("HUP")
        yield self.wait_in(log, rb"reloaded .*: nothing changed", process)
        client = connect_client(self.proxy_port, "/chat")
        self.addCleanup(lambda: client.transport.abortConnection() if client.transport.connected else None)
        yield client.opened
        client.sendMessage(b"close:1012:restarting")
        yield self.wait_in(log, rb"session \S+ resumed", process)
        client.sendMessage(b"after")
        yield client.wait_messages(1)
        client.sendClose(1000)
        yield client.closed

    @defer.inlineCallbacks
    def admin_call(self, port: int, data: bytes):  # type: ignore[no-untyped-def]
        proxy_port, self.proxy_port = self.proxy_port, port
        try:
            client = yield self.connect()
        finally:
            self.proxy_port = proxy_port
        client.send(data)
        (response,) = yield client.responses(1)
        self.assertLess(response.status, 300)

    @defer.inlineCallbacks
    def stop(self, process: Any):  # type: ignore[no-untyped-def]
        process.transport.signalProcess("TERM")
        yield process.ended
        self.assertEqual(process.signal, signal.SIGTERM)

    @defer.inlineCallbacks
    def test_text_log_file_rotated_on_sigusr1(self):
        log = os.path.abspath(self.mktemp())
        process = self.start(twistd=("--logfile", log))
        yield self.traffic(process, log)
        os.rename(log, log + ".1")  # as logrotate does, then signals
        process.transport.signalProcess(signal.SIGUSR1)
        yield self.wait_in(log, rb"log files reopened \(SIGUSR1\)", process)
        (response,) = yield self.request(get(b"/after-rotation"))
        self.assertEqual(response.status, 200)
        yield self.wait_in(log, rb'"GET /after-rotation HTTP/1.1"', process)  # within a second
        yield self.stop(process)
        with open(log + ".1", "rb") as f:
            before = f.read()
        with open(log, "rb") as f:
            after = f.read()
        self.assertEqual(process.output, b"")  # all of it went to the file
        check_lines(self, before.splitlines() + after.splitlines())
        self.assertIn(b"rubrisproxy 0.1.0 starting; configuration: " + self.config.encode(), before)
        self.assertRegex(before, rb"backend app: s1 http://127\.0\.0\.1:\d+, s2 http://127\.0\.0\.1:\d+; roundrobin; "
                                 rb"http health checks every 0\.1s")
        # bytes_in: the GET's head, as read
        self.assertRegex(before, rb'(?m)^\S+Z 127\.0\.0\.1 web app/s1 \d+/\d+/\d+/\d+/\d+ 200 %d \d+ ok retries=0 '
                                 rb'"GET /hello HTTP/1\.1"$' % len(get(b"/hello")))
        self.assertIn(b"admin: drain app/s1 from 127.0.0.1", before)
        self.assertNotIn(b"GET /frontends", before)  # admin calls are not logged one line each
        self.assertIn(b'invalid Host "a\\xff"', before)
        self.assertIn(b'"GET /after-rotation HTTP/1.1"', after)
        self.assertNotIn(b"/after-rotation", before)
        self.assertIn(b"Server Shut Down", after)

    @defer.inlineCallbacks
    def test_json_to_standard_output(self):
        process = self.start("--log-format", "json", "--access-log-format", "json")
        yield self.traffic(process, None)
        (response,) = yield self.request(get(b"/last"))
        self.assertEqual(response.status, 200)
        yield self.stop(process)  # at once: the line held for /last is written on the way out
        lines = process.output.splitlines()
        check_lines(self, lines, parse_json=True)
        events = [json.loads(line) for line in lines]
        requests = [e for e in events if e.get("event") == "request" and e["target"] == "/hello"]
        self.assertEqual([e["status"] for e in requests], [200, 200, 200])
        self.assertEqual([e["status"] for e in events if e.get("target") == "/last"], [200])
        self.assertTrue(any(e.get("event") == "connection" for e in events))
        self.assertTrue(any("resumed" in e.get("message", "") for e in events))


class _Shown:
    attr = 5

    def __str__(self) -> str:
        return "shown"

    def __repr__(self) -> str:
        return "<Shown>"


class MessageTests(unittest.TestCase):
    """A main-log line's message is Twisted's text of the event, through whichever way it takes."""

    def test_the_same_text_as_twisted_makes(self) -> None:
        events: list[dict[str, Any]] = [
            {"log_format": "a {x} b {y!r} c {z:.3g} {o} {o!r} {o.attr} {seq[0]} {d[k]} {{braces}}", "x": 1, "y": "s",
             "z": 0.123456, "o": _Shown(), "seq": [9], "d": {"k": "v"}},
            {"log_format": "called: {f()}", "f": lambda: "yes"},
            {"log_format": "missing {nope}"},
            {"log_format": "positional {}"},
            {"log_format": "bad spec {x:d}", "x": "s"},
            {"log_format": b"bytes {x}", "x": 2},
            {"log_format": None},
            {},
        ]
        for event in events:
            self.assertEqual(_message(dict(event)), eventAsText(
                dict(event), includeTimestamp=False, includeSystem=False, includeTraceback=False))
