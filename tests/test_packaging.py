"""What ships is what is tested: the wheel holds the whole source tree, and the installed proxy runs."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from .helpers import ProxyTestCase
from .test_accesslog import line_corpus
from .test_plugin import TWISTD, Twistd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_TREES = ("rubrisproxy", os.path.join("twisted", "plugins"))
# The compiled access-log line's build products: a wheel carries the extension built from its .pyx (shipped too).
NOT_SHIPPED_SUFFIXES = (".pyc", "dropin.cache", ".c", ".so")


def source_files() -> set[str]:
    """Every file of the source tree that an install must carry, as wheel paths."""
    found = set()
    for tree in SHIPPED_TREES:
        for directory, dirs, files in os.walk(os.path.join(ROOT, tree)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if not name.endswith(NOT_SHIPPED_SUFFIXES):
                    found.add(os.path.relpath(os.path.join(directory, name), ROOT).replace(os.sep, "/"))
    return found


def build_wheel(workdir: str, env: dict[str, str] | None = None) -> str:
    """Build a wheel from a copy of the checkout (so the checkout gains no build/ or egg-info) and return its path."""
    source = os.path.join(workdir, "src")
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "_trial_temp*", "build", "dist", "*.egg-info",
                                      "__pycache__", "*.so", "_accesslines.c"),
    )
    out = os.path.join(workdir, "wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source],
        check=True,
        capture_output=True,
        timeout=120,
        env=env,
    )
    (name,) = os.listdir(out)
    return os.path.join(out, name)


#: A machine without a C compiler, as the build sees it.
NO_COMPILER = dict(os.environ, CC="false", CXX="false")


@functools.cache
def installed_wheel(no_compiler: bool = False) -> tuple[str, str, str]:
    """Build the wheel once per run and install it, without dependencies, into a directory of its own."""
    workdir = tempfile.mkdtemp(prefix="rubrisproxy-packaging-")
    atexit.register(shutil.rmtree, workdir, True)
    wheel = build_wheel(workdir, NO_COMPILER if no_compiler else None)
    target = os.path.join(workdir, "installed")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    os.makedirs(os.path.join(workdir, "elsewhere"))
    return workdir, wheel, target


class InstalledPackageTests(ProxyTestCase):
    """The wheel built from this tree ships every module and data file, and runs from outside the checkout."""

    no_compiler = False

    def setUp(self) -> None:
        self.workdir, self.wheel, self.target = installed_wheel(self.no_compiler)
        self.elsewhere = os.path.join(self.workdir, "elsewhere")

    def outside_env(self) -> dict[str, str]:
        """The environment of a user who installed the wheel: only the install location is importable."""
        return dict(os.environ, PYTHONPATH=self.target)

    def run_outside(self, code: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.elsewhere,
            env=self.outside_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip()

    def test_wheel_ships_every_source_file(self):
        shipped = set(zipfile.ZipFile(self.wheel).namelist())
        missing = sorted(source_files() - shipped)
        self.assertEqual(missing, [], "pip install . would not ship these files")
        self.assertIn("rubrisproxy/admin/stats.html", shipped)
        self.assertNotIn("twisted/plugins/__init__.py", shipped)  # would break Twisted's plugin namespace

    def test_installed_package_is_imported_outside_the_checkout(self):
        location = self.run_outside("import rubrisproxy.admin, rubrisproxy.websocket; print(rubrisproxy.__file__)")
        self.assertTrue(location.startswith(self.target), location)

    def test_installed_version_is_the_wheel_version(self):
        version = self.run_outside("from rubrisproxy import __version__; print(__version__)")
        names = zipfile.ZipFile(self.wheel).namelist()
        self.assertTrue(any(name.endswith(f"-{version}.dist-info/METADATA") for name in names), version)

    @defer.inlineCallbacks
    def test_demo_page_through_the_installed_proxy(self):
        process = Twistd()
        args = [sys.executable, *TWISTD, "rubrisproxy", "--listen", "tcp:0:interface=127.0.0.1",
                "--admin", "tcp:0:interface=127.0.0.1"]
        reactor.spawnProcess(process, sys.executable, args, env=self.outside_env(), path=self.elsewhere)
        self.addCleanup(lambda: process.ended.called or os.kill(process.transport.pid, signal.SIGKILL))
        match = yield process.wait_for(rb"listening on \S+ \(127\.0\.0\.1:(\d+)\)")
        self.proxy_port = int(match.group(1))
        responses = yield self.request(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
        self.assertEqual(responses[0].status, 200)
        self.assertIn(b"rubrisproxy is running", responses[0].body)
        process.transport.signalProcess("TERM")
        yield process.ended
        self.assertNotIn(b"Traceback", process.output)

    def test_access_lines_compiled_when_a_compiler_is_there(self):
        compiled = any(name.startswith("rubrisproxy/_accesslines") and name.endswith(".so")
                       for name in zipfile.ZipFile(self.wheel).namelist())
        if self.no_compiler:
            self.assertFalse(compiled)
        elif not shutil.which("cc") and not os.environ.get("CI"):  # CI has one: both lines are tested there
            raise unittest.SkipTest("no C compiler here: the wheel has the pure-Python line only")
        else:
            self.assertTrue(compiled)
        records = repr([tuple(record) for record in line_corpus()])
        check = self.run_outside(
            "from rubrisproxy.accesslog import AccessLog, AccessRecord, COMPILED, format_text\n"
            "lines = []\n"
            "class Out:\n"
            "    write_lines = lines.extend\n"
            "log = AccessLog(output=Out(), batch=1)\n"
            f"records = [AccessRecord(*fields) for fields in {records}]\n"
            "for record in records: log.write(record)\n"
            "print(COMPILED, lines == [format_text(record) for record in records])"
        )
        self.assertEqual(check, f"{compiled} True")


class NoCompilerInstallTests(InstalledPackageTests):
    """Without a C compiler the same tree still builds, installs and runs, with the pure-Python access-log line."""

    no_compiler = True
