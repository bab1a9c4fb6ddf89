"""The few places the proxy relies on Twisted's or Autobahn's internals, each with a test
(tests/test_compat.py) that fails when an upgrade changes what it relies on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def rearm_pong_timeout(leg: Any, call_later: Callable[..., Any]) -> None:
    """Give an Autobahn protocol's pending auto-ping another ``autoPingTimeout`` for its pong.

    Autobahn keeps the pending ping's timer in ``autoPingTimeoutCall`` (anything with
    ``cancel()``, here from ``call_later``): it cancels it when the matching pong
    arrives or the connection is lost, and clears it before calling ``onAutoPingTimeout``.
    """
    leg.autoPingTimeoutCall = call_later(leg.autoPingTimeout, leg.onAutoPingTimeout)


def use_batched_timer(factory: Any, timer: Any) -> None:
    """Make an Autobahn factory's protocols arm their timers (handshakes, pings) on ``timer``.

    Autobahn's own (``txaio``'s batched timer) rounds every deadline down to a whole
    second and reads the global reactor; ``timer`` needs only ``call_later(delay, func)``
    returning something with ``cancel()``.
    """
    factory._batched_timer = timer


def cancel_pong_timeout(leg: Any) -> None:
    """Count traffic from the peer as its answer to the pending auto-ping, as Autobahn does for a data frame
    it parses itself: the pong timeout is cancelled and the next ping scheduled an interval from now."""
    leg._cancelAutoPingTimeoutCall()


def compresses(leg: Any) -> bool:
    """Whether an open Autobahn protocol negotiated a per-message compression extension."""
    return leg._perMessageCompress is not None


def write_backlog(transport: Any) -> int:
    """Bytes written to ``transport`` that the kernel has not taken yet; 0 when it cannot say.

    Twisted keeps them in a TCP connection's ``dataBuffer`` (from ``offset``) and
    ``_tempDataLen``; a protocol wrapper (TLS) is looked through to the connection under it.
    """
    if not isinstance(transport, tcp.Connection):
        transport = getattr(transport, "transport", None)
        if not isinstance(transport, tcp.Connection):
            return 0
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
