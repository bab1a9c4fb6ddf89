"""The origin side: the client factory, keep-alive pool, origin HTTP/1.1 protocol, and the proxy's own login."""

from ._connection import OriginConnection, OriginRelay, OriginUser
from ._connector import ConnectTimeout, OriginConnector
from ._login import ChallengeDrain, LoginAttempt, Verdict
from ._pool import ConnectionPool

__all__ = [
    "ChallengeDrain", "ConnectTimeout", "ConnectionPool", "LoginAttempt", "OriginConnection", "OriginConnector",
    "OriginRelay", "OriginUser", "Verdict",
]

