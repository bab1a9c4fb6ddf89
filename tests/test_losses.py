"""Mass resume: a storm of lost backend connections is handled over reactor turns, in order (LossPacer)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.websocket import _losses
from rubrisproxy.websocket._legs import BackendLeg
from rubrisproxy.websocket._losses import LossPacer

from . import test_pacing, test_resume


class FakeLeg:
    """A lost leg: records when its loss is handled."""

    def __init__(self, name: int, log: list[int]) -> None:
        self.name = name
        self.log = log

    def settle_loss(self) -> None:
        self.log.append(self.name)


class LossPacerTests(SynchronousTestCase):
    """A LossPacer on a Clock, with a small bound per turn."""

    PER_TURN = 3

    def setUp(self) -> None:
        self.clock = Clock()
        self.handled: list[int] = []
        self.patch(_losses, "LOSSES_PER_TURN", self.PER_TURN)

    turn = test_pacing.DialPacerTests.turn

    def lose(self, pacer: LossPacer, count: int, start: int = 0) -> list[int]:
        """``count`` legs lose their connection in this turn; the names of those handled at once."""
        now = []
        for name in range(start, start + count):
            if not pacer.put_aside(FakeLeg(name, self.handled), self.clock):
                now.append(name)
        return now

    def test_a_few_losses_are_handled_at_once(self) -> None:
        pacer = LossPacer()
        self.assertEqual(self.lose(pacer, 3), [0, 1, 2])
        self.assertEqual(pacer.waiting, 0)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing left scheduled
        self.assertEqual(self.lose(pacer, 1, 3), [3])  # a later turn: its count started again

    def test_a_storm_is_handled_a_batch_per_turn_in_order(self) -> None:
        pacer = LossPacer()
        self.assertEqual(self.lose(pacer, 20), [0, 1, 2])  # the rest wait for later turns: the reactor serves others
        self.assertEqual((pacer.waiting, self.handled), (17, []))
        batches = []
        while pacer.waiting:
            before = len(self.handled)
            self.turn()
            batches.append(len(self.handled) - before)
        self.assertEqual(batches, [3, 3, 3, 3, 3, 2])
        self.assertEqual(self.handled, list(range(3, 20)))  # in the order they were lost
        self.turn()  # the count starts again from 0 ...
        self.turn()
        self.assertEqual(self.clock.getDelayedCalls(), [])  # ... then nothing is scheduled
        self.assertEqual(self.lose(pacer, 4, 20), [20, 21, 22])

    def test_a_loss_in_a_turn_that_handled_a_batch_waits_for_the_next(self) -> None:
        pacer = LossPacer()
        self.lose(pacer, 7)
        self.turn()
        self.assertEqual(self.handled, [3, 4, 5])
        self.assertEqual(self.lose(pacer, 1, 7), [])  # behind those still waiting, in order
        self.turn()
        self.turn()
        self.assertEqual(self.handled, [3, 4, 5, 6, 7])


class PutAsideResumeTests(test_resume.ResumeTests):
    """Every resume test again, with every lost backend connection put aside for a later turn (none handled at
    once): the sessions behave as when each loss is handled in the turn it is read."""

    def setUp(self) -> None:
        put_aside = LossPacer.put_aside

        def always(pacer: LossPacer, leg: _losses.PutAside, clock: IReactorTime) -> bool:
            pacer._handled = _losses.LOSSES_PER_TURN  # as if this turn had handled its batch already
            return put_aside(pacer, leg, clock)

        self.patch(LossPacer, "put_aside", always)
        return super().setUp()


    @defer.inlineCallbacks
    def test_a_backend_ending_its_stream_is_closed_on_its_turn_and_the_session_moves(self):  # type: ignore[no-untyped-def]
        self.start(replay_messages=3)
        client = yield self.open()
        yield self.exchange(client, [b"a", b"b"])
        first = self.serving()
        settled = []
        settle = BackendLeg.settle_loss

        def recorded(leg: BackendLeg) -> None:
            if leg.loss_waits:
                settled.append((leg.state, leg.transport.connected))
            settle(leg)

        self.patch(BackendLeg, "settle_loss", recorded)
        for protocol in list(self.backends[first].open):
            protocol.transport.loseConnection()  # a FIN, no close frame: the proxy's leg ends with its stream
        client.sendMessage(b"c")
        messages = yield client.wait_messages(5)
        self.assertEqual([m for m, _ in messages], [b"a", b"b", b"a", b"b", b"c"])  # the replayed ones echoed again
        self.assertEqual(settled, [(BackendLeg.STATE_CLOSING, True)])  # put aside open, closed on its turn
        self.assertEqual([m for m, _ in self.backends[1 - first].received], [b"a", b"b", b"c"])  # replayed, then c
        self.assertFalse(client.closed.called)
        self.assertEqual(self.backend.resumes, 1)


    @defer.inlineCallbacks
    def test_a_client_closing_while_its_loss_waits_has_it_handled_first(self):  # type: ignore[no-untyped-def]
        self.patch(LossPacer, "_new_turn", lambda pacer: None)  # no batch: the loss waits until the session needs it
        self.start(replay_messages=2)
        client = yield self.open()
        yield self.exchange(client, [b"a", b"b"])
        first = self.serving()
        self.kill(first)
        yield self.poll(lambda: self.frontend.resume_budget.losses.waiting == 1, "the loss put aside")
        (leg,) = self.frontend.resume_budget.losses._waiting
        self.assertTrue(leg.loss_waits)
        client.sendMessage(b"c")  # held, as behind a handled loss
        client.sendClose(1000, "bye")
        _, code, _ = yield client.closed
        self.assertEqual(code, 1000)  # answered at once: no backend leg to pass the close to
        self.assertFalse(leg.loss_waits)  # handled before the close ...
        self.assertEqual(self.backend.messages_lost, 3)  # ... so a, b (replayed) and c were held, and lost with it
        self.assertEqual((self.backend.resumes, self.backend.resume_failures), (0, {}))


class PutAsideMassResumeTests(test_pacing.MassResumeTests):
    """The mass resume, its losses handled a few per turn."""

    def setUp(self) -> None:
        self.patch(_losses, "LOSSES_PER_TURN", 7)
        return super().setUp()
