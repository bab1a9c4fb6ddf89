"""An answer awaited for a bounded time: whichever comes first, the answer or the guard's default, is the one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")


def guarded(clock: IReactorTime, seconds: float, answer: Callable[[T], None], default: T) -> Callable[[T], None]:
    """A callable that hands ``answer`` what it is called with, once: later calls are ignored. Not called within
    ``seconds``, it is called with ``default``."""
    answered = False

    def once(value: T) -> None:
        nonlocal answered
        if answered:
            return
        answered = True
        if timer.active():
            timer.cancel()
        answer(value)

    timer = clock.callLater(seconds, once, default)
    return once
