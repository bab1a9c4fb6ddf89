"""What ships is what is tested: the wheel holds the whole source tree, and the installed proxy runs."""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable

from twisted.internet import defer, reactor
from twisted.trial import unittest

from rubrisproxy._native import MODULES

from .helpers import ProxyTestCase
from .test_accesslog import line_corpus
from .test_plugin import TWISTD, Twistd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_TREES = ("rubrisproxy", os.path.join("twisted", "plugins"))
# The compiled parts' build products: a wheel carries the extensions built from their sources (shipped too).
NOT_SHIPPED_SUFFIXES = (".pyc", "dropin.cache", ".c", ".so")
#: The suites that exercise the modules mypyc compiles (rubrisproxy._native): run again on the installed wheel.
NATIVE_SUITES = (
    "test_framing", "test_hardening_http", "test_proxy", "test_trailers", "test_interim", "test_origin_desync",
    "test_balancing", "test_sticky", "test_queued_timer", "test_timeouts", "test_engineio", "test_streaming",
    "test_counters", "test_websocket", "test_health", "test_ws_conformance", "test_upgrade", "test_lifecycle",
    "test_resume", "test_leaks", "test_pinned", "test_rules", "test_routing", "test_cycles", "test_forward",
    "test_origin_auth", "test_linger", "test_hardening_conn", "test_examples",
)


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


def copy_checkout(workdir: str) -> str:
    """A copy of the checkout to build from (so the checkout gains no build/ or egg-info), without its build products."""
    source = os.path.join(workdir, "src")
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "_trial_temp*", "build", "dist", "*.egg-info",
                                      "__pycache__", "*.so", "_accesslines.c", ".mypy_cache"),
    )
    return source


