"""The modules built as C extensions (by mypyc) when rubrisproxy is installed where a C compiler is, and which of
them this process runs compiled.

Each is plain Python, the same source either way; without a compiler, or with ``RUBRISPROXY_PURE_PYTHON=1`` when
installing, they run as Python. They are the request path's modules that talk mostly to each other: the two HTTP/1
parsers (llhttp calls back into compiled methods without an interpreter frame), the origin's request head, the
client connection and its parts, the frontend and the live settings it reads, the exchange chain and the origin
connection, balancing and servers, the origin pool, deadlines, flow control and the counters. Compiled code reads
a native object's attributes directly but an interpreted one's more slowly than the interpreter does, so what is
compiled is chosen by who talks to whom (``bench/results/native.txt``). Plain data: ``setup.py`` reads :data:`MODULES` without importing the runtime."""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES

#: What ``setup.py`` compiles, as module names.
MODULES = (
    "rubrisproxy.http._request",
    "rubrisproxy.http._response",
    "rubrisproxy.http._target",
    "rubrisproxy.frontend._heads",
    "rubrisproxy.frontend._timing",
    "rubrisproxy.frontend._dispatch",
    "rubrisproxy.frontend._exchange_ending",
    "rubrisproxy.frontend._resubmit",
    "rubrisproxy.frontend._exchange_response",
    "rubrisproxy.frontend._exchange",
    "rubrisproxy.frontend._forward_exchange",
    "rubrisproxy.settings",
    "rubrisproxy.frontend._context",
    "rubrisproxy.frontend._client_parts",
    "rubrisproxy.frontend._timeouts",
    "rubrisproxy.frontend._lingering",
    "rubrisproxy.frontend._ending",
    "rubrisproxy.frontend._pipeline",
    "rubrisproxy.frontend._handover",
    "rubrisproxy.frontend._moving",
    "rubrisproxy.frontend._connection",
    "rubrisproxy.frontend._proxied",
    "rubrisproxy.backend._actions",
    "rubrisproxy.backend._backend",
    "rubrisproxy.backend._engineio",
    "rubrisproxy.backend._queue",
    "rubrisproxy.backend._server",
    "rubrisproxy.origin._pool",
    "rubrisproxy.origin._connection",
    "rubrisproxy.counters",
    "rubrisproxy.deadline",
    "rubrisproxy.flow",
)


def compiled_modules() -> tuple[str, ...]:
    """Those of :data:`MODULES` this process has loaded as C extensions."""
    suffixes = tuple(EXTENSION_SUFFIXES)
    return tuple(name for name in MODULES if (getattr(sys.modules.get(name), "__file__", None) or "").endswith(suffixes))
