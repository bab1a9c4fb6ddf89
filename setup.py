"""The optional compiled parts; everything else is in setup.cfg.

- ``rubrisproxy/_accesslines.pyx``: the access log's text line, built by Cython.
- :data:`rubrisproxy._native.MODULES`: request-path modules compiled from their own source by mypyc.

Without a C compiler (or Cython, or mypy) the package installs without them and runs the same code as Python;
``RUBRISPROXY_PURE_PYTHON=1`` skips building them."""

import os
import runpy
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:
    cythonize = None
try:
    from mypyc.build import mypycify
except ImportError:
    mypycify = None

#: The type check mypyc compiles from is pyproject.toml's [tool.mypy], less what tells only of modules it does not
#: compile: an isolated build has none of the runtime's packages, so an ignore that Twisted's types need goes unused.
MYPYC_OPTIONS = ["--no-warn-unused-ignores", "--follow-imports=silent"]


def native_extensions():
    """mypyc's extensions for the modules ``rubrisproxy/_native.py`` names; none when mypyc cannot make them."""
    modules = runpy.run_path(os.path.join("rubrisproxy", "_native.py"))["MODULES"]
    paths = [name.replace(".", "/") + ".py" for name in modules]
    try:
        return mypycify([*MYPYC_OPTIONS, *paths], opt_level="3", group_name="rubrisproxy")
    except BaseException as error:  # mypyc reports a failed type check with SystemExit
        print(f"rubrisproxy: not compiling the request path ({error!r}): it runs as Python", file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """Builds the optional extensions, each time (what is installed is what this build compiled); one that fails to
    build leaves no file behind, not even an earlier build's, which a wheel would otherwise carry from a checkout built
    before with a compiler."""

    def finalize_options(self):
        super().finalize_options()
        self.force = True

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception:
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)
            raise


extensions = []
if not os.environ.get("RUBRISPROXY_PURE_PYTHON"):
    if cythonize is not None:
        extensions += cythonize([Extension("rubrisproxy._accesslines", ["rubrisproxy/_accesslines.pyx"])],
                                language_level=3, quiet=True)
    if mypycify is not None:
        extensions += native_extensions()
    for extension in extensions:
        extension.optional = True  # a failed compile (no compiler) is a warning, and the Python code is used

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
