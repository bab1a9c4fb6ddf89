"""The extension point for WebSocket traffic: hooks that see, change, drop or inject messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zope.interface import Attribute, Interface, implementer

from ..config import HookConfig, build_objects
from ..http import Headers


@dataclass(slots=True)
class Message:
    """One whole WebSocket message: ``binary`` is its opcode (binary or text)."""

    payload: bytes
    binary: bool


@dataclass(frozen=True, slots=True)
class Handshake:
    """A client's WebSocket upgrade request, as a hook sees it before any backend is contacted."""

    client: str  # the client's address
    target: bytes  # path (normalised, as the origin receives it) and query
    headers: Headers
    protocols: tuple[str, ...]  # the offered subprotocols the proxy allows
    origin: str | None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lower = name.lower()
        return next((value for key, value in self.headers if key.lower() == lower), None)


class RefuseHandshake(Exception):
    """Raised by :meth:`IWebSocketHook.handshake` to answer the upgrade with ``status`` instead."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class ISessionView(Interface):
    """A session-mode WebSocket, as hooks see it."""

    session_id = Attribute("A stable identifier for the client's WebSocket.")
    client = Attribute("The client's address.")
    server = Attribute("The name of the backend server in use, or None.")

    def send_to_client(message: Message) -> None:
        """Inject ``message`` towards the client, after what was already sent."""

    def send_to_backend(message: Message) -> None:
        """Inject ``message`` towards the backend, after what was already sent."""


class IWebSocketHook(Interface):
    """User code named in a backend's ``[websocket] hooks``; one instance serves every connection.

    Hooks run in order. ``handshake`` runs in both modes; the message methods run
    in session mode only (a tunnel does not parse frames).
    """

    def handshake(request: Handshake) -> None:
        """Accept the upgrade by returning, or raise :class:`RefuseHandshake`."""

    def client_message(session: ISessionView, message: Message) -> Message | None:
        """A message from the client on its way to the backend: return it (changed or not), or None to drop it."""

    def backend_message(session: ISessionView, message: Message) -> Message | None:
        """A message from the backend on its way to the client: return it (changed or not), or None to drop it."""

    def session_closed(session: ISessionView) -> None:
        """The client's WebSocket has ended."""


@implementer(IWebSocketHook)
class WebSocketHook:
    """A hook that changes nothing: subclass it and override what you need."""

    def handshake(self, request: Handshake) -> None:
        pass

    def client_message(self, session: ISessionView, message: Message) -> Message | None:
        return message

    def backend_message(self, session: ISessionView, message: Message) -> Message | None:
        return message

    def session_closed(self, session: ISessionView) -> None:
        pass


def build_hooks(key: str, configs: Sequence[HookConfig]) -> tuple[IWebSocketHook, ...]:
    """Instantiate configured hooks; a class that cannot be built or is not a hook is a :class:`ConfigError`."""
    return build_objects(key, configs, (IWebSocketHook,))
