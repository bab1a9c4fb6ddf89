"""WebSocket proxying: handshake checks, tunnel mode, session mode (Autobahn), and the hooks users write."""

from ._carry_record import VERSIONS as SESSION_RECORD_VERSIONS
from ._carry_record import SessionRecord, read_record
from ._handoff import ClientSide, UpgradeHandoff
from ._handshake import Upgrade, accept_key, backend_handshake, check_switch, check_upgrade, new_key
from ._hooks import Handshake, ISessionView, IWebSocketHook, Message, RefuseHandshake, WebSocketHook, build_hooks
from ._legs import LegFactories
from ._relay import Relay
from ._resume import BackendDial, ResumeBudget
from ._session import WebSocketSession
from ._support import BackendWebSocket
from ._timers import BucketTimer
from ._tunnel import Tunnel
from ._tunnel_moving import TUNNEL_RECORD

__all__ = [
    "SESSION_RECORD_VERSIONS",
    "SessionRecord",
    "read_record",
    "ClientSide",
    "Handshake",
    "ISessionView",
    "IWebSocketHook",
    "BackendDial",
    "BackendWebSocket",
    "BucketTimer",
    "LegFactories",
    "Message",
    "RefuseHandshake",
    "Relay",
    "ResumeBudget",
    "TUNNEL_RECORD",
    "Tunnel",
    "Upgrade",
    "UpgradeHandoff",
    "WebSocketHook",
    "WebSocketSession",
    "accept_key",
    "backend_handshake",
    "build_hooks",
    "check_switch",
    "check_upgrade",
    "new_key",
]
