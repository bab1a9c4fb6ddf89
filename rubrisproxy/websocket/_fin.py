"""How the proxy ends a WebSocket's connection once it is done with it: with a FIN, a reset only where a FIN cannot.

A reset (``abortConnection``, or ``close(2)`` with bytes unread in the socket's receive buffer) makes a browser
report the WebSocket unclean (1006, ``wasClean`` false) and Node's ``ws`` and Python's ``websockets`` a connection
reset, whatever close frames were exchanged, and it can destroy a close frame still in flight: the peer's kernel
drops what it had not read yet. So the proxy closes with a FIN: at once after a completed closing handshake (the
peer sends nothing after its close frame), and after a close frame whose answer it does not wait for (a protocol
error), by shutting its write side only and reading on, to discard, until the peer ends its side too (a linger).
"""

from __future__ import annotations

from twisted.internet.interfaces import ITCPTransport

from .._compat import tcp_buffered, unsent
from ..flow import ReadGate, half_close


def close_or_cut(transport: ITCPTransport) -> None:
    """Close ``transport`` with a FIN where that ends it at once, a TCP connection with nothing left to send; else
    cut it: bytes still unsent to a peer that does not read would hold a FIN back for ever, and the close of a TLS
    connection or an HTTP/2 stream waits on its peer (one that timed out, here)."""
    if tcp_buffered(transport) and not unsent(transport):
        transport.loseConnection()
    else:
        transport.abortConnection()


def linger(transport: ITCPTransport, gate: ReadGate | None) -> None:
    """Close ``transport`` after a close frame whose answer is not awaited (RFC 6455 7.1.7): its write side shut once
    the frame is sent (the FIN; TLS: its close_notify), and what the peer still sends (the rest of a frame too big, its
    own close) read and discarded, whatever paused reading, until the peer ends its side too: its connection closes
    then (the caller bounds the wait)."""
    if gate is not None:
        gate.lift()
    half_close(transport)
