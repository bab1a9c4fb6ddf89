"""The client-facing side: HTTP/1.1 server protocol, per-request exchanges, factories."""

from ._adopt_session import SessionAdopter
from ._auth import hash_password
from ._connection import ClientConnection
from ._context import Frontend
from ._exchange import Exchange
from ._factory import LocalConnectionFactory, ProxiedConnectionFactory, connection_factory, drain, protocol_class
from ._forward import ForwardProxy
from ._forward_exchange import ForwardExchange
from ._moving import ConnectionAdopter
from ._moving_tunnel import TunnelAdopter
from ._peers import PeerSettings
from ._proxied import ProxiedConnection
from ._rule_actions import RuleRun
from ._rules import FrontendRules

__all__ = [
    "ClientConnection", "ConnectionAdopter", "Exchange", "ForwardExchange", "ForwardProxy", "Frontend",
    "FrontendRules", "LocalConnectionFactory", "PeerSettings", "ProxiedConnection", "ProxiedConnectionFactory",
    "RuleRun", "SessionAdopter", "TunnelAdopter", "connection_factory", "drain",
    "hash_password", "protocol_class",
]
