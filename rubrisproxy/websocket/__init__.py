"""WebSocket proxying: handshake checks, tunnel mode, session mode (Autobahn), and the hooks users write."""

from ._handshake import Upgrade, accept_key, backend_handshake, check_switch, check_upgrade, new_key
from ._hooks import Handshake, ISessionView, IWebSocketHook, Message, RefuseHandshake, WebSocketHook, build_hooks
from ._relay import Relay
from ._session import LegFactories, WebSocketSession
from ._tunnel import Tunnel

__all__ = [
    "Handshake",
    "ISessionView",
    "IWebSocketHook",
    "LegFactories",
    "Message",
    "RefuseHandshake",
    "Relay",
    "Tunnel",
    "Upgrade",
    "WebSocketHook",
    "WebSocketSession",
    "accept_key",
    "backend_handshake",
    "build_hooks",
    "check_switch",
    "check_upgrade",
    "new_key",
]
