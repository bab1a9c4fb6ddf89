"""Several proxy nodes as one: the proxy's side of the shared-state seam (``sharing``), whatever carries it, and the
transport that carries it through Redis."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from twisted.application import service

from ..bus import Bus
from ..config import ClusterConfig, ProxyConfig
from ..sharing import StateTransport
from ._bus import BusTransport
from ._receiver import ProxyReceiver
from ._redis import RedisTransport, decode_change, encode_change
from ._resp import RedisConnection, RedisError


def node_name(config: ClusterConfig) -> str:
    """This node's name in the cluster: as configured, else the host name and process id."""
    return config.node or f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Siblings:
    """A worker process's siblings: the channel to them (through the supervisor) and this worker's index."""

    bus: Bus
    index: int


def shared_state(reactor: Any, config: ProxyConfig, siblings: Siblings | None) -> tuple[StateTransport | None, str]:
    """The transport a proxy shares its state through, and its name there: Redis with ``[cluster]`` (each worker
    a node of its own), else the supervisor's channel for a worker with siblings, else none."""
    cluster = config.cluster
    if cluster is not None:
        node = node_name(cluster) + (f"/{siblings.index}" if siblings is not None else "")
        return RedisTransport(reactor, cluster.redis, node), node
    if siblings is not None:
        node = f"worker-{siblings.index}"
        return BusTransport(siblings.bus, node, reactor), node
    return None, ""


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


__all__ = ["BusTransport", "ProxyReceiver", "Siblings", "shared_state", "RedisConnection", "RedisError", "RedisTransport", "TransportService", "decode_change", "encode_change",
           "node_name"]
