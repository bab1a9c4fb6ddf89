"""Configuration: TOML and flags, with errors that name the key."""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial import unittest

from rubrisproxy.config import CommandLine, ConfigError, config_from_document, load_config, parse_duration, parse_size
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

    def test_no_file_no_backend_is_demo(self):
        config = load_config(CommandLine())
        self.assertTrue(config.demo)
        self.assertEqual(config.frontends[0].listen, ("tcp:8080",))
        config = load_config(CommandLine(backends=["127.0.0.1:9000", "127.0.0.1:9001"]))
        self.assertFalse(config.demo)
        backend = config.backends["default"]
        self.assertEqual([s.port for s in backend.servers], [9000, 9001])
        # The quick start: round robin with TCP health checks.
        self.assertEqual((backend.balance, backend.health.check), ("roundrobin", "tcp"))

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
        with self.assertRaises(ConfigError):
            load_config(CommandLine(config_path=os.path.join(self.mktemp(), "missing.toml")))

    def test_ambiguous_flags_refused(self):
        two = self.write('[frontends.a]\nlisten=["tcp:1"]\n[frontends.b]\nlisten=["tcp:2"]\n[backends.default]\nservers=["127.0.0.1:1"]\n')
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(config_path=two, listen=["tcp:3"]))
        self.assertEqual(caught.exception.key, "--listen")


class UserClassTests(unittest.TestCase):
    """A user class named in the config that cannot be built fails the load, naming its key, not the start."""

    def load(self, text: str) -> ConfigError:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[backends.app]\nservers = ["127.0.0.1:9101"]\n' + text)
        with self.assertRaises(ConfigError) as caught:
            load_config(CommandLine(config_path=path))
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

    def test_twistd_reports_it_as_a_usage_error(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[frontends.web]\nhandlers = ["collections.OrderedDict"]\n')
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--config", path, "--backend", "127.0.0.1:9101"])
        self.assertTrue(str(caught.exception).startswith("configuration error: frontends.web.handlers[0]: "))

    def test_good_classes_load(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[backends.app]\nservers = ["127.0.0.1:9101"]\n[frontends.web]\n'
                    'handlers = [{ class = "lifecycle_handlers.SourceLimit", limit = 2 }]\n'
                    'protocol = "custom_protocol.ApiKeyConnection"\n')
        (frontend,) = load_config(CommandLine(config_path=path)).frontends
        self.assertEqual(frontend.protocol, "custom_protocol.ApiKeyConnection")


class OptionsTests(unittest.TestCase):
    def test_repeatable_flags(self):
        options = Options()
        options.parseOptions(["--listen", "tcp:1", "-l", "tcp:2", "--backend", "127.0.0.1:5", "--timeout", "client=3s"])
        config = options.proxy_config
        self.assertEqual(config.frontends[0].listen, ("tcp:1", "tcp:2"))
        self.assertEqual(config.timeouts.client, 3)

    def test_bad_value_is_usage_error_naming_key(self):
        options = Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--timeout", "bogus=1s"])
        self.assertIn("--timeout bogus", str(caught.exception))


class BacklogTests(unittest.TestCase):
    def test_tcp_and_tls_listeners_get_a_deep_backlog_unless_set(self) -> None:
        from rubrisproxy.service import with_backlog

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
