"""Client messages a session holds while it has no backend leg to send them on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._hooks import Message
    from ._resume import ResumeBudget


class HeldMessages:
    """What the client sent while its session moves, in order, within two limits: the session's own buffer
    (``session-buffer``) and the bytes all sessions of the proxy may hold (a :class:`ResumeBudget`)."""

    __slots__ = ("_messages", "size", "_limit", "_budget")

    def __init__(self, limit: int, budget: ResumeBudget) -> None:
        self._messages: list[Message] | tuple[()] = ()  # a list from the first message held: most sessions hold none
        self.size = 0  # the payload bytes held
        self._limit = limit
        self._budget = budget

    def hold(self, message: Message) -> tuple[str, str] | None:
        """Hold ``message``; if a limit does not allow it, the kind of the failure and why (the message is then
        held only to be counted lost with the others)."""
        size = len(message.payload)
        messages = self._messages
        if isinstance(messages, list):
            messages.append(message)
        else:
            self._messages = [message]
        if self.size + size > self._limit:
            return "session-buffer", "session buffer full while moving to another server"
        if not self._budget.take(size):
            return "proxy-buffer", "proxy resume buffers full"
        self.size += size
        return None

    @property
    def count(self) -> int:
        """How many messages are held."""
        return len(self._messages)

    def peek(self) -> list[Message]:
        """Every held message, oldest first, still held."""
        return list(self._messages)

    def release(self) -> list[Message]:
        """Every held message, oldest first; none is held after."""
        held, self._messages = self._messages, ()
        self._budget.give_back(self.size)
        self.size = 0
        return held if isinstance(held, list) else []
