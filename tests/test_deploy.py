"""The Dockerfile and the systemd unit, read against the README and run where they can be here: the image
installs as the README says and copies what that install reads, its command line and the unit's parse as
twistd options, the unit's checks and signals are the documented ones, and ``systemd-analyze verify`` finds
nothing to say about the unit."""

from __future__ import annotations

import configparser
import contextlib
import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from urllib.parse import urlsplit

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.scripts.twistd import ServerOptions
from twisted.trial import unittest

from rubrisproxy import adminctl, ctl
from rubrisproxy.config import ProxyConfig

from .helpers import ProxyTestCase, get
from .test_packaging import source_files
from .test_plugin import TWISTD, Twistd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "rubrisproxy.toml")
UNIT = os.path.join(ROOT, "deploy", "rubrisproxy.service")


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def readme_install() -> str:
    """The README's install command: its fresh-machine command without the final run of twistd."""
    block = re.search(r"## On a fresh machine.*?```sh\n(.*?)\n```", read("README.md"), re.S)
    assert block is not None
    commands = [command.strip() for command in block.group(1).split("&&")]
    assert commands[-1].startswith(".venv/bin/twistd"), commands
    return " && ".join(commands[:-1])


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in read("Dockerfile").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list; the shell form is refused, as it would need a shell."""
    if not arguments.startswith("["):
        raise AssertionError(f"expected the exec form (a JSON array), got {arguments!r}")
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def image_env() -> dict[str, str]:
    env = {}
    for keyword, arguments in dockerfile():
        if keyword == "ENV":
            for assignment in shlex.split(arguments):
                name, _, value = assignment.partition("=")
                env[name] = value
    return env


def only(keyword: str) -> str:
    (arguments,) = [a for k, a in dockerfile() if k == keyword]
    return arguments


def twistd_options(argv: list[str]) -> ServerOptions:
    """Parse ``argv`` (after the twistd program) as twistd does, the rubrisproxy plugin's options included."""
    options = ServerOptions()
    options.parseOptions(argv)
    return options


