"""Backends: named groups of origin servers, balancing over them, and their queue."""

from ._backend import LOOKING, QUEUED, SESSION_GONE, Backend, Waiter
from ._balance import (
    ConsistentHash,
    IBalancer,
    LeastConnections,
    PowerOfTwoChoices,
    RoundRobin,
    balancer_for,
    header_key,
    source_key,
    uri_key,
    url_param_key,
)
from ._engineio import (
    PEEK_LIMIT,
    UNKNOWN_SESSION,
    EngineIOStickiness,
    OpenPeek,
    PolledSession,
    PollPeek,
    is_engineio,
    open_packet_sid,
    session_id,
)
from ._health import HealthChecker
from ._login import Login
from ._replica import SharedBackends
from ._server import Server
from ._shared import SharedStickStore
from ._sidprefix import SidPrefix
from ._sticky import cookie_value

__all__ = [
    "LOOKING",
    "PEEK_LIMIT",
    "QUEUED",
    "SESSION_GONE",
    "UNKNOWN_SESSION",
    "Backend",
    "ConsistentHash",
    "EngineIOStickiness",
    "HealthChecker",
    "IBalancer",
    "OpenPeek",
    "LeastConnections",
    "Login",
    "PolledSession",
    "PollPeek",
    "PowerOfTwoChoices",
    "RoundRobin",
    "Server",
    "SharedBackends",
    "SharedStickStore",
    "SidPrefix",
    "Waiter",
    "balancer_for",
    "cookie_value",
    "header_key",
    "is_engineio",
    "open_packet_sid",
    "session_id",
    "source_key",
    "uri_key",
    "url_param_key",
]
