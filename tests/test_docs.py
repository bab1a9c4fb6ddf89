"""What the README and docs/ say about configuration, checked against the code: the quick start's file is the
same proxy as its flags, the TOML snippets of a page combine into one valid file, every flag is in the
synopsis and the flags table, and the HAProxy example's checks are set in its TOML."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import fields

from twisted.trial import unittest

from rubrisproxy.config import CommandLine, Timeouts, config_from_document, load_config
from rubrisproxy.tap import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def long_options() -> set[str]:
    """Every long option of ``twistd rubrisproxy``."""
    names = {flag[0] for flag in Options.optFlags} | {parameter[0] for parameter in Options.optParameters}
    names |= {name[4:].replace("_", "-") for name in dir(Options) if name.startswith("opt_") and len(name) > 5}
    return names - {"help", "version"}


class ReadmeTests(unittest.TestCase):
    def test_the_quick_start_file_is_the_same_proxy_as_its_flags(self) -> None:
        readme = read("README.md")
        command = next(b for b in blocks(readme, "sh") if "--backend" in b).split()
        listen = [command[i + 1] for i, word in enumerate(command) if word == "--listen"]
        servers = [command[i + 1] for i, word in enumerate(command) if word == "--backend"]
        flags = load_config(CommandLine(listen=listen, backends=servers))
        (document,) = blocks(readme, "toml")
        from_file = config_from_document(tomllib.loads(document))
        (frontend,) = from_file.frontends
        (backend,) = from_file.backends.values()
        (flags_backend,) = flags.backends.values()
        self.assertEqual(frontend.listen, ("tcp:8080:interface=0.0.0.0",))  # tcp:8080 is every IPv4 interface
        self.assertEqual(flags.frontends[0].listen, ("tcp:8080",))
        self.assertEqual(backend.servers, flags_backend.servers)
        self.assertEqual(backend.health, flags_backend.health)
        self.assertEqual(backend.health.check, "tcp")  # as the README says
        self.assertEqual(from_file.timeouts, flags.timeouts)
        self.assertEqual(backend.balance, flags_backend.balance)


class PageTests(unittest.TestCase):
    def test_the_snippets_of_connections_md_make_one_valid_file(self) -> None:
        config = config_from_document(tomllib.loads("\n".join(blocks(read("docs", "connections.md"), "toml"))))
        (edge,) = config.frontends
        self.assertEqual((edge.name, edge.max_reads, edge.max_writes), ("edge", 1000, 1000))
        self.assertEqual(edge.peers, "proxied")
        self.assertIsNotNone(edge.clients)

    def test_the_snippets_of_rules_md_make_one_valid_file(self) -> None:
        config = config_from_document(tomllib.loads("\n".join(blocks(read("docs", "rules.md"), "toml"))))
        (web,) = config.frontends
        self.assertEqual((web.unique_id_header, len(web.http_request), len(web.routes[0].http_request)),
                         ("X-Request-ID", 6, 2))

    def test_every_flag_is_in_the_synopsis_and_the_flags_table(self) -> None:
        flags = long_options()
        self.assertTrue({"config", "listen", "backend", "timeout", "admin", "websocket", "demo"} <= flags, flags)
        table = read("docs", "configuration.md").partition("## How flags and the file combine")[2].partition("##")[0]
        for flag in flags:
            self.assertIn(f"[--{flag}", Options.synopsis, flag)
            if flag != "config":  # the file itself, above the table
                self.assertIn(f"| `--{flag}", table, flag)

    def test_the_timeout_flag_names_every_timeout(self) -> None:
        help_text = Options.opt_timeout.__doc__ or ""
        for field in fields(Timeouts):
            self.assertRegex(help_text, rf"\b{field.name.replace('_', '-')}\b")


class HAProxyExampleTests(unittest.TestCase):
    def test_every_backend_with_checked_servers_sets_the_same_checks(self) -> None:
        text = read("docs", "examples", "web-and-websocket.toml")
        document = tomllib.loads(text)
        checked: dict[str, bool] = {}
        backend = None
        for line in re.findall(r"^#\s+(.*)$", text, re.M):
            if line.startswith("backend "):
                backend = line.split()[1]
            elif line.startswith("server ") and backend is not None:
                checked[backend] = checked.get(backend, True) and " check" in line
        self.assertEqual(sorted(checked), ["api", "web", "websocket"])
        config = config_from_document(document)
        for name, has_check in checked.items():
            self.assertTrue(has_check, name)
            self.assertIn("health", document["backends"][name], f"{name}: HAProxy's check, written out")
            health = config.backends[name].health
            self.assertEqual((health.check, health.interval, health.rise, health.fall), ("tcp", 2.0, 2, 3), name)


class LinkTests(unittest.TestCase):
    def test_every_relative_link_and_anchor_of_the_docs_exists(self) -> None:
        pages = ["README.md", "bench/README.md"] + [f"docs/{name}" for name in os.listdir(os.path.join(ROOT, "docs"))
                                                    if name.endswith(".md")]
        broken = []
        for page in pages:
            for link in re.findall(r"\]\(([^)\s]+)\)", read(page)):
                if re.match(r"[a-z]+:", link):
                    continue
                path, _, anchor = link.partition("#")
                target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                if not os.path.exists(os.path.join(ROOT, target)):
                    broken.append(f"{page}: {link}")
                elif anchor and target.endswith(".md") and anchor not in anchors(read(target)):
                    broken.append(f"{page}: {link} (no such heading)")
        self.assertEqual(broken, [])


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.*)$", text, re.M)}
