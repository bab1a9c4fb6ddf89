"""What carries a payload from one worker process to the others: the supervisor's channel (``rubrisproxy.workers``)
provides it in each worker. Declared here, at the bottom, so any layer can take one without importing process
code (a state-replication seam publishes its changes and subscribes to the others')."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: What a subscriber is called with: the payload, and the index of the worker that published it (-1: the
#: supervisor).
Subscriber = Callable[[bytes, int], None]


class Bus(Protocol):
    """Topics shared by the proxy's processes. ``publish`` reaches every other worker (not the publisher);
    with ``retain``, the last payload under that key reaches workers that start later too."""

    def publish(self, topic: str, payload: bytes, retain: str = "") -> None:
        """Send ``payload`` on ``topic``."""

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with each payload published on ``topic`` by another process."""
