"""What carries a payload from one worker process to the others: the supervisor's channel (``rubrisproxy.workers``)
provides it in each worker. Declared here, at the bottom, so any layer can take one without importing process
code (a state-replication seam publishes its changes and subscribes to the others')."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: What a subscriber is called with: the payload, and the index of the worker that published it (-1: the
#: supervisor).
Subscriber = Callable[[bytes, int], None]
#: What answers a question asked on a topic: called with the question and the asking worker's index, returns the
#: answer (empty: nothing to say).
Responder = Callable[[bytes, int], bytes]


class Bus(Protocol):
    """Topics shared by the proxy's processes. ``publish`` reaches every other worker (not the publisher);
    with ``retain``, the last payload under that key reaches workers that start later too. ``ask`` puts a
    question to every other worker and gathers their answers."""

    def publish(self, topic: str, payload: bytes, retain: str = "") -> None:
        """Send ``payload`` on ``topic``."""

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with each payload published on ``topic`` by another process."""

    def ask(self, topic: str, question: bytes, answered: Callable[[list[bytes]], None]) -> None:
        """Put ``question`` to the other workers' responders on ``topic``: ``answered`` gets their non-empty
        answers once every one has answered (an empty list if none could be asked)."""

    def respond(self, topic: str, responder: Responder) -> None:
        """Answer the questions the other workers ask on ``topic`` with ``responder``."""