def unit() -> dict[str, dict[str, list[str]]]:
    """The unit file by section, each key with its values in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in read("deploy", "rubrisproxy.service").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            section = sections.setdefault(stripped.strip("[]"), {})
            continue
        key, sep, value = stripped.partition("=")
        assert sep and section is not None, line
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def quiet_check(path: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return ctl.main(["check", path])


class DockerfileTests(unittest.TestCase):
    def test_the_base_is_a_slim_python_the_package_supports(self) -> None:
        image = only("FROM")
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
        self.assertIsNotNone(match, image)
        setup = configparser.ConfigParser()
        setup.read_string(read("setup.cfg"))
        floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", setup["options"]["python_requires"])
        assert match is not None and floor is not None
        self.assertGreaterEqual((int(match[1]), int(match[2])), (int(floor[1]), int(floor[2])))

    def test_it_installs_with_the_readme_command_and_nothing_else(self) -> None:
        runs = [arguments for keyword, arguments in dockerfile() if keyword == "RUN"]
        self.assertEqual(readme_install(), "python3 -m venv .venv && .venv/bin/pip install .")
        self.assertIn(readme_install(), runs)
        for command in runs:
            if command != readme_install():
                self.assertNotRegex(command, r"\b(pip|apt-get|apk|curl|wget)\b", "a second way in")

    def test_what_it_copies_exists_is_not_ignored_and_is_what_the_install_reads(self) -> None:
        copied = []
        for keyword, arguments in dockerfile():
            if keyword in ("COPY", "ADD"):
                self.assertEqual(keyword, "COPY")
                *sources, _destination = shlex.split(arguments)
                self.assertFalse(any(s.startswith("--") for s in sources), "no --from or --chown: one stage, root-owned")
                copied.extend(sources)
        ignored = [line.strip() for line in read(".dockerignore").splitlines()
                   if line.strip() and not line.startswith("#")]
        for source in copied:
            self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)
            self.assertFalse([p for p in ignored if fnmatch.fnmatch(source, p)], f"{source} is in .dockerignore")
        setup = configparser.ConfigParser()
        setup.read_string(read("setup.cfg"))
        long_description = setup["metadata"]["long_description"].removeprefix("file:").strip()
        needed = {"pyproject.toml", "setup.cfg", "setup.py", long_description} | source_files()
        missing = {path for path in needed if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in copied)}
        self.assertEqual(missing, set())

    def test_the_host_install_in_deploying_md_is_the_images(self) -> None:
        page = read("docs", "deploying.md")
        self.assertIn(f"sudo sh -c '{readme_install()}'", page)
        for command in (a for k, a in dockerfile() if k == "RUN" and a != readme_install() and "useradd" not in a):
            self.assertIn(f"sudo {command}", page)
        (user,) = unit()["Service"]["User"]
        self.assertIn(f"sudo useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {user}\n",
                      page)
        self.assertIn(f"{only('WORKDIR')} ", page)

    def test_it_runs_as_a_user_it_creates(self) -> None:
        instructions = dockerfile()
        user = only("USER")
        self.assertNotIn(user, ("root", "0", "0:0"))
        runs = [shlex.split(a) for k, a in instructions if k == "RUN"]
        self.assertIn(user, [argv[-1] for argv in runs if argv[0] == "useradd"])
        keywords = [k for k, _ in instructions]
        self.assertLess(keywords.index("USER"), keywords.index("ENTRYPOINT"))
        self.assertGreater(keywords.index("USER"), max(i for i, k in enumerate(keywords) if k == "RUN"))

    def test_its_command_line_parses_as_twistd_options_with_a_mounted_file(self) -> None:
        entrypoint, command = exec_form(only("ENTRYPOINT")), exec_form(only("CMD"))
        venv = readme_install().split()[3]  # python3 -m venv DIR
        self.assertEqual(entrypoint[0], f"{only('WORKDIR')}/{venv}/bin/twistd")
        config = command[command.index("--config") + 1]
        self.assertEqual(os.path.dirname(config), "/etc/rubrisproxy")
        mount = f"-v {os.path.dirname(config)}:{os.path.dirname(config)}:ro"  # as deploying.md and the comment run it
        self.assertIn(mount, read("docs", "deploying.md"))
        self.assertIn(mount, read("Dockerfile"))
        argv = [EXAMPLE if a == config else a for a in entrypoint[1:] + command]
        options = twistd_options(argv)
        self.assertTrue(options["nodaemon"])
        self.assertEqual(options["pidfile"], "")  # the user cannot write one in WORKDIR
        self.assertEqual(options.subCommand, "rubrisproxy")
        (admin,) = options.subOptions.proxy_config.admin.listen
        url = urlsplit(image_env()["RUBRISPROXY_ADMIN"])  # where the health check asks
        self.assertEqual(admin, f"tcp:{url.port}:interface={url.hostname}")
        self.assertEqual(url.hostname, "127.0.0.1")

    def test_the_health_check_is_ctl_health_in_python(self) -> None:
        """``rubrisproxy-ctl health``: ``rubrisproxy ctl health`` without importing the proxy (it runs every 10 s)."""
        arguments = only("HEALTHCHECK")
        self.assertRegex(arguments, r"--interval=\d+s")
        options, _, command = arguments.partition(" CMD ")
        argv = exec_form(command.strip())
        self.assertEqual(argv, ["rubrisproxy-ctl", "health"])
        self.assertIn("rubrisproxy-ctl = rubrisproxy.adminctl:main", read("setup.cfg"))
        self.assertIn(f"{only('WORKDIR')}/.venv/bin", image_env()["PATH"].split(":"))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            code = adminctl.main(["--admin", "http://127.0.0.1:1", *argv[1:]])  # nothing listens: unhealthy
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the admin API", err.getvalue())


class SystemdUnitTests(unittest.TestCase):
    def words(self, line: str) -> list[str]:
        config = unit()["Service"]["Environment"]
        (path,) = [e.partition("=")[2] for e in config if e.startswith("CONFIG=")]
        self.assertEqual(path, "/etc/rubrisproxy/rubrisproxy.toml")
        return shlex.split(line)

    def test_it_starts_twistd_in_the_foreground_after_checking_the_file(self) -> None:
        service = unit()["Service"]
        self.assertEqual(service["Type"], ["simple"])
        (pre,) = service["ExecStartPre"]
        self.assertEqual(self.words(pre), ["/opt/rubrisproxy/.venv/bin/rubrisproxy", "check", "${CONFIG}"])
        (start,) = service["ExecStart"]
        argv = self.words(start)
        self.assertEqual(argv[0], "/opt/rubrisproxy/.venv/bin/twistd")
        options = twistd_options([EXAMPLE if a == "${CONFIG}" else a for a in argv[1:]])
        self.assertTrue(options["nodaemon"])  # systemd watches the process it started
        self.assertEqual(options["pidfile"], "")
        self.assertEqual(options.subOptions["config"], EXAMPLE)
        self.assertEqual(quiet_check(EXAMPLE), 0)
        self.assertNotEqual(service["User"], ["root"])

    def test_reload_checks_the_file_then_sends_sighup(self) -> None:
        service = unit()["Service"]
        check, signal = service["ExecReload"]  # in order: a failed check stops the reload before the signal
        self.assertEqual(self.words(check), self.words(service["ExecStartPre"][0]))
        self.assertEqual(self.words(signal), ["/bin/kill", "-HUP", "$MAINPID"])
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as bad:
            bad.write("[timeouts]\nserver = 'forever'\n")
            bad.flush()
            self.assertEqual(quiet_check(bad.name), 1)

    def test_stop_is_sigterm_with_time_for_the_grace(self) -> None:
        service = unit()["Service"]
        self.assertEqual(service["KillSignal"], ["SIGTERM"])
        self.assertEqual(service["KillMode"], ["mixed"])  # SIGTERM to twistd alone; SIGKILL to all at the timeout
        (timeout,) = service["TimeoutStopSec"]
        self.assertGreater(int(timeout.removesuffix("s")), ProxyConfig(frontends=(), backends={}).shutdown_grace)

    def test_systemd_analyze_verify_finds_nothing(self) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed")
        work = tempfile.mkdtemp(prefix="rubrisproxy-unit-")
        self.addCleanup(shutil.rmtree, work, True)
        bin_dir = os.path.join(work, "bin")
        os.mkdir(bin_dir)
        for name in ("twistd", "rubrisproxy"):  # verify checks the programs exist and are executable
            path = os.path.join(bin_dir, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(path, 0o755)
        text = read("deploy", "rubrisproxy.service").replace("/opt/rubrisproxy/.venv/bin", bin_dir)

        def verify(content: str) -> tuple[int, str]:
            path = os.path.join(work, "rubrisproxy.service")
            with open(path, "w") as f:
                f.write(content)
            done = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
            return done.returncode, done.stdout + done.stderr

        self.assertEqual(verify(text), (0, ""))
        code, said = verify(text.replace("KillSignal=SIGTERM", "KillSignal=SIGTERN"))  # the check can fail
        self.assertIn("SIGTERN", said)


PROGRAMS = {  # the installed programs, as this checkout runs them
    "/opt/rubrisproxy/.venv/bin/rubrisproxy": [sys.executable, "-m", "rubrisproxy.ctl"],
    "/opt/rubrisproxy/.venv/bin/twistd": [sys.executable, *TWISTD[:2]],
    "rubrisproxy": [sys.executable, "-m", "rubrisproxy.ctl"],
    "rubrisproxy-ctl": [sys.executable, "-m", "rubrisproxy.adminctl"],
}
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def program(words: list[str], **substitutions: str) -> list[str]:
    return PROGRAMS.get(words[0], words[:1]) + [substitutions.get(w, w) for w in words[1:]]


class LifecycleTests(ProxyTestCase):
    """The unit's and the image's commands, run in the order systemd and docker run them."""

    def write_config(self, path: str, origin: int, extra: str = "") -> None:
        with open(path, "w") as f:
            f.write(f'[access-log]\nenabled = false\n\n[frontends.web]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                    f'{extra}\n[backends.app]\nservers = ["127.0.0.1:{origin}"]\n')

    def start(self, argv: list[str]) -> Twistd:
        process = Twistd()
        reactor.spawnProcess(process, argv[0], argv, env=ENV, path=ROOT)
        self.addCleanup(lambda: process.ended.called or os.kill(process.transport.pid, signal.SIGKILL))
        return process

    @defer.inlineCallbacks
    def execute(self, argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        out, err, code = yield getProcessOutputAndValue(argv[0], argv[1:], env=env or ENV, path=ROOT)
        return out.decode() + err.decode(), code

    @defer.inlineCallbacks
    def test_the_unit_starts_reloads_only_a_valid_file_and_stops(self):  # type: ignore[no-untyped-def]
        service = unit()["Service"]
        config = os.path.abspath(self.mktemp())
        origin = self.start_web_origin()
        self.write_config(config, origin)
        said, code = yield self.execute(program(shlex.split(service["ExecStartPre"][0]), **{"${CONFIG}": config}))
        self.assertEqual(code, 0, said)
        process = self.start(program(shlex.split(service["ExecStart"][0]), **{"${CONFIG}": config}))
        self.proxy_port = int((yield process.wait_for(rb"listening on \S+ \(127\.0\.0\.1:(\d+)\)")).group(1))
        responses = yield self.request(get(b"/blocked"))
        self.assertEqual(responses[0].status, 200)
        check, hangup = (shlex.split(line) for line in service["ExecReload"])
        with open(config, "a") as f:
            f.write('[timeouts]\nserver = "forever"\n')
        said, code = yield self.execute(program(check, **{"${CONFIG}": config}))
        self.assertEqual(code, 1)  # systemd stops the reload here: no SIGHUP
        self.assertIn("timeouts.server", said)
        self.write_config(config, origin, '[[frontends.web.routes]]\npath-prefix = "/blocked"\ndeny = 403\n')
        said, code = yield self.execute(program(check, **{"${CONFIG}": config}))
        self.assertEqual(code, 0, said)
        said, code = yield self.execute(program(hangup, **{"$MAINPID": str(process.transport.pid)}))
        self.assertEqual(code, 0, said)
        yield process.wait_for(rb"reloaded .*frontend web")
        responses = yield self.request(get(b"/blocked"))
        self.assertEqual(responses[0].status, 403)
        process.transport.signalProcess(service["KillSignal"][0].removeprefix("SIG"))
        yield process.ended
        self.assertEqual(process.signal, signal.SIGTERM)  # twistd re-raises it after a clean stop
        self.assertIn(b"Server Shut Down", process.output)

    @defer.inlineCallbacks
    def test_the_image_command_is_healthy_while_it_runs(self):  # type: ignore[no-untyped-def]
        config = os.path.abspath(self.mktemp())
        self.write_config(config, self.start_web_origin())
        command = exec_form(only("CMD"))
        mounted = command[command.index("--config") + 1]
        admin = command[command.index("--admin") + 1]
        argv = exec_form(only("ENTRYPOINT")) + command
        process = self.start(program(argv, **{mounted: config, admin: re.sub(r"^tcp:\d+", "tcp:0", admin)}))
        port = (yield process.wait_for(rb"admin listening on \S+ \(127\.0\.0\.1:(\d+)\)")).group(1).decode()
        health = exec_form(only("HEALTHCHECK").partition(" CMD ")[2])
        env = {**ENV, "RUBRISPROXY_ADMIN": image_env()["RUBRISPROXY_ADMIN"].replace(":9000", f":{port}")}
        said, code = yield self.execute(program(health), env)
        self.assertEqual((code, said.strip()), (0, "ok"))
        process.transport.signalProcess(only("STOPSIGNAL").removeprefix("SIG"))
        yield process.ended
        self.assertEqual(process.signal, signal.SIGTERM)
        said, code = yield self.execute(program(health), env)
        self.assertEqual(code, 1)
