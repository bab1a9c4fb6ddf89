"""Worker processes: a supervisor (the twistd process) and ``[process] workers`` workers serving the same
listeners, each binding them with ``SO_REUSEPORT``; the channel between them is AMP over a socket pair."""

from ._channel import VERSION
from ._handle import HandleState, WorkerHandle
from ._service import SupervisorService, build_supervisor
from ._supervisor import Supervisor, SupervisorState
from ._worker import HEALTH_TOPIC, Worker, WorkerState, share, worker_config

__all__ = [
    "HEALTH_TOPIC",
    "VERSION",
    "HandleState",
    "Supervisor",
    "SupervisorService",
    "SupervisorState",
    "Worker",
    "WorkerHandle",
    "WorkerState",
    "build_supervisor",
    "share",
    "worker_config",
]
