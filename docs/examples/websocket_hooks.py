"""Two WebSocket hooks for rubrisproxy, as examples to copy.

Name them in a backend's ``[websocket]`` table; this file must be importable
(on ``PYTHONPATH``) by the proxy::

    [backends.app.websocket]
    hooks = [
        "websocket_hooks.MessageLogger",
        { class = "websocket_hooks.TokenCheck", tokens = ["s3cret"] },
    ]

``TokenCheck`` works in both modes (it only looks at the handshake);
``MessageLogger`` sees messages in session mode only.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from twisted.logger import Logger

from rubrisproxy.websocket import Handshake, ISessionView, Message, RefuseHandshake, WebSocketHook


class MessageLogger(WebSocketHook):
    """Logs every message's direction, type and size (not its content), and passes it on unchanged."""

    log = Logger()

    def __init__(self, preview: int = 0) -> None:
        self.preview = preview  # bytes of each message to show; 0 shows none

    def client_message(self, session: ISessionView, message: Message) -> Message:
        self._log(session, "client->backend", message)
        return message

    def backend_message(self, session: ISessionView, message: Message) -> Message:
        self._log(session, "backend->client", message)
        return message

    def _log(self, session: ISessionView, direction: str, message: Message) -> None:
        self.log.info(
            "ws {session} {direction} {kind} {size} bytes {preview!r}",
            session=session.session_id, direction=direction, kind="binary" if message.binary else "text",
            size=len(message.payload), preview=message.payload[: self.preview],
        )


class TokenCheck(WebSocketHook):
    """Accepts an upgrade only with a known token: ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``.

    Refused upgrades get 401 before any backend is contacted.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = frozenset(tokens)

    def handshake(self, request: Handshake) -> None:
        if self._token(request) not in self.tokens:
            raise RefuseHandshake(401, "missing or unknown token")

    @staticmethod
    def _token(request: Handshake) -> str | None:
        authorization = request.header(b"authorization")
        if authorization is not None and authorization[:7].lower() == b"bearer ":
            return authorization[7:].strip().decode("latin-1")
        query = parse_qs(urlsplit(request.target.decode("latin-1")).query)
        return query.get("token", [None])[0]
