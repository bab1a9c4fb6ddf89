"""The fast path's outbox: the frames one read's messages prompt leave in one write per connection, in order."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from rubrisproxy.config import WebSocketConfig
from rubrisproxy.websocket._frames import simple_frame
from rubrisproxy.websocket._legs import LegFactories
from rubrisproxy.websocket._outbox import Outbox

from . import test_ws_keepalive
from .test_ws_keepalive import OP_PING, open_backend_leg, open_client_leg, parse_frames


class _Flushing:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def flush(self) -> None:
        self.log.append(self.name)


class OutboxTests(unittest.TestCase):
    def test_the_outermost_read_flushes_every_holding_leg_once(self) -> None:
        outbox, log = Outbox(), []
        outbox.depth += 1
        outbox.holding(_Flushing("a", log))
        outbox.depth += 1  # a nested read
        outbox.holding(_Flushing("b", log))
        outbox.close()
        self.assertEqual(log, [])
        outbox.close()
        self.assertEqual((log, outbox.depth), (["a", "b"], 0))
        outbox.depth += 1
        outbox.close()
        self.assertEqual(log, ["a", "b"])  # nothing held the second time


class RelayedReadTests(unittest.TestCase):
    """A client leg whose messages go to a backend leg of the same backend, as a session relays them."""

    def setUp(self) -> None:
        factories = LegFactories(WebSocketConfig(), Clock())
        self.patch(test_ws_keepalive, "LegFactories", lambda config, clock: factories)
        self.client, _, client_session = open_client_leg(WebSocketConfig(), Clock())
        self.backend, self.origin, _ = open_backend_leg(WebSocketConfig(), Clock())
        self.origin.transport.clear()
        self.writes: list[Any] = []
        transport = self.origin.transport
        write, write_sequence = transport.write, transport.writeSequence
        self.patch(transport, "write", lambda data: (self.writes.append(data), write(data)))
        self.patch(transport, "writeSequence", lambda seq: (self.writes.append(list(seq)), write_sequence(seq)))
        client_session.from_client = lambda payload, binary: self.backend.sendMessage(payload, binary)

    def tearDown(self) -> None:
        for leg in (self.client, self.backend):
            leg.connectionLost(Failure(ConnectionLost()))

    def test_one_write_for_the_messages_of_one_read(self) -> None:
        read = b"".join(simple_frame(b"m%d" % i, True, True) or b"" for i in range(5))
        self.client.dataReceived(read)
        self.assertEqual(len(self.writes), 1)
        self.assertEqual([payload for _, payload in parse_frames(self.origin.transport.value())],
                         [b"m%d" % i for i in range(5)])
        self.assertEqual(self.origin.server.bytes_in, len(self.origin.transport.value()))

    def test_a_write_of_autobahns_follows_the_held_frames(self) -> None:
        def relay(payload: bytes, binary: bool) -> None:
            self.backend.sendMessage(payload, binary)
            if payload == b"b":
                self.backend.sendPing(b"p")  # Autobahn's own path, while frames are held

        self.client.session.from_client = relay
        self.client.dataReceived(b"".join(simple_frame(p, True, True) or b"" for p in (b"a", b"b", b"c")))
        self.assertEqual([(opcode, payload) for opcode, payload in parse_frames(self.origin.transport.value())],
                         [(0x2, b"a"), (0x2, b"b"), (OP_PING, b"p"), (0x2, b"c")])

    def test_nothing_is_held_outside_a_read(self) -> None:
        self.backend.sendMessage(b"x", True)
        self.assertEqual(self.writes, [self.origin.transport.value()])
        self.assertIsNone(self.backend._held_frames)
