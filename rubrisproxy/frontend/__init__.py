"""The client-facing side: HTTP/1.1 server protocol, per-request exchanges, factories."""

from ._connection import ClientConnection
from ._context import Frontend
from ._exchange import Exchange
from ._factory import LocalConnectionFactory, drain
from ._forward import ForwardProxy, hash_password

__all__ = ["ClientConnection", "Exchange", "ForwardProxy", "Frontend", "LocalConnectionFactory", "drain", "hash_password"]
