"""Bodies stream with flow control both ways: a slow side pauses the other, memory stays bounded."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from .helpers import ProxyTestCase, run_reactor_for

CHUNK = 65536
BIG = 48 * 1024 * 1024  # far more than loopback socket buffers can hide


@implementer(IPullProducer)
class Filler:
    """Writes ``total`` bytes to a transport, a chunk each time the transport asks for more."""

    def __init__(self, transport, total: int) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        self.remaining = total
        self.written = 0

    def resumeProducing(self) -> None:
        size = min(CHUNK, self.remaining)
        self.remaining -= size
        self.written += size
        self.transport.write(b"z" * size)
        if not self.remaining:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.remaining = 0


class BigResponseOrigin(Protocol):
    instances: list[BigResponseOrigin] = []

    def dataReceived(self, data: bytes) -> None:
        BigResponseOrigin.instances.append(self)
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
        self.filler = Filler(self.transport, BIG)
        self.transport.registerProducer(self.filler, False)


class CountingOrigin(Protocol):
    """Reads an upload of known size; can be told to stop reading for a while."""

    instances: list[CountingOrigin] = []

    def connectionMade(self) -> None:
        CountingOrigin.instances.append(self)
        self.received = 0
        self.head_seen = False
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        if not self.head_seen:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            self.head_seen = True
            data = self.buffer.split(b"\r\n\r\n", 1)[1]
            self.transport.pauseProducing()  # a slow origin: reads nothing until told
        self.received += len(data)
        if self.received >= BIG:
            body = b"%d" % self.received
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def buffered(transport) -> int:  # type: ignore[no-untyped-def]
    """Bytes a Twisted TCP transport holds in user space, waiting to be sent."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class StreamingTests(ProxyTestCase):
    @defer.inlineCallbacks
    def test_slow_client_pauses_origin(self):
        BigResponseOrigin.instances = []
        frontend = self.start_proxy(self.start_raw_origin(BigResponseOrigin))
        client = yield self.connect()
        client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        yield client.until(lambda data: b"\r\n\r\n" in data)
        client.transport.pauseProducing()  # the client stops reading
        origin_side = next(iter(frontend.pool.in_use))
        yield self.poll(lambda: origin_side.gate.paused, "the proxy pauses the origin")
        filler = BigResponseOrigin.instances[0].filler
        sent_when_paused = filler.written
        (proxy_side,) = frontend.connections
        self.assertLess(buffered(proxy_side.transport), 1 << 20)
        self.assertLess(sent_when_paused, BIG // 2)
        yield run_reactor_for(20)  # the reactor keeps running; the origin stays held back
        self.assertLess(filler.written, BIG // 2)
        self.assertLess(buffered(proxy_side.transport), 1 << 20)
        received: list[int] = [0]
        client.dataReceived = lambda data: received.__setitem__(0, received[0] + len(data))  # type: ignore[method-assign]
        client.transport.resumeProducing()
        yield self.poll(lambda: received[0] + len(client.received) >= BIG, "the whole body arrives")
        self.assertEqual(filler.written, BIG)

    @defer.inlineCallbacks
    def test_slow_origin_pauses_client_upload(self):
        CountingOrigin.instances = []
        frontend = self.start_proxy(self.start_raw_origin(CountingOrigin))
        client = yield self.connect()
        client.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % BIG)
        filler = Filler(client.transport, BIG)
        client.transport.registerProducer(filler, False)
        (proxy_side,) = frontend.connections
        yield self.poll(lambda: proxy_side.gate.paused, "the proxy stops reading the client")
        origin_side = next(iter(frontend.pool.in_use))
        self.assertLess(buffered(origin_side.transport), 1 << 20)
        self.assertLess(filler.written, BIG // 2)
        CountingOrigin.instances[0].transport.resumeProducing()
        (response,) = yield client.responses(1)
        self.assertEqual(response.body, b"%d" % BIG)
        self.assertEqual(filler.written, BIG)
