"""Configuration: TOML and flags, with errors that name the key."""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace

from twisted.trial import unittest

from rubrisproxy.checks import check_config
from rubrisproxy.config import (
    CommandLine,
    ConfigError,
    Http2Config,
    config_from_document,
    load_config,
    loopback_only,
    parse_duration,
    parse_server,
    parse_size,
)
from rubrisproxy.config._values import (
    MAX_COUNT,
    MAX_DURATION,
    MAX_SIZE,
    parse_endpoint,
    parse_positive_int,
    split_endpoint,
)
from rubrisproxy.tap import Options

from .test_websocket import EXAMPLES  # noqa: F401 - puts docs/examples on sys.path

EXAMPLE = """
[timeouts]
client = "20s"
http-request = "5s"
connect = "500ms"

[limits]
max-body-size = "10m"

[pool]
max-idle-per-server = 8

[access-log]
format = "json"

[frontends.web]
listen = ["tcp:8080:interface=127.0.0.1"]
backend = "app"

[backends.app]
retries = 2
servers = ["127.0.0.1:9001", { address = "https://api.internal:8443", name = "tls1" }]
"""


class ValueTests(unittest.TestCase):
    def test_durations_and_sizes(self):
        self.assertEqual(parse_duration("k", "500ms"), 0.5)
        self.assertEqual(parse_duration("k", "2m"), 120)
        self.assertEqual(parse_duration("k", 3), 3.0)
        self.assertEqual(parse_size("k", "10m"), 10 << 20)
        self.assertEqual(parse_size("k", "64KiB"), 64 << 10)
        for bad in ("fast", "-1s", 0, True):
            self.assertRaises(ConfigError, parse_duration, "k", bad)

    def assertProblem(self, parse, value: object, problem: str) -> None:  # type: ignore[no-untyped-def]
        with self.assertRaises(ConfigError) as caught:
            parse("some.key", value)
        self.assertEqual(caught.exception.key, "some.key")
        self.assertIn(problem, caught.exception.problem)

    def test_absurd_durations_sizes_and_counts_are_refused(self) -> None:
        self.assertEqual(parse_duration("k", "24d"), MAX_DURATION)
        for value in (math.nan, math.inf, -math.inf):
            self.assertProblem(parse_duration, value, "expected a finite duration")
        for value in (1e300, MAX_DURATION + 1, "25d", "99999999999999999999d", 10**400):
            self.assertProblem(parse_duration, value, "must be at most 24d")
        self.assertProblem(parse_duration, "9" * 5000 + "s", "expected a duration")  # no 5000-digit float parse
        self.assertEqual(parse_duration("k", "1ms"), 0.001)
        for value in (1e-300, "0.5ms", 0.0009):  # a timer or check that would spin
            self.assertProblem(parse_duration, value, "must be at least 1ms")
        self.assertEqual(parse_size("k", "1t"), MAX_SIZE)
        for value in (MAX_SIZE + 1, "2t", "99999999999999999999t", 2**63 - 1):
            self.assertProblem(parse_size, value, "must be at most 1TiB")
        self.assertProblem(parse_size, "9" * 5000, "expected a size")  # int() would refuse over 4300 digits
        self.assertProblem(parse_size, 1.5, "expected a size")
        self.assertEqual(parse_positive_int("k", MAX_COUNT), MAX_COUNT)
        self.assertProblem(parse_positive_int, MAX_COUNT + 1, f"must be at most {MAX_COUNT}")

    def test_a_server_on_port_0_is_refused(self) -> None:
        for address in ("127.0.0.1:0", "http://127.0.0.1:0", "https://example.com:0"):
            self.assertProblem(lambda key, value: parse_server(key, value, "s1"), address, "port must be from 1")
        self.assertProblem(lambda key, value: parse_server(key, value, "s1"), "127.0.0.1:65536", "invalid address")
        self.assertEqual(parse_server("k", "127.0.0.1:1", "s1").port, 1)

    def test_endpoint_strings_are_parsed_without_listening(self) -> None:
        for good in ("tcp:8080", "tcp:0:interface=127.0.0.1", "tcp6:8080:interface=\\:\\:1", "tcp:port=65535",
                     "unix:/run/proxy.sock", "tcp:8080:backlog=10"):
            self.assertEqual(parse_endpoint("k", good), good)
        self.assertProblem(parse_endpoint, "tcp:notaport", "invalid endpoint 'tcp:notaport'")
        self.assertProblem(parse_endpoint, "tcpx:1", "Unknown endpoint type: 'tcpx'")
        self.assertProblem(parse_endpoint, "tcp:8080:colour=red", "invalid endpoint")
        self.assertProblem(parse_endpoint, "tcp:70000", "port must be from 0 to 65535, got 70000")
        self.assertProblem(parse_endpoint, "tcp:port=-1", "port must be from 0 to 65535, got -1")
        self.assertProblem(parse_endpoint, "ssl:notaport:privateKey=k.pem", "the port must be a number, got 'notaport'")
        # An ssl: string's files are read with the TLS settings, whose errors name the field (test_tls_listen).
        missing = os.path.join(os.path.abspath(self.mktemp()), "key.pem")
        self.assertEqual(parse_endpoint("k", f"ssl:8443:privateKey={missing}"), f"ssl:8443:privateKey={missing}")


    def test_endpoint_strings_are_read_as_twisted_reads_them(self) -> None:
        """One reader for the listener, the loopback rule and ssl: strings: ':' and '=' escaped with '\\'."""
        self.assertEqual(split_endpoint("TCP6:8080:interface=\\:\\:1:backlog=5"),
                         ("tcp6", ["8080"], [("interface", "::1"), ("backlog", "5")]))
        self.assertEqual(split_endpoint("unix:/run/a\\:b.sock"), ("unix", ["/run/a:b.sock"], []))
        self.assertTrue(loopback_only("tcp6:8080:interface=\\:\\:1"))
        self.assertTrue(loopback_only("unix:/run/proxy.sock"))
        self.assertFalse(loopback_only("tcp:8080"))
        self.assertFalse(loopback_only("tcp:8080:interface=0.0.0.0"))

    def test_config_imports_nothing_of_the_runtime(self) -> None:
        import subprocess
        import sys

        code = ("import sys, rubrisproxy.config; print(sorted(m for m in sys.modules if m.startswith('rubrisproxy.')"
                " and not m.startswith('rubrisproxy.config')))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
        self.assertEqual(out.strip(), "[]")


class FileTests(unittest.TestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_example_file(self):
        config = load_config(CommandLine(config_path=self.write(EXAMPLE)))
        self.assertEqual(config.timeouts.client, 20)
        self.assertEqual(config.timeouts.connect, 0.5)
        self.assertEqual(config.timeouts.server, 60)  # default kept
        self.assertEqual(config.limits.max_body_size, 10 << 20)
        self.assertEqual(config.access_log.format, "json")
        (frontend,) = config.frontends
        self.assertEqual((frontend.name, frontend.listen, frontend.backend), ("web", ("tcp:8080:interface=127.0.0.1",), "app"))
        servers = config.backends["app"].servers
        self.assertEqual([(s.name, s.host, s.port, s.tls) for s in servers],
                         [("s1", "127.0.0.1", 9001, False), ("tls1", "api.internal", 8443, True)])
        self.assertFalse(config.demo)

    def test_flags_override_file(self):
        config = load_config(CommandLine(
            config_path=self.write(EXAMPLE), listen=["tcp:9999"], backends=["10.0.0.1:80", "https://b.example"],
            timeouts={"server": "5s"},
        ))
        self.assertEqual(config.frontends[0].listen, ("tcp:9999",))
        self.assertEqual([(s.host, s.port, s.tls) for s in config.backends["app"].servers],
                         [("10.0.0.1", 80, False), ("b.example", 443, True)])
        self.assertEqual(config.timeouts.server, 5)
        self.assertEqual(config.timeouts.client, 20)

    def test_two_listeners_on_one_port_are_refused_naming_both(self):
        base = '[backends.app]\nservers = ["127.0.0.1:9001"]\n'
        clashes = {
            '[frontends.web]\nlisten = ["tcp:8080"]\nbackend = "app"\n[frontends.api]\nlisten = ["tcp:8080:interface=127.0.0.1"]\n'
            'backend = "app"\n': r"^frontends\.api\.listen: 'tcp:8080:interface=127.0.0.1' listens on the port of 'tcp:8080' "
                                 r"\(frontends\.web\.listen\)$",
            '[frontends.web]\nlisten = ["tcp:8080", "tcp:port=8080"]\nbackend = "app"\n':
                r"^frontends\.web\.listen: .* \(another of its listeners\)$",
            '[frontends.web]\nlisten = ["tcp:9000"]\nbackend = "app"\n[admin]\nlisten = ["tcp:9000:interface=127.0.0.1"]\n':
                r"^admin\.listen: .*'tcp:9000' \(frontends\.web\.listen\)$",
        }
        wildcards = {  # every interface said outright, and IPv6's, which takes IPv4's too
            ("tcp:8080:interface=0.0.0.0", "tcp:8080:interface=127.0.0.1"),
            ("tcp6:8080:interface=\\\\:\\\\:", "tcp:8080:interface=127.0.0.1"),
            ("tcp6:8080", "tcp:8080"),
        }
        for first, second in wildcards:
            clashes[f'[frontends.web]\nlisten = ["{first}", "{second}"]\nbackend = "app"\n'] = (
                r"^frontends\.web\.listen: .* \(another of its listeners\)$")
        for text, message in clashes.items():
            with self.assertRaisesRegex(ConfigError, message):
                load_config(CommandLine(config_path=self.write(base + text)))
        apart = ('[frontends.web]\nlisten = ["tcp:8080:interface=127.0.0.1", "tcp:0", "tcp:0"]\nbackend = "app"\n'
                 '[frontends.api]\nlisten = ["tcp:8080:interface=127.0.0.2", "tcp6:8080:interface=\\\\:\\\\:1"]\nbackend = "app"\n')
        self.assertEqual(len(load_config(CommandLine(config_path=self.write(base + apart))).frontends), 2)

    def test_a_unix_socket_in_no_directory_is_refused(self):
        with self.assertRaisesRegex(ConfigError, r"^--listen: invalid endpoint 'unix:/nonexistent/dir/p\.sock': no "
                                                 r"directory '/nonexistent/dir' for the socket$"):
            load_config(CommandLine(listen=["unix:/nonexistent/dir/p.sock"]))
        here = os.path.join(self.mktemp() + "-dir")
        os.mkdir(here)
        self.assertTrue(load_config(CommandLine(listen=[f"unix:{here}/p.sock"])).frontends)

    def test_an_interface_that_is_no_address_is_refused(self):
        for interface in ("999.0.0.1", "1.2.3", "\\\\:\\\\:g"):
            with self.assertRaisesRegex(ConfigError, r"^--listen: invalid endpoint .* is not an IP address$"):
                load_config(CommandLine(listen=[f"tcp:8080:interface={interface}".replace("\\\\", "\\")]))

    def test_a_byte_order_mark_first_is_read_past(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xef\xbb\xbf" + EXAMPLE.encode())
        self.assertEqual(load_config(CommandLine(config_path=path)), load_config(CommandLine(config_path=self.write(EXAMPLE))))

    def test_a_files_backend_without_servers_is_no_demo(self):
        """The demo runs with nothing configured, never in place of a backend the file defines: one with no servers
        answers 503 (as a second such backend would)."""
        config = load_config(CommandLine(config_path=self.write(
            '[frontends.web]\nlisten = ["tcp:8083"]\nbackend = "app"\n[backends.app]\nservers = []\n')))
        self.assertFalse(config.demo)
        self.assertEqual(config.backends["app"].servers, ())

    def test_a_file_with_no_backend_is_refused_naming_backends(self):
        for text in ("", '[timeouts]\nclient = "5s"\n', '[frontends.web]\nlisten = ["tcp:8083"]\n'):
            with self.assertRaisesRegex(ConfigError, r"^backends: the configuration defines none"):
                load_config(CommandLine(config_path=self.write(text)))
        self.assertTrue(load_config(CommandLine(config_path=self.write(""), demo=True)).demo)

    def test_a_frontend_naming_no_backend_among_several_is_told_to_name_one(self):
        text = '[frontends.web]\nlisten = ["tcp:8083"]\n[backends.app]\nservers = []\n[backends.api]\nservers = []\n'
        with self.assertRaisesRegex(ConfigError, r"^frontends\.web\.backend: missing: name one of the backends \(app, api\)$"):
            load_config(CommandLine(config_path=self.write(text)))

    def test_no_file_no_backend_is_demo(self):
        config = load_config(CommandLine())
        self.assertTrue(config.demo)
        self.assertEqual(config.frontends[0].listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertTrue(loopback_only(config.frontends[0].listen[0]))
        config = load_config(CommandLine(backends=["127.0.0.1:9000", "127.0.0.1:9001"]))
        self.assertFalse(config.demo)
        backend = config.backends["default"]
        self.assertEqual([s.port for s in backend.servers], [9000, 9001])
        # The quick start: round robin with TCP health checks.
        self.assertEqual((backend.balance, backend.health.check), ("roundrobin", "tcp"))

    def test_the_readme_file_and_flags_give_the_same_proxy(self):
        """The README's quick start, with flags and "the same with a configuration file": the same backend."""
        with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
            readme = f.read()
        flags = re.search(r"twistd -n rubrisproxy (--listen .*)\n", readme).group(1).split()  # type: ignore[union-attr]
        (toml,) = re.findall(r"The same with a configuration file.*?```toml\n(.*?)```", readme, re.S)
        options = Options()
        options.parseOptions(flags)
        from_flags = options.proxy_config.backends["default"]
        from_file = load_config(CommandLine(config_path=self.write(toml))).backends["app"]
        self.assertEqual(replace(from_file, name="default"), from_flags)
        self.assertEqual(from_flags.health.check, "tcp")
        # A file's backend with no health table, and one from flags on top of a file with none, alike.
        (named,) = load_config(CommandLine(config_path=self.write(EXAMPLE), backends=["127.0.0.1:1"])).backends.values()
        self.assertEqual(named.health, from_flags.health)

    def test_access_log_path_must_be_writable_file(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for path, problem in ((directory, "is a directory"), (os.path.join(directory, "no", "a.log"), "does not exist"),
                              ("", "expected a file path")):
            with self.assertRaises(ConfigError) as caught:
                config_from_document({"access-log": {"path": path}})
            self.assertEqual(caught.exception.key, "access-log.path")
            self.assertIn(problem, caught.exception.problem)
            with self.assertRaises(ConfigError) as caught:
                load_config(CommandLine(access_log=path, backends=["127.0.0.1:1"]))
            self.assertEqual(caught.exception.key, "--access-log")
        fresh = os.path.join(directory, "access.log")
        self.assertEqual(config_from_document({"access-log": {"path": fresh}}).access_log.path, fresh)
        self.assertFalse(os.path.exists(fresh), "validating created the file")
        off = config_from_document({"access-log": {"path": directory, "enabled": False}})
        self.assertFalse(off.access_log.enabled)

    def assertConfigError(self, document: dict, key: str) -> None:  # type: ignore[type-arg]
        with self.assertRaises(ConfigError) as caught:
            config_from_document(document)
        self.assertEqual(caught.exception.key, key)

    def test_errors_name_the_key(self):
        self.assertConfigError({"timeouts": {"client": "soon"}}, "timeouts.client")
        self.assertConfigError({"timeouts": {"clinet": "1s"}}, "timeouts.clinet")
        self.assertConfigError({"limits": {"max-body-size": "lots"}}, "limits.max-body-size")
        self.assertConfigError({"backends": {"app": {"servers": ["nohost"]}}}, "backends.app.servers[0]")
        self.assertConfigError({"backends": {"app": {"servers": ["ftp://a:1"]}}}, "backends.app.servers[0]")
        self.assertConfigError({"backends": {"app": {"retries": -1}}}, "backends.app.retries")
        self.assertConfigError({"frontends": {"web": {"backend": "nope"}}, "backends": {"app": {}}}, "frontends.web.backend")
        self.assertConfigError({"frontends": {"web": {"listen": []}}}, "frontends.web.listen")
        self.assertConfigError({"access-log": {"format": "xml"}}, "access-log.format")
        self.assertConfigError({"access-log": {"connections": "no"}}, "access-log.connections")
        self.assertConfigError({"bogus": 1}, "bogus")
        self.assertConfigError({"backends": {"app": {"balance": "no.such.Balancer"}}}, "backends.app.balance")
        clients = {"web": {"backend": "app", "clients": {"identify": ["ip"]}}}
        self.assertConfigError({"frontends": clients, "backends": {"app": {}}}, "frontends.web.clients.identify")
        clients = {"web": {"backend": "app", "peers": "proxied", "trusted-proxies": ["10.0.0.0/8"],
                           "clients": {"identify": ["connection"]}}}
        self.assertConfigError({"frontends": clients, "backends": {"app": {}}}, "frontends.web.clients.identify")

    def test_http2_settings(self):
        backends = {"app": {}}
        web = {"backend": "app", "http2": {"max-concurrent-streams": 10, "initial-window-size": 1 << 20,
                                           "max-resets": 50, "max-control-frames": 100, "flood-window": "5s",
                                           "websocket": False}}
        (frontend,) = config_from_document({"frontends": {"web": web}, "backends": backends}).frontends
        self.assertEqual(frontend.http2, Http2Config(max_concurrent_streams=10, initial_window_size=1 << 20,
                                                     max_resets=50, max_control_frames=100, flood_window=5.0,
                                                     websocket=False))
        (default,) = config_from_document({"frontends": {"web": {"backend": "app"}}, "backends": backends}).frontends
        self.assertEqual(default.http2, Http2Config())
        for key, value in [("enabled", "yes"), ("max-concurrent-streams", 0), ("initial-window-size", 10),
                           ("max-resets", -1), ("flood-window", "soon"), ("bogus", 1)]:
            frontends = {"web": {"backend": "app", "http2": {key: value}}}
            self.assertConfigError({"frontends": frontends, "backends": backends}, f"frontends.web.http2.{key}")
        forward = {"web": {"mode": "forward", "http2": {"enabled": True}}}
        self.assertConfigError({"frontends": forward, "backends": backends}, "frontends.web.http2.enabled")
        (proxy,) = config_from_document({"frontends": {"web": {"mode": "forward"}}, "backends": backends}).frontends
        self.assertFalse(proxy.http2.enabled)

    def test_connection_settings(self):
        web = {"backend": "app"}
        backends = {"app": {}}
        self.assertConfigError({"frontends": {"web": {**web, "peers": "lb"}}, "backends": backends}, "frontends.web.peers")
        self.assertConfigError({"frontends": {"web": {**web, "peers": "proxied"}}, "backends": backends},
                               "frontends.web.trusted-proxies")
        self.assertConfigError({"frontends": {"web": {**web, "peers": "proxied", "trusted-proxies": ["10.0.0.0/33"]}},
                                "backends": backends}, "frontends.web.trusted-proxies")
        self.assertConfigError({"frontends": {"web": {**web, "proxy-protocol": "v1"}}, "backends": backends},
                               "frontends.web.proxy-protocol")
        self.assertConfigError({"frontends": {"web": {**web, "max-reads": -1}}, "backends": backends},
                               "frontends.web.max-reads")
        self.assertConfigError({"frontends": {"web": {**web, "handlers": ["no.such.Handler"]}}, "backends": backends},
                               "frontends.web.handlers[0]")
        config = config_from_document({"frontends": {"web": {
            **web, "peers": "proxied", "trusted-proxies": ["10.0.0.0/8"], "proxy-protocol": "any", "max-writes": 100,
        }}, "backends": backends})
        (frontend,) = config.frontends
        self.assertEqual((frontend.peers, frontend.proxy_protocol, frontend.max_writes), ("proxied", "any", 100))

    def test_a_handler_that_handles_nothing_is_refused_naming_the_key(self):
        from twisted.internet.task import Clock

        from rubrisproxy.service import build_service

        config = config_from_document({"frontends": {"web": {"backend": "app", "handlers": ["collections.OrderedDict"]}},
                                       "backends": {"app": {}}})
        with self.assertRaises(ConfigError) as caught:
            build_service(config, Clock())
        self.assertEqual(caught.exception.key, "frontends.web.handlers[0]")

    def test_proxy_settings_need_a_proxied_frontend(self):
        backends = {"app": {}}
        for key, value in (("trusted-proxies", ["10.0.0.0/8"]), ("forwarded-header", "forwarded")):
            with self.assertRaises(ConfigError) as caught:
                config_from_document({"frontends": {"web": {"backend": "app", key: value}}, "backends": backends})
            self.assertEqual(caught.exception.key, f"frontends.web.{key}")
            self.assertIn('set peers = "proxied"', caught.exception.problem)

    def test_trusted_proxies_must_be_a_list(self):
        with self.assertRaises(ConfigError) as caught:
            config_from_document({"frontends": {"web": {"backend": "app", "peers": "proxied",
                                                        "trusted-proxies": "127.0.0.1"}}, "backends": {"app": {}}})
        self.assertEqual(caught.exception.key, "frontends.web.trusted-proxies")
        self.assertIn("expected a list of networks", caught.exception.problem)

    def test_clients_must_identify_somehow(self):
        with self.assertRaises(ConfigError) as caught:
            config_from_document({"frontends": {"web": {"backend": "app", "clients": {"identify": []}}},
                                  "backends": {"app": {}}})
        self.assertEqual(caught.exception.key, "frontends.web.clients.identify")
        self.assertIn("at least one of sid", caught.exception.problem)

    def test_bad_toml_and_missing_file(self):
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(config_path=self.write("[timeouts\nclient=1")))
        self.assertIn("not valid TOML", str(caught.exception))
        for content, problem in ((b'[timeouts]\nclient = "\xff"\n', "not UTF-8 text (byte 21)"),
                                 (b"a = " + b"[" * 5000 + b"]" * 5000, "nests arrays or tables too deeply"),
                                 (b"a = " + b"9" * 5000, "not valid TOML")):
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(content)
            with self.assertRaises(ConfigError) as caught:
                load_config(CommandLine(config_path=path))
            self.assertEqual(caught.exception.key, path)  # the file is what is wrong
            self.assertIn(problem, caught.exception.problem)
        missing = os.path.join(self.mktemp(), "missing.toml")
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(config_path=missing))
        self.assertEqual(str(caught.exception), f"{missing}: cannot read: No such file or directory")

    def test_a_users_file_that_is_not_utf_8(self):
        users = self.mktemp()
        with open(users, "wb") as f:
            f.write(b"\xff\xfe:pbkdf2_sha256$1$00$" + b"0" * 64 + b"\n")
        with self.assertRaises(ConfigError) as caught:
            config_from_document({"frontends": {"fp": {"mode": "forward", "forward": {"users-file": users}}}})
        self.assertEqual(caught.exception.key, "frontends.fp.forward.users-file")
        self.assertIn("is not UTF-8 text (byte 0)", caught.exception.problem)

    def test_ambiguous_flags_refused(self):
        two = self.write('[frontends.a]\nlisten=["tcp:1"]\n[frontends.b]\nlisten=["tcp:2"]\n[backends.default]\nservers=["127.0.0.1:1"]\n')
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(config_path=two, listen=["tcp:3"]))
        self.assertEqual(caught.exception.key, "--listen")


class UserClassTests(unittest.TestCase):
    """A user class named in the config that cannot be built fails the load's check, naming its key, not the start."""

    def load(self, text: str) -> ConfigError:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[backends.app]\nservers = ["127.0.0.1:9101"]\n' + text)
        with self.assertRaises(ConfigError) as caught:
            check_config(load_config(CommandLine(config_path=path)))
        return caught.exception

    def test_a_handler_that_provides_no_handler_interface(self):
        error = self.load('[frontends.web]\nhandlers = ["collections.OrderedDict"]\n')
        self.assertEqual(error.key, "frontends.web.handlers[0]")
        self.assertEqual(error.problem, "collections.OrderedDict does not provide any of IConnectionHandler, "
                                        "ITerminationHandler, IClientHandler")

    def test_a_handler_given_an_unknown_argument(self):
        error = self.load('[frontends.web]\nhandlers = [{ class = "lifecycle_handlers.SourceLimit", bogus = 1 }]\n')
        self.assertEqual(error.key, "frontends.web.handlers[0]")
        self.assertIn("cannot build lifecycle_handlers.SourceLimit:", error.problem)
        self.assertIn("unexpected keyword argument 'bogus'", error.problem)

    def test_a_handler_whose_constructor_refuses_an_argument(self):
        error = self.load('[frontends.web]\nhandlers = [{ class = "lifecycle_handlers.SourceLimit", '
                          'networks = ["bad"] }]\n')
        self.assertEqual(error.key, "frontends.web.handlers[0]")
        self.assertIn("cannot build lifecycle_handlers.SourceLimit: 'bad' does not appear to be", error.problem)

    def test_a_local_protocol_on_a_proxied_frontend(self):
        error = self.load('[frontends.web]\npeers = "proxied"\ntrusted-proxies = ["127.0.0.1"]\n'
                          'protocol = "custom_protocol.ApiKeyConnection"\n')
        self.assertEqual(error.key, "frontends.web.protocol")
        self.assertEqual(error.problem, "custom_protocol.ApiKeyConnection is not a subclass of "
                                        "rubrisproxy.frontend.ProxiedConnection")

    def test_a_backends_hook_and_balancer(self):
        error = self.load('[backends.app.websocket]\nhooks = ["collections.OrderedDict"]\n')
        self.assertEqual((error.key, error.problem),
                         ("backends.app.websocket.hooks[0]", "collections.OrderedDict does not provide IWebSocketHook"))
        error = self.load('balance = "collections.OrderedDict"\n')
        self.assertTrue(error.key.startswith("backends.app.balance"), error.key)
        self.assertEqual(error.problem, "collections.OrderedDict does not provide IBalancer")

    def test_twistd_reports_it_in_one_line(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[frontends.web]\nhandlers = ["collections.OrderedDict"]\n')
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--config", path, "--backend", "127.0.0.1:9101"])
        self.assertTrue(str(caught.exception).startswith("rubrisproxy: configuration error: frontends.web.handlers[0]: "))

    def test_good_classes_load(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[backends.app]\nservers = ["127.0.0.1:9101"]\n[frontends.web]\n'
                    'handlers = [{ class = "lifecycle_handlers.SourceLimit", limit = 2 }]\n'
                    'protocol = "custom_protocol.ApiKeyConnection"\n')
        (frontend,) = check_config(load_config(CommandLine(config_path=path))).frontends
        self.assertEqual(frontend.protocol, "custom_protocol.ApiKeyConnection")


class OptionsTests(unittest.TestCase):
    def test_repeatable_flags(self):
        options = Options()
        options.parseOptions(["--listen", "tcp:1", "-l", "tcp:2", "--backend", "127.0.0.1:5", "--timeout", "client=3s"])
        config = options.proxy_config
        self.assertEqual(config.frontends[0].listen, ("tcp:1", "tcp:2"))
        self.assertEqual(config.timeouts.client, 3)

    def test_bad_value_ends_twistd_in_one_line_naming_the_key(self):
        for args, key in ((["--timeout", "bogus=1s"], "--timeout bogus"), (["--timeout", "client"], "--timeout")):
            with self.assertRaises(SystemExit) as caught:
                Options().parseOptions(args)
            self.assertTrue(str(caught.exception).startswith(f"rubrisproxy: configuration error: {key}: "), caught.exception)


class BacklogTests(unittest.TestCase):
    def test_tcp_and_tls_listeners_get_a_deep_backlog_unless_set(self) -> None:
        from rubrisproxy.listening import with_backlog

        self.assertEqual(with_backlog("tcp:8080"), "tcp:8080:backlog=1024")
        self.assertEqual(with_backlog("ssl:8443:privateKey=k.pem"), "ssl:8443:privateKey=k.pem:backlog=1024")
        self.assertEqual(with_backlog("tcp:8080:backlog=10"), "tcp:8080:backlog=10")
        self.assertEqual(with_backlog("unix:/run/p.sock"), "unix:/run/p.sock")


class WebSocketDefaultsTests(unittest.TestCase):
    def test_top_level_websocket_table_reaches_backends_from_flags(self) -> None:
        from rubrisproxy.config import apply_command_line, config_from_document

        config = config_from_document({"websocket": {"replay-messages": 8, "mode": "tunnel"}})
        config = apply_command_line(config, CommandLine(backends=["127.0.0.1:9001"]))
        self.assertEqual(config.backends["default"].websocket.replay_messages, 8)
        self.assertEqual(config.backends["default"].websocket.mode, "tunnel")
        config = apply_command_line(config_from_document({"websocket": {"replay-messages": 8}}),
                                    CommandLine(backends=["127.0.0.1:9001"], websocket="tunnel"))
        self.assertEqual((config.backends["default"].websocket.mode, config.backends["default"].websocket.replay_messages),
                         ("tunnel", 8))
