"""Several proxy nodes as one: the state they share (``sharing``) carried through Redis."""

from __future__ import annotations

import os
import socket

from twisted.application import service

from ..config import ClusterConfig
from ..sharing import StateTransport
from ._redis import RedisTransport, decode_change, encode_change
from ._resp import RedisConnection, RedisError


def node_name(config: ClusterConfig) -> str:
    """This node's name in the cluster: as configured, else the host name and process id."""
    return config.node or f"{socket.gethostname()}:{os.getpid()}"


class TransportService(service.Service):
    """Runs a shared-state transport while the proxy runs."""

    def __init__(self, transport: StateTransport) -> None:
        self.transport = transport

    def startService(self) -> None:
        super().startService()
        self.transport.start()

    def stopService(self) -> None:
        super().stopService()
        self.transport.stop()


__all__ = ["RedisConnection", "RedisError", "RedisTransport", "TransportService", "decode_change", "encode_change",
           "node_name"]
