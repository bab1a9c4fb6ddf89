"""settle_collector: what start built frozen, the collector's young passes spaced out."""

from __future__ import annotations

import gc

from twisted.trial import unittest

from rubrisproxy.collector import YOUNG_PASS_EVERY, settle_collector


class SettleCollectorTests(unittest.TestCase):
    def setUp(self) -> None:
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)

    def test_it_freezes_what_exists_and_spaces_the_young_passes(self) -> None:
        made = object.__new__(type("Made", (), {}))
        _, middle, old = gc.get_threshold()
        settle_collector()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertNotIn(made, gc.get_objects())  # frozen: out of every generation the collector walks
        self.assertEqual(gc.get_threshold(), (YOUNG_PASS_EVERY, middle, old))
