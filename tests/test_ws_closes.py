"""Who closed a WebSocket relayed as bytes (tunnel mode): its close frames, read off the end of each side's last read."""

from __future__ import annotations

from twisted.trial import unittest

from rubrisproxy.lifecycle import Termination
from rubrisproxy.websocket._closes import TAIL, ends_with_close, tunnel_termination

from .test_ws_keepalive import OP_CLOSE, OP_TEXT, frame
from .wsconformance import close_payload

MASK = b"\x5a\xa5\x0f\xf0"
CLIENT_CLOSE = frame(OP_CLOSE, close_payload(3000, b"done here"), MASK)
SERVER_CLOSE = frame(OP_CLOSE, close_payload(1000))
CLIENT_TEXT = frame(OP_TEXT, b"hello", MASK)
SERVER_TEXT = frame(OP_TEXT, b"hello")


class EndsWithCloseTests(unittest.TestCase):
    def test_a_close_at_the_end_of_a_read_is_found_whatever_came_before_it(self) -> None:
        longest = close_payload(4999, b"r" * 123)
        for before in (b"", CLIENT_TEXT, CLIENT_TEXT * 50):
            for payload in (b"", close_payload(1000), close_payload(3000, b"bye"), longest):
                data = before + frame(OP_CLOSE, payload, MASK)
                self.assertTrue(ends_with_close(data[-TAIL:], masked=True), (before[:8], payload))
                self.assertFalse(ends_with_close(data[-TAIL:], masked=False))
        self.assertTrue(ends_with_close(SERVER_TEXT + frame(OP_CLOSE, longest), masked=False))
        self.assertTrue(ends_with_close(frame(OP_CLOSE), masked=False))

    def test_anything_else_is_not_a_close(self) -> None:
        for data in (b"", CLIENT_TEXT, CLIENT_CLOSE + CLIENT_TEXT, CLIENT_CLOSE[:-1],
                     frame(OP_CLOSE, b"\x03", MASK),  # a 1-byte payload
                     frame(OP_CLOSE, close_payload(999), MASK), frame(OP_CLOSE, close_payload(5000), MASK),
                     b"\x08" + CLIENT_CLOSE[1:],  # not final
                     b"\xc8" + CLIENT_CLOSE[1:]):  # a reserved bit
            self.assertFalse(ends_with_close(data, masked=True), data)


class TerminationTests(unittest.TestCase):
    def test_the_close_answered_came_first(self) -> None:
        # The client closed, the backend answered (read last), then ended TCP first.
        self.assertEqual(tunnel_termination(Termination.SERVER_CLOSE, CLIENT_CLOSE, SERVER_CLOSE, client_last=False),
                         Termination.CLIENT_CLOSE)
        # The backend closed, the client answered (read last).
        self.assertEqual(tunnel_termination(Termination.SERVER_CLOSE, CLIENT_CLOSE, SERVER_CLOSE, client_last=True),
                         Termination.SERVER_CLOSE)

    def test_a_close_never_answered(self) -> None:
        self.assertEqual(tunnel_termination(Termination.SERVER_ABORT, CLIENT_CLOSE, SERVER_TEXT, client_last=True),
                         Termination.CLIENT_CLOSE)
        self.assertEqual(tunnel_termination(Termination.CLIENT_ABORT, CLIENT_TEXT, SERVER_CLOSE, client_last=True),
                         Termination.SERVER_CLOSE)

    def test_no_close_is_an_abort_by_the_side_that_ended_first(self) -> None:
        for by_tcp, side in ((Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT),
                             (Termination.CLIENT_ABORT, Termination.CLIENT_ABORT),
                             (Termination.SERVER_CLOSE, Termination.SERVER_ABORT),
                             (Termination.SERVER_ABORT, Termination.SERVER_ABORT)):
            self.assertEqual(tunnel_termination(by_tcp, CLIENT_TEXT, SERVER_TEXT, client_last=False), side)
