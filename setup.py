"""The optional compiled access-log line (``rubrisproxy/_accesslines.pyx``); everything else is in setup.cfg.

Without Cython, or without a C compiler, the package installs without it and uses the pure-Python line
(``RUBRISPROXY_PURE_PYTHON=1`` skips building it)."""

import os

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:
    cythonize = None

extensions = []
if cythonize is not None and not os.environ.get("RUBRISPROXY_PURE_PYTHON"):
    # optional: a failed compile (no compiler) is a warning, and the pure-Python line is used
    extensions = cythonize([Extension("rubrisproxy._accesslines", ["rubrisproxy/_accesslines.pyx"])],
                           language_level=3, quiet=True)
    for extension in extensions:
        extension.optional = True  # cythonize's copies do not keep it

setup(ext_modules=extensions)