def build_wheel(source: str, out: str, env: dict[str, str] | None = None) -> str:
    """Build a wheel of ``source`` into ``out`` and return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source],
        check=True,
        capture_output=True,
        timeout=600,  # mypyc type-checks and compiles the request path: about a minute on two cores
        env=env,
    )
    (name,) = os.listdir(out)
    return os.path.join(out, name)


def extension_modules(paths: Iterable[str]) -> set[str]:
    """The modules that installed ``paths`` (relative to site-packages) hold as C extensions."""
    return {path.split(".")[0].replace("/", ".") for path in paths if path.endswith(".so")}


#: A machine without a C compiler, as the build sees it.
NO_COMPILER = dict(os.environ, CC="false", CXX="false")


@functools.cache
def built_wheels() -> tuple[str, dict[bool, str]]:
    """Both wheels, by whether the build had no compiler, from one copy of the checkout: with a compiler first, then
    without one in the tree that build left (a checkout installed again, its build/ holding the compiled modules)."""
    workdir = tempfile.mkdtemp(prefix="rubrisproxy-packaging-")
    atexit.register(shutil.rmtree, workdir, True)
    source = copy_checkout(workdir)
    compiled = build_wheel(source, os.path.join(workdir, "wheel"))
    pure = build_wheel(source, os.path.join(workdir, "wheel-without-compiler"), NO_COMPILER)
    return workdir, {False: compiled, True: pure}


@functools.cache
def installed_wheel(no_compiler: bool = False) -> tuple[str, str, str]:
    """One of the wheels installed, without dependencies, into a directory of its own."""
    workdir, wheels = built_wheels()
    wheel = wheels[no_compiler]
    target = os.path.join(workdir, "installed-without-compiler" if no_compiler else "installed")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    os.makedirs(os.path.join(workdir, "elsewhere"), exist_ok=True)
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

    def expects_compiled(self) -> bool:
        """Whether this wheel was built with a C compiler; skips where there is none (CI has one: both are tested)."""
        if self.no_compiler:
            return False
        if not shutil.which("cc") and not os.environ.get("CI"):
            raise unittest.SkipTest("no C compiler here: the wheel is pure Python")
        return True

    def compiled_in_wheel(self) -> set[str]:
        """The modules the wheel carries as C extensions."""
        return extension_modules(zipfile.ZipFile(self.wheel).namelist())

    def test_access_lines_compiled_when_a_compiler_is_there(self):
        compiled = "rubrisproxy._accesslines" in self.compiled_in_wheel()
        self.assertEqual(compiled, self.expects_compiled())
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


    def test_request_path_compiled_when_a_compiler_is_there(self):
        expected = list(MODULES) if self.expects_compiled() else []
        self.assertEqual(sorted(self.compiled_in_wheel() & set(MODULES)), sorted(expected))
        loaded = self.run_outside(
            "import rubrisproxy.service\n"
            "from rubrisproxy._native import compiled_modules\n"
            "from rubrisproxy.startup import build_line\n"
            "print(repr(compiled_modules())); print(build_line())"
        ).splitlines()
        self.assertEqual(loaded[0], repr(tuple(expected)))
        self.assertIn(f"compiled ({len(MODULES)} of {len(MODULES)} modules)" if expected else "pure Python", loaded[1])
        with open(os.path.join(ROOT, "docs", "deploying.md")) as page:  # the line it shows readers
            self.assertIn(f"compiled ({len(MODULES)} of {len(MODULES)} modules)", page.read().replace("\n", " "))
        if expected:  # native classes: mypyc builds an ordinary class (instances with a dict) of one it cannot make native
            ordinary = self.run_outside(
                "from rubrisproxy.frontend._exchange import Exchange\n"
                "from rubrisproxy.origin._connection import OriginConnection\n"
                "from rubrisproxy.frontend import ClientConnection, ProxiedConnection\n"
                "from rubrisproxy.frontend._context import Frontend\n"
                "print([c.__name__ for c in (Exchange, OriginConnection, ClientConnection, ProxiedConnection, Frontend)"
                " if c.__dictoffset__])")
            self.assertEqual(ordinary.strip(), "[]")

    def test_request_path_suites_pass_on_the_installed_wheel(self):
        """mypyc's code checks the annotated types as it runs, where Python does not: the suites of the compiled
        modules run again against the wheel as installed (the checkout's ``tests`` after its install location)."""
        if not self.expects_compiled():
            raise unittest.SkipTest("the suite itself runs this pure-Python code")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([self.target, ROOT]))
        where = subprocess.run([sys.executable, "-c", "import rubrisproxy.http._request as m; print(m.__file__)"],
                               cwd=self.elsewhere, env=env, capture_output=True, text=True, check=True)
        self.assertTrue(where.stdout.startswith(self.target) and where.stdout.strip().endswith(".so"), where.stdout)
        trial = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "-j2", *(f"tests.{name}" for name in NATIVE_SUITES)],
            cwd=self.elsewhere, env=env, capture_output=True, text=True, timeout=600,
        )
        self.assertEqual(trial.returncode, 0, trial.stdout[-4000:])
        self.assertIn("PASSED", trial.stdout.splitlines()[-1])


class NoCompilerInstallTests(InstalledPackageTests):
    """Without a C compiler the same tree, as a build with one left it, still builds, installs and runs as Python."""

    no_compiler = True


class InstalledDistributionTests(unittest.TestCase):
    """What the README's ``pip install`` made of this checkout: an isolated build, which has none of the runtime."""

    def test_pip_install_compiled_the_request_path(self):
        # the install's .dist-info, not the .egg-info a build leaves in the checkout (on sys.path as the working directory)
        installed = [dist for dist in importlib.metadata.distributions(name="rubrisproxy") if dist.read_text("RECORD")]
        if not installed:
            raise unittest.SkipTest("rubrisproxy is not installed here, only imported from the checkout")
        dist = installed[0]
        if json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"):
            raise unittest.SkipTest("an editable install builds in place")
        if not shutil.which("cc") and not os.environ.get("CI"):
            raise unittest.SkipTest("no C compiler here: the install is pure Python")
        extensions = extension_modules(str(path) for path in dist.files or ())
        self.assertEqual(sorted(set(MODULES) - extensions), [], "pip install . did not compile these")
