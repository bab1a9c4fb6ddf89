"""A lingering close: the client may still be sending as the proxy closes, so what it sends is read and
discarded until it closes too, within bounds (what nginx's ``lingering_close`` and HAProxy do).

A close(2) with bytes unread in the socket's receive buffer makes the kernel send a reset instead of a FIN;
a client still sending then sees "connection reset" and may lose the response it was sent (the 413 for a
body it was still uploading). A lingering connection shuts its write side once its response is sent (the
FIN: the response is complete), reads and discards what comes, and closes at the client's end of stream, or
after ``timeout linger-idle`` without a read, ``timeout linger`` in all, or ``limits linger-bytes`` discarded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr, trait
from twisted.internet.interfaces import IReactorTime, ITCPTransport

from ..deadline import Deadline
from ..flow import half_close
from ._client_parts import ClientParts
from ._phase import CLOSING, LINGERING, Phase

if TYPE_CHECKING:
    from ..config import Timeouts


class Linger:
    """The bounds of one lingering close (see the module), and its end.

    ``half_closed`` says whether the transport shut its write side itself (TCP: :meth:`sent` follows, once
    what was written is sent and the FIN is out) or not (TLS: its close_notify went with ``loseConnection``,
    and Twisted's TLS layer reads on until the client's own): the bounds start at :meth:`sent`, or at once.
    Until the FIN is out, a client that takes none of the response is cut after ``timeout client``.
    """

    __slots__ = ("_transport", "_clock", "timer", "_total", "_idle", "_until", "_left")

    def __init__(self, transport: ITCPTransport, clock: IReactorTime, timeouts: Timeouts, max_bytes: int,
                 half_closed: bool) -> None:
        self._transport = transport
        self._clock = clock
        self.timer = Deadline(clock, self._expired)  # its connection's close timer: stopped and disowned with it
        self._total = timeouts.linger
        self._idle = timeouts.linger_idle
        self._until = 0.0  # when the overall bound ends, once it runs (0: the response is still being sent)
        self._left = max_bytes
        if half_closed:
            self.timer.set(timeouts.client)  # what is left of the response is still being sent
        else:
            self.sent()

    def sent(self) -> None:
        """The response is sent and the write side shut: the client has ``linger`` to close its side."""
        self._until = self._clock.seconds() + self._total
        self.timer.set(min(self._idle, self._total))

    def read(self, size: int) -> None:
        """``size`` bytes came, and were discarded."""
        self._left -= size
        if self._left < 0:  # a client that does not stop sending
            self.timer.stop()
            self._transport.abortConnection()
        elif self._until:
            self.timer.set(min(self._idle, self._until - self._clock.seconds()))

    def client_ended(self) -> None:
        """The client closed its side (end of stream): close, at once if the FIN is out (nothing is left unread
        then: no reset), else once the rest of the response is sent (its timer still bounds that)."""
        self._transport.loseConnection()

    def _expired(self) -> None:
        """No read for ``linger-idle``, or ``linger`` in all: close. What was sent is still delivered (a reset
        comes only if bytes came meanwhile). Cut a TLS connection, whose close began already, and one whose
        client took none of the response for ``timeout client``."""
        transport = self._transport
        if not self._until or getattr(transport, "disconnecting", False):
            transport.abortConnection()
        else:
            transport.loseConnection()


@trait
@mypyc_attr(allow_interpreted_subclasses=True)  # as ClientConnection
class Lingering(ClientParts):
    """The part of :class:`~rubrisproxy.frontend.ClientConnection` that closes it lingering (see the module)
    when its client may still be sending: ``close`` asks :meth:`_linger_close`."""

    def _linger_close(self) -> bool:
        """Close while the client may still be sending: shut the write side once what was written is sent, and
        read and discard what comes until the client's end of stream or a bound. False, and nothing done, where
        it does not apply: a request still in progress (its end closes), a connection handed to another
        protocol (HTTP/2, a WebSocket), or ``linger-bytes`` 0 (lingering off)."""
        phase = self._phase
        if phase is LINGERING:
            return True  # closing already
        max_bytes = self.frontend.limits.linger_bytes
        if (phase is not CLOSING or self.current is not None or not max_bytes or self._close_timer is not None
                or getattr(self.transport, "disconnecting", False)):
            return False  # (a close timer, or disconnecting: the transport's close began already)
        self._to(LINGERING)
        self._held_error = None
        self._wait(None)
        transport = self.transport
        self.download.drop_idle()  # a producer registered would hold the FIN back
        self.gate.lift()  # whatever paused reading (a refused request, a pipeline), it reads now
        # TCP (or UNIX) shuts its write side once all is sent; TLS sends close_notify and its layer reads on.
        half_closed = half_close(transport)
        self._linger = linger = Linger(transport, self.frontend.clock, self.frontend.timeouts, max_bytes, half_closed)
        self._close_timer = linger.timer
        return True

    def _read_aside(self, phase: Phase, data: bytes) -> bool:
        """A read in any phase but ``READING`` and ``OPENING``: True if it was discarded (lingering, or a close
        began and nothing is in progress), else parsed as in ``READING``."""
        if phase is LINGERING:
            linger = self._linger
            assert linger is not None  # set as it began
            linger.read(len(data))
            return True
        if phase is CLOSING and self.current is None:
            self._ignored += len(data)
            return True
        return False

    def writeConnectionLost(self) -> None:
        """Its write side is shut: a lingering close's response is all sent, its FIN out; an upgraded
        connection's relay needs nothing."""
        if self._phase is LINGERING:
            linger = self._linger
            assert linger is not None  # set as it began
            linger.sent()
