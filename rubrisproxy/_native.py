"""The modules built as C extensions (by mypyc) when rubrisproxy is installed where a C compiler is, and which of
them this process runs compiled.

Each is plain Python, the same source either way; without a compiler, or with ``RUBRISPROXY_PURE_PYTHON=1`` when
installing, they run as Python. They are the request path's modules whose classes keep to themselves: the two
HTTP/1 parsers (llhttp calls back into compiled methods without an interpreter frame), the origin's request head,
balancing and servers, the origin pool, deadlines, flow control and the counters. Compiled code reads a native
object's attributes directly but a Twisted protocol's more slowly than the interpreter does, so the connection
classes are left interpreted (``bench/results/native.txt``). Plain data: ``setup.py`` reads :data:`MODULES` without importing the runtime.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES

#: What ``setup.py`` compiles, as module names.
MODULES = (
    "rubrisproxy.http._request",
    "rubrisproxy.http._response",
    "rubrisproxy.http._target",
    "rubrisproxy.frontend._heads",
    "rubrisproxy.backend._actions",
    "rubrisproxy.backend._backend",
    "rubrisproxy.backend._engineio",
    "rubrisproxy.backend._queue",
    "rubrisproxy.backend._server",
    "rubrisproxy.origin._pool",
    "rubrisproxy.counters",
    "rubrisproxy.deadline",
    "rubrisproxy.flow",
)


def compiled_modules() -> tuple[str, ...]:
    """Those of :data:`MODULES` this process has loaded as C extensions."""
    suffixes = tuple(EXTENSION_SUFFIXES)
    return tuple(name for name in MODULES if (getattr(sys.modules.get(name), "__file__", None) or "").endswith(suffixes))
