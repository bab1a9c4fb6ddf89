"""The origin side: the client factory, keep-alive pool and origin HTTP/1.1 protocol."""

from ._connection import OriginConnection, OriginRelay, OriginUser
from ._connector import ConnectTimeout, OriginConnector
from ._pool import ConnectionPool

__all__ = ["ConnectTimeout", "ConnectionPool", "OriginConnection", "OriginConnector", "OriginRelay", "OriginUser"]

