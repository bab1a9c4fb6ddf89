"""The few places rubrisproxy relies on Twisted's or Autobahn's internals, each behind one function with a test
(tests/test_compat.py, tests/test_hardening_conn.py) that fails when an upgrade changes what it relies on."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

# Twisted's PROXY protocol header parsers live in private modules of twisted.protocols.haproxy; the proxied
# connection reads its header with them (tests/test_compat.py checks they parse as used).
from twisted.protocols.haproxy._v1parser import V1Parser  # noqa: F401
from twisted.protocols.haproxy._v2parser import V2Parser  # noqa: F401

#: accept(2) failures that mean the process or the system is out of a resource, not that the peer failed.
EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


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


def unsent(transport: object) -> int:
    """Bytes written to ``transport`` that the kernel has not taken yet (0 where it cannot tell).

    Reads ``tcp.Connection``'s write buffer (``dataBuffer``, ``offset``, ``_tempDataLen``); for TLS,
    the TCP connection under it, so the count is of encrypted bytes.
    """
    if not hasattr(transport, "dataBuffer"):
        transport = getattr(transport, "transport", None)  # TLSMemoryBIOProtocol: the TCP connection below
        if not hasattr(transport, "dataBuffer"):
            return 0
    t: Any = transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]


class _GuardedListener:
    """A listening socket whose ``accept`` reports running out of descriptors instead of failing.

    ``tcp.Port.doRead`` calls ``self.socket.accept()`` and, on EMFILE and its kin, logs a line and
    returns, to be called again at once while the backlog is readable. Here such a failure is handed
    to ``on_exhausted`` and turned into EAGAIN, which Twisted takes silently as "nothing to accept".
    Everything else is the real socket's.
    """

    __slots__ = ("_socket", "_on_exhausted", "_on_accepted", "_on_close")

    def __init__(self, sock: Any, on_exhausted: Callable[[int], None], on_accepted: Callable[[], None],
                 on_close: Callable[[], None]) -> None:
        self._socket = sock
        self._on_exhausted = on_exhausted
        self._on_accepted = on_accepted
        self._on_close = on_close

    def accept(self) -> tuple[Any, Any]:
        try:
            accepted = self._socket.accept()
        except OSError as error:
            if error.errno not in EXHAUSTED:
                raise
            self._on_exhausted(error.errno)
            raise BlockingIOError(errno.EAGAIN, "accepting paused") from None
        self._on_accepted()
        return accepted  # type: ignore[no-any-return]

    def close(self) -> None:
        self._on_close()
        self._socket.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def guard_accepts(port: object, on_exhausted: Callable[[int], None], on_accepted: Callable[[], None],
                  on_close: Callable[[], None]) -> bool:
    """Have a listening ``tcp.Port`` (or a subclass: TLS, UNIX) report accept(2) running out of descriptors
    to ``on_exhausted(errno)`` instead of logging it on every reactor turn; ``on_accepted`` hears of each
    accepted connection, ``on_close`` of the port's socket closing. False for a port that is not one.
    """
    sock = getattr(port, "socket", None)
    if sock is None or not hasattr(sock, "accept") or not hasattr(port, "stopReading"):
        return False
    port.socket = _GuardedListener(sock, on_exhausted, on_accepted, on_close)  # type: ignore[attr-defined]
    return True


def direct_write(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, sending at once when nothing is queued ahead.

    Twisted's ``write`` always queues and registers for writability, so every message
    costs two epoll changes and one more trip through the reactor. A relay mostly
    writes into an empty buffer, so this tries the socket first and hands only what
    the kernel did not take to ``transport.write``: order, buffering and producer
    pausing are unchanged. Reads ``tcp.Connection``'s write buffer (``dataBuffer``, ``offset``,
    ``_tempDataLen``) and calls its ``writeSomeData``.
    """
    if (
        not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    ):
        sent = transport.writeSomeData(data)
        if sent.__class__ is int and sent > 0:  # type: ignore[operator]
            if sent == len(data):
                return
            data = data[sent:]  # type: ignore[misc]
    transport.write(data)
