"""A demo origin's WebSocket: echoes each text message and sends a tick every second, all saying which
origin answered and which move of the proxy's session this connection is."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import task

#: Seconds between two ticks.
TICK = 1.0
#: The largest message a demo WebSocket takes.
MAX_MESSAGE = 64 << 10
#: The header the proxy's session mode sends on each backend handshake (``WebSocketConfig.session_header``).
SESSION_HEADER = "x-rubris-session"


class DemoSocket(WebSocketServerProtocol):
    """One WebSocket to a demo origin."""

    factory: DemoSocketFactory

    def onConnect(self, request: Any) -> None:
        session, _, resume = request.headers.get(SESSION_HEADER, "").partition(";")
        self.session = session.strip() or None
        self.resume = resume.strip().removeprefix("resume=") or None
        self.ticks = 0
        self.ticker = task.LoopingCall(self.tick)
        self.ticker.clock = self.factory.clock

    def onOpen(self) -> None:
        self.say("hello")
        self.ticker.start(TICK, now=False)

    def tick(self) -> None:
        self.ticks += 1
        self.say("tick", n=self.ticks)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.sendMessage(payload, True)
        else:
            self.say("echo", text=payload.decode())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        ticker = getattr(self, "ticker", None)
        if ticker is not None and ticker.running:
            ticker.stop()

    def say(self, kind: str, **more: Any) -> None:
        if self.state != self.STATE_OPEN:  # closing: a tick may still fire before onClose
            return
        message = {"kind": kind, "origin": self.factory.origin, "session": self.session, "resume": self.resume, **more}
        self.sendMessage(json.dumps(message).encode())


class DemoSocketFactory(WebSocketServerFactory):
    """Builds :class:`DemoSocket` for the origin named ``origin``."""

    protocol = DemoSocket  # type: ignore[assignment]

    def __init__(self, origin: str, clock: Any) -> None:
        super().__init__()
        self.origin = origin
        self.clock = clock
        self.setProtocolOptions(maxMessagePayloadSize=MAX_MESSAGE, maxFramePayloadSize=MAX_MESSAGE,
                                failByDrop=False)  # a 1009 close, not a dropped connection
        self.noisy = False

