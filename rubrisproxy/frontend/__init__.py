"""The client-facing side: HTTP/1.1 server protocol, per-request exchanges, factories."""

from ._connection import ClientConnection
from ._context import Frontend
from ._exchange import Exchange
from ._factory import LocalConnectionFactory, drain

__all__ = ["ClientConnection", "Exchange", "Frontend", "LocalConnectionFactory", "drain"]
