"""A timeout that is cheap to move, for timers reset on every request or read."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Deadline:
    """Calls ``on_expire`` once the deadline last :meth:`set` passes.

    Moving the deadline later costs one clock read: the single pending DelayedCall is
    left alone and, when it fires early, re-armed for what remains. Only moving it
    earlier resets the call. :meth:`clear` disarms without touching the reactor;
    :meth:`stop` cancels the call (on close, so nothing is left behind).
    """

    __slots__ = ("_clock", "_on_expire", "_at", "_call", "_call_at")

    def __init__(self, clock: IReactorTime, on_expire: Callable[[], object]) -> None:
        self._clock = clock
        self._on_expire = on_expire
        self._at: float | None = None
        self._call: IDelayedCall | None = None
        self._call_at = 0.0  # when the pending call fires

    @property
    def armed(self) -> bool:
        return self._at is not None

    @property
    def remaining(self) -> float | None:
        """Seconds until it expires (None: not armed)."""
        return None if self._at is None else max(0.0, self._at - self._clock.seconds())

    def set(self, delay: float) -> None:
        self._at = at = self._clock.seconds() + delay
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self._fire)
            self._call_at = at
        elif self._call_at > at:
            call.reset(delay)
            self._call_at = at

    def clear(self) -> None:
        self._at = None

    def stop(self) -> None:
        self._at = None
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def disown(self) -> None:
        """Stop, and let go of ``on_expire`` (its owner is gone): a bound method would keep a cycle through the
        owner, which only Python's cyclic garbage collector frees."""
        self.stop()
        self._on_expire = _nothing

    def _fire(self) -> None:
        self._call = None
        at = self._at
        if at is None:
            return
        remaining = at - self._clock.seconds()
        if remaining > 0:
            self._call = self._clock.callLater(remaining, self._fire)
            self._call_at = at
            return
        self._at = None
        self._on_expire()


def _nothing() -> None:
    """A disowned :class:`Deadline`'s callback."""
