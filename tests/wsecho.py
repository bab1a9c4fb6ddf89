"""An Autobahn WebSocket echo backend for tests, listening on 127.0.0.1.

Run as ``python -m tests.wsecho [PORT]`` (from the checkout), it is a backend in a process of
its own, to kill or freeze (SIGSTOP): it prints the port it listens on, then serves.

Besides echoing every message (text as text, binary as binary), it obeys a few
commands sent as text messages, so tests can make a backend misbehave on cue:

- ``close:CODE:REASON`` closes the WebSocket with that code and reason;
- ``drop`` aborts the TCP connection without a close handshake;
- ``flood:COUNT:SIZE`` sends COUNT binary messages of SIZE bytes;
- ``headers`` answers with the handshake's request headers as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest, ConnectionResponse
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory

from rubrisproxy._compat import use_batched_timer
from rubrisproxy.websocket._timers import BucketTimer


class EchoBackendProtocol(WebSocketServerProtocol):
    """Echoes messages and obeys the commands above."""

    factory: EchoBackendFactory

    def onConnect(self, request: ConnectionRequest) -> str | None:
        self.request = request
        self.factory.handshakes.append(request)
        if self.factory.refuse is not None:
            raise ConnectionDeny(self.factory.refuse, "refused by the test backend")
        for protocol in request.protocols:
            if protocol in self.factory.subprotocols:
                return protocol
        return None

    def onOpen(self) -> None:
        self.factory.open.add(self)

    def onPing(self, payload: bytes) -> None:
        self.factory.pings += 1
        if not self.factory.silent:
            self.sendPong(payload)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append((payload, isBinary))
        if not isBinary and payload[:6] == b"close:":
            _, code, reason = payload.decode().split(":", 2)
            self.sendCloseFrame(int(code), reason.encode())
        elif not isBinary and payload == b"drop":
            self.transport.abortConnection()
        elif not isBinary and payload[:6] == b"flood:":
            _, count, size = payload.decode().split(":")
            for _ in range(int(count)):
                self.sendMessage(b"f" * int(size), isBinary=True)
        elif not isBinary and payload == b"headers":
            self.sendMessage(json.dumps(self.request.headers).encode())
        else:
            self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.open.discard(self)
        self.factory.closes.append((wasClean, code, reason))


class EchoBackendFactory(WebSocketServerFactory):
    """Records what its connections saw, for assertions."""

    protocol = EchoBackendProtocol

    def __init__(self, subprotocols: Sequence[str] = (), refuse: int | None = None, silent: bool = False) -> None:
        super().__init__()
        self.subprotocols = tuple(subprotocols)
        self.refuse = refuse
        self.silent = silent  # never answer a ping
        self.pings = 0
        self.handshakes: list[ConnectionRequest] = []
        self.received: list[tuple[bytes, bool]] = []
        self.closes: list[tuple[bool, int | None, str | None]] = []
        self.open: set[EchoBackendProtocol] = set()
        self.setProtocolOptions(maxMessagePayloadSize=64 * 1024 * 1024, autoPingInterval=0, allowNullOrigin=True)
        self.noisy = False


def listen_echo_backend(factory: EchoBackendFactory) -> IListeningPort:
    """Listen on an ephemeral loopback port; the caller stops it."""
    return reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[no-any-return]


class TestClientProtocol(WebSocketClientProtocol):
    """A WebSocket client for tests: collects messages and says when things happen."""

    factory: TestClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[bytes, bool]] = []
        self.opened: defer.Deferred[TestClientProtocol] = defer.Deferred()
        self.closed: defer.Deferred[tuple[bool, int | None, str | None]] = defer.Deferred()
        self.response: ConnectionResponse | None = None
        self.silent = False  # never answer a ping
        self.pings = 0
        self._waiters: list[tuple[int, defer.Deferred[list[tuple[bytes, bool]]]]] = []

    def onConnect(self, response: ConnectionResponse) -> None:
        self.response = response

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onPing(self, payload: bytes) -> None:
        self.pings += 1
        if not self.silent:
            self.sendPong(payload)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        self._check()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(Exception(f"handshake failed: {self.wasNotCleanReason}"))
        for _, d in self._waiters:
            d.callback(self.messages)
        self._waiters = []
        self.closed.callback((wasClean, code, reason))

    def wait_messages(self, count: int) -> defer.Deferred[list[tuple[bytes, bool]]]:
        """Fires with the messages once ``count`` have arrived (or the connection closed)."""
        d: defer.Deferred[list[tuple[bytes, bool]]] = defer.Deferred()
        self._waiters.append((count, d))
        self._check()
        return d.addTimeout(10, reactor)

    def _check(self) -> None:
        for item in list(self._waiters):
            if len(self.messages) >= item[0]:
                self._waiters.remove(item)
                item[1].callback(self.messages)


class TestClientFactory(WebSocketClientFactory):
    protocol = TestClientProtocol

    def __init__(self, url: str, protocols: Sequence[str] = (), headers: dict[str, str] | None = None) -> None:
        super().__init__(url, protocols=list(protocols), headers=headers or {})
        self.setProtocolOptions(maxMessagePayloadSize=64 * 1024 * 1024, autoPingInterval=0, failByDrop=False)
        self.noisy = False


def connect_client(
    port: int, path: str = "/", protocols: Sequence[str] = (), headers: dict[str, str] | None = None,
    compression: bool = False, **options: object,
) -> TestClientProtocol:
    """Connect a test client to 127.0.0.1:``port``; wait on its ``opened`` or ``closed``.

    ``options`` are Autobahn protocol options (``autoPingInterval=0.2``, say).
    """
    factory = TestClientFactory(f"ws://127.0.0.1:{port}{path}", protocols, headers)
    if options:
        factory.setProtocolOptions(**options)
        use_batched_timer(factory, BucketTimer(reactor, bucket=0.05))  # Autobahn's own rounds to whole seconds
    if compression:
        factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],
            perMessageCompressionAccept=lambda response: PerMessageDeflateResponseAccept(response),
        )
    protocol = factory.buildProtocol(None)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    endpoint.connect(_Given(protocol)).addErrback(lambda f: protocol.opened.errback(f) if not protocol.opened.called else None)
    return protocol  # type: ignore[no-any-return]


class _Given(Factory):
    """A factory that hands out one prepared protocol."""

    def __init__(self, protocol: TestClientProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> TestClientProtocol:
        return self._protocol


def main(argv: Sequence[str]) -> None:
    """Serve an echo backend on 127.0.0.1 (port ``argv[0]``, else any) and print the port."""
    factory = EchoBackendFactory()
    port = reactor.listenTCP(int(argv[0]) if argv else 0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    print(port.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
