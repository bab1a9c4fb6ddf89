"""Flow control between the two sides of a relay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from twisted.internet.interfaces import IPushProducer, ISSLTransport, ITransport
from zope.interface import implementer

from ._compat import accepted_without_delay, tcp_buffered, unsent

BACKPRESSURE = "backpressure"


class FlowTransport(Protocol):
    """What flow control uses of a transport. Twisted's TCP and TLS transports are also push producers
    (their reading) and consumers (their writing), which their declared ``ITransport`` does not say."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


def tune_transport(transport: ITransport) -> None:
    """Relay-friendly socket settings: no Nagle delay on what is relayed (set already on a connection accepted
    from a listening socket that has it)."""
    if accepted_without_delay(transport):
        return
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass  # not a TCP socket (a UNIX socket, say)


@implementer(IPushProducer)
class ReadGate:
    """Pauses reading from ``transport`` while any reason to pause holds.

    Registered as the streaming producer of the *other* side's transport, it is
    paused when that side's write buffer fills (reason ``"backpressure"``); the
    relay adds its own reasons (waiting for an origin, a pipelined request).
    ``on_backpressure(paused)`` tells the owner when the other side stalls, so it
    can run an inactivity timeout only while it is stuck.
    """

    __slots__ = ("_transport", "_reasons", "_on_backpressure")

    def __init__(self, transport: ITransport | FlowTransport, on_backpressure: Callable[[bool], None] | None = None) -> None:
        self._transport = cast(FlowTransport, transport)
        self._reasons: tuple[str, ...] = ()  # a tuple: at most a few reasons, and none costs nothing
        self._on_backpressure = on_backpressure

    @property
    def paused(self) -> bool:
        return bool(self._reasons)

    def paused_for(self, reason: str) -> bool:
        """Whether ``reason`` is one of the reasons it is paused."""
        return reason in self._reasons

    def pause(self, reason: str) -> None:
        reasons = self._reasons
        if not reasons:
            self._transport.pauseProducing()
        if reason not in reasons:
            self._reasons = reasons + (reason,)

    def resume(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons = tuple(r for r in self._reasons if r != reason)
        if not self._reasons and not getattr(self._transport, "disconnecting", False):
            self._transport.resumeProducing()

    def lift(self) -> None:
        """Drop every reason and read (a lingering close reads, to discard, whatever paused it before)."""
        self._reasons = ()
        self._transport.resumeProducing()

    # IPushProducer, as seen by the consumer on the other side

    def pauseProducing(self) -> None:
        self.pause(BACKPRESSURE)
        if self._on_backpressure is not None:
            self._on_backpressure(True)

    def resumeProducing(self) -> None:
        if BACKPRESSURE in self._reasons:
            self.resume(BACKPRESSURE)
            if self._on_backpressure is not None:
                self._on_backpressure(False)

    def stopProducing(self) -> None:
        """The consumer went away; its owner handles that through connectionLost."""

    def disown(self) -> None:
        """Call its owner back no more (the owner is gone): its bound method would keep a cycle through the owner,
        which only Python's cyclic garbage collector frees."""
        self._on_backpressure = None


@implementer(IPushProducer)
class WriteWatch:
    """A transport's producer while nothing else is: hears when its write buffer fills and drains.

    ``on_change(full)`` is called when the buffer goes over Twisted's limit and when it has
    emptied again; nothing is paused, the owner decides what waits.
    """

    __slots__ = ("full", "_on_change")

    def __init__(self, on_change: Callable[[bool], None]) -> None:
        self.full = False
        self._on_change = on_change

    def pauseProducing(self) -> None:
        if not self.full:
            self.full = True
            self._on_change(True)

    def resumeProducing(self) -> None:
        if self.full:
            self.full = False
            self._on_change(False)

    def stopProducing(self) -> None:
        """The transport is closing; its owner handles that through connectionLost."""

    def disown(self) -> None:
        """Call its owner back no more (see :meth:`ReadGate.disown`)."""
        self._on_change = _ignore


def _ignore(full: bool) -> None:
    """A disowned :class:`WriteWatch`'s owner."""


class ProducerSlot:
    """The one streaming producer a transport may have, registered at most once at a time.

    ``idle``, if given, is registered whenever no other producer is (a :class:`WriteWatch`).
    """

    __slots__ = ("_transport", "producer", "_idle")

    def __init__(self, transport: ITransport | FlowTransport, idle: IPushProducer | None = None) -> None:
        self._transport = cast(FlowTransport, transport)
        self.producer: ReadGate | None = None
        self._idle = idle
        if idle is not None:
            self._transport.registerProducer(idle, True)

    def attach(self, producer: ReadGate) -> None:
        if self.producer is not producer:
            self._unregister()
            self._transport.registerProducer(producer, True)
            self.producer = producer

    def detach(self) -> None:
        """Unregister, and let the producer read again if this consumer had paused it; the idle producer, if
        any, takes its place."""
        if self.producer is not None:
            self._unregister()
            if self._idle is not None:
                self._transport.registerProducer(self._idle, True)

    def drop_idle(self) -> None:
        """Register no idle producer from now on (the connection became something else than HTTP)."""
        if self._idle is not None and self.producer is None:
            self._transport.unregisterProducer()
        self._idle = None

    def _unregister(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            self._transport.unregisterProducer()
            producer.resumeProducing()
        elif self._idle is not None:
            self._transport.unregisterProducer()
            self._idle.resumeProducing()  # the attached producer is told of a full buffer from here on


def backed_up(transport: ITransport) -> bool:
    """Whether ``transport`` holds bytes the kernel has not taken yet (always True for one that does not say, TLS)."""
    return not tcp_buffered(transport) or unsent(transport) > 0


def writes_directly(transport: ITransport) -> bool:
    """Whether :func:`~rubrisproxy._compat.direct_write` may be used on ``transport`` (plain TCP; TLS and others keep ``write``)."""
    return tcp_buffered(transport)


def half_close(transport: ITransport, close: Callable[[], object] | None = None) -> bool:
    """Shut the write side only where the transport can (TCP), and say so; otherwise close after what is
    queued (with ``close``, the transport's ``loseConnection`` if not given) and return False.

    A TLS transport passes ``loseWriteConnection`` to the TCP connection under it, which would
    end the TCP stream inside the TLS one: it is closed (close_notify, then FIN) instead.
    """
    lose_write = None if ISSLTransport.providedBy(transport) else getattr(transport, "loseWriteConnection", None)
    if lose_write is None:
        (close or transport.loseConnection)()
        return False
    lose_write()
    return True
