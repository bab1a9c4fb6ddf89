"""Several proxy nodes as one: the proxy's side of the shared-state seam (``sharing``), whatever carries it, and the
transport that carries it through Redis."""

from __future__ import annotations

import os
import socket

from twisted.application import service

from ..config import ClusterConfig
from ..sharing import StateTransport
from ._receiver import ProxyReceiver
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


__all__ = ["ProxyReceiver", "RedisConnection", "RedisError", "RedisTransport", "TransportService", "decode_change", "encode_change",
           "node_name"]
