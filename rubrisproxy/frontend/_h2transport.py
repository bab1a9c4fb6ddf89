"""An HTTP/2 stream as a transport, for what takes a client's transport over: a WebSocket (RFC 8441)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from zope.interface import implementer

if TYPE_CHECKING:
    from ._h2stream import H2Stream


@implementer(ITCPTransport)
class StreamTransport:
    """``write`` sends DATA frames (a response head first becomes HEADERS), ``loseWriteConnection`` ends the
    stream's sending side (END_STREAM), ``loseConnection`` both sides, ``abortConnection`` resets it. Its
    producer is the stream's (an origin's reads); the stream's gate pauses the client's sending."""

    __slots__ = ("_stream",)

    def __init__(self, stream: H2Stream) -> None:
        self._stream = stream

    @property
    def disconnecting(self) -> bool:
        return not self._stream.open

    @property
    def connected(self) -> bool:
        return self._stream.open

    def write(self, data: bytes) -> None:
        self._stream.send(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:  # noqa: N802 (Twisted's names, here and below)
        for each in data:
            self._stream.send(each)

    def loseConnection(self) -> None:  # noqa: N802
        self._stream.close(whole=True)

    def loseWriteConnection(self) -> None:  # noqa: N802
        self._stream.close(whole=False)

    def abortConnection(self) -> None:  # noqa: N802
        self._stream.abortConnection()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:  # noqa: N802
        self._stream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:  # noqa: N802
        self._stream.unregisterProducer()

    def pauseProducing(self) -> None:  # noqa: N802
        self._stream.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self._stream.resumeProducing()

    def getPeer(self) -> IPv4Address | IPv6Address:  # noqa: N802
        return self._stream.connection.client.transport.getPeer()

    def getHost(self) -> IPv4Address | IPv6Address:  # noqa: N802
        return self._stream.connection.client.transport.getHost()

    def getTcpNoDelay(self) -> bool:  # noqa: N802
        return True

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802
        """The connection's setting, not a stream's."""

    def getTcpKeepAlive(self) -> bool:  # noqa: N802
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:  # noqa: N802
        """The connection's setting, not a stream's."""
