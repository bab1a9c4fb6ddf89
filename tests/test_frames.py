"""Session mode's fast framing path against Autobahn's own framing (the reference)."""

from __future__ import annotations

import os

from twisted.trial import unittest

from rubrisproxy.websocket._frames import read_simple, simple_frame, unmask


class FrameTests(unittest.TestCase):
    def test_unmask_is_its_own_inverse_at_every_size(self) -> None:
        mask = b"\x01\x82\x43\xf4"
        for size in (0, 1, 3, 4, 5, 125, 1023, 1024, 5000, 65535):
            payload = os.urandom(size)
            masked = unmask(payload, mask)
            self.assertEqual(unmask(masked, mask), payload)
            if size:
                self.assertEqual(masked[0], payload[0] ^ mask[0])

    def test_frames_it_builds_are_read_back(self) -> None:
        for masked in (False, True):
            frames = b"".join(
                simple_frame(payload, binary, masked)  # type: ignore[misc]
                for payload, binary in [(b"", False), (b"hi", False), (b"\x00" * 126, True), ("é".encode(), False)]
            )
            messages, waiting = read_simple(frames, masked, 0)
            self.assertFalse(waiting)
            self.assertEqual([(p, b) for p, b, _ in messages],
                             [(b"", False), (b"hi", False), (b"\x00" * 126, True), ("é".encode(), False)])
            self.assertEqual(messages[-1][2], len(frames))

    def test_it_stops_at_what_autobahn_must_judge(self) -> None:
        good = simple_frame(b"ok", False, True)
        assert good is not None
        cases = {
            "fragment (FIN clear)": b"\x01\x82" + good[2:],
            "RSV bit": b"\xc1" + good[1:],
            "ping": b"\x89" + good[1:],
            "unmasked from a client": simple_frame(b"ok", False, False),
            "invalid UTF-8": simple_frame(b"\xff", False, True),
            "16-bit length for a short payload": b"\x82\xfe\x00\x05" + b"\x00" * 4 + b"12345",
            "64-bit length": b"\x82\xff" + b"\x00" * 7 + b"\x05",
            "cut by the read": good[:-1],
            "over the limit": simple_frame(b"x" * 200, True, True),
        }
        for name, frame in cases.items():
            messages, waiting = read_simple(good + frame, True, 100)  # type: ignore[operator]
            self.assertEqual([p for p, _, _ in messages], [b"ok"], name)
            self.assertEqual(messages[0][2], len(good), name)
            self.assertEqual(waiting, name == "cut by the read", name)

    def test_a_frame_cut_anywhere_is_waited_for(self) -> None:
        frame = simple_frame(b"x" * 300, True, True)
        assert frame is not None
        for cut in range(1, len(frame)):
            messages, waiting = read_simple(frame[:cut], True, 0)
            self.assertEqual((messages, waiting), ([], True), cut)

    def test_large_payloads_are_left_to_autobahn(self) -> None:
        self.assertIsNone(simple_frame(b"x" * 65536, True, False))
        frame = simple_frame(b"x" * 65535, True, False)
        assert frame is not None
        self.assertEqual(frame[:4], b"\x82\x7e\xff\xff")
