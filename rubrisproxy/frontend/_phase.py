"""Where a client connection is in its life: one state, read through module names."""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    """A :class:`~rubrisproxy.frontend.ClientConnection`'s state (its ``_phase``).

    ``OPENING`` until its first read, which decides what it speaks: ``HTTP2`` (ALPN said ``h2``, or the
    read is HTTP/2's preface), where an HTTP/2 connection owns every read until ``LOST``, or else HTTP/1.1.
    ``READING`` while it serves HTTP/1.1: requests are read, and answered one at a time in order.
    An upgrade request (WebSocket, ``Upgrade`` header) moves it to ``UPGRADING``: nothing after
    that request is read (the gate's ``upgrade`` reason) until it is answered; a refusal (any
    response but the hand-over) goes back to ``READING``, a hand-over to ``UPGRADED``, where a
    relay owns every read, half-close and loss and the HTTP timers are stopped. ``CLOSING``, from
    ``READING`` or ``UPGRADING``, once the proxy decided to close (an error, a limit, drain): no
    new request is answered, the one in progress finishes. ``LOST`` from any of them when the
    transport is gone; later events are ignored. An upgrade request still unanswered when a close
    began keeps its gate reason, which the answer releases (see ``exchange_done``); its 101 may
    still hand the connection over. ``MOVING``, from ``OPENING`` or ``READING`` while idle, when a live
    upgrade carries it to the new process (reading paused): back where it was if refused, else ``LOST``
    (its socket let go of, nothing more logged here: the new process logs its whole life).
    ``LINGERING``, from ``CLOSING`` with no request in progress, when the client may still be sending (half a
    request read, a body not read to its end, requests or bytes read after the last one answered): the
    write side is shut once what was written is sent (a FIN, not the reset a close with unread bytes
    makes), what the client sends is read and discarded, never parsed, and the connection closes at the
    client's end of stream or a bound (:class:`~rubrisproxy.frontend._lingering.Linger`), then ``LOST``.
    """

    __hash__ = object.__hash__  # members are compared by identity: Enum's hashes their names in Python

    OPENING = "opening"
    HTTP2 = "http2"
    READING = "reading"
    UPGRADING = "upgrading"
    UPGRADED = "upgraded"
    CLOSING = "closing"
    LINGERING = "lingering"
    MOVING = "moving"
    LOST = "lost"


# Read through module names: a member read through its Enum class costs a descriptor call.
OPENING, HTTP2, READING, UPGRADING, UPGRADED, CLOSING, LINGERING, MOVING, LOST = (
    Phase.OPENING, Phase.HTTP2, Phase.READING, Phase.UPGRADING, Phase.UPGRADED, Phase.CLOSING, Phase.LINGERING,
    Phase.MOVING, Phase.LOST,
)


#: The phases each one may move to (see :class:`Phase`): ``ClientConnection._to`` moves only along them.
FOLLOWS = {
    OPENING: frozenset((READING, HTTP2, CLOSING, MOVING, LOST)),
    HTTP2: frozenset((LOST,)),
    READING: frozenset((UPGRADING, UPGRADED, CLOSING, MOVING, LOST)),
    MOVING: frozenset((OPENING, READING, CLOSING, LOST)),
    UPGRADING: frozenset((READING, UPGRADED, CLOSING, LOST)),
    CLOSING: frozenset((UPGRADED, LINGERING, LOST)),
    LINGERING: frozenset((LOST,)),
    UPGRADED: frozenset((LOST,)),
    LOST: frozenset(),
}
