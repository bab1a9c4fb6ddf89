"""Mass resume: the dials of many moving sessions are paced (in flight, per reactor turn, in order)."""

from __future__ import annotations

import gc
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.config import Limits, WebSocketConfig
from rubrisproxy.settings import LiveSettings
from rubrisproxy.websocket._move import MoveState, SessionMove
from rubrisproxy.websocket._pacing import DialPacer

from . import test_resume
from .helpers import ProxyTestCase
from .wsecho import EchoBackendFactory, connect_client


class FakeMove:
    """A move whose dials the test ends: it records when it went, and may no longer want to."""

    def __init__(self, name: int, log: list[int], wanted: bool = True) -> None:
        self.name = name
        self.log = log
        self.wanted = wanted

    def go(self) -> bool:
        if not self.wanted:
            return False
        self.log.append(self.name)
        return True


class OnceMove(FakeMove):
    """A move that dials once: a later turn finds it dialled (as a SessionMove no longer WAITING)."""

    def go(self) -> bool:
        went = super().go()
        self.wanted = False
        return went


def pacer(dials: int, per_turn: int) -> DialPacer:
    return DialPacer(LiveSettings.of(limits=Limits(resume_dials=dials, resume_dials_per_turn=per_turn)))


class DialPacerTests(SynchronousTestCase):
    """A DialPacer on a Clock, with moves the test finishes."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.started: list[int] = []
        self.addCleanup(gc.enable)

    def moves(self, count: int, start: int = 0) -> list[FakeMove]:
        return [FakeMove(start + i, self.started) for i in range(count)]

    def turn(self) -> None:
        """One reactor turn: the calls due now run, not those they schedule (they wait for the next turn)."""
        for call in list(self.clock.getDelayedCalls()):
            if call.getTime() <= self.clock.seconds():
                self.clock.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)

    def test_a_dial_with_room_starts_at_once(self) -> None:
        paced = pacer(4, 2)
        (move,) = self.moves(1)
        paced.start(move, self.clock)
        self.assertEqual(self.started, [0])
        self.assertEqual((paced.in_flight, paced.waiting), (1, 0))
        paced.done()
        self.assertEqual(paced.in_flight, 0)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing left scheduled
        self.assertTrue(gc.isenabled())  # no storm: the collector was left alone

    def test_many_moves_start_a_batch_per_turn_within_the_bound_in_order(self) -> None:
        paced = pacer(8, 3)
        for move in self.moves(40):
            paced.start(move, self.clock)
        self.assertEqual(self.started, [0, 1, 2])  # the rest wait for later turns: the reactor serves others
        most = 0
        turns = 0
        while len(self.started) < 40:
            before = len(self.started)
            self.turn()
            turns += 1
            self.assertLessEqual(len(self.started) - before, 3)
            most = max(most, paced.in_flight)
            self.assertLessEqual(paced.in_flight, 8)
            if paced.in_flight == 8 or len(self.started) == before:
                paced.done()  # one dial ends: its place goes to the next on the next turn
                paced.done()
            self.assertLess(turns, 200)
        self.assertEqual(most, 8)
        self.assertEqual(self.started, list(range(40)))  # first come, first served

    def test_a_move_that_went_away_holds_no_place(self) -> None:
        paced = pacer(2, 2)
        first = self.moves(2)
        for move in first:
            paced.start(move, self.clock)
        gone, kept = FakeMove(2, self.started), FakeMove(3, self.started)
        paced.start(gone, self.clock)
        paced.start(kept, self.clock)
        gone.wanted = False  # e.g. its session gave up while it waited
        paced.done()
        self.turn()
        self.assertEqual(self.started, [0, 1, 3])
        self.assertEqual((paced.in_flight, paced.waiting), (2, 0))

    def test_a_retry_waits_behind_those_already_waiting(self) -> None:
        paced = pacer(1, 1)
        moves = self.moves(3)
        for move in moves:
            paced.start(move, self.clock)
        paced.done()  # move 0 failed: it backs off and asks again, behind 1 and 2
        paced.start(moves[0], self.clock)
        for _ in range(3):
            self.turn()
            paced.done()
        self.assertEqual(self.started, [0, 1, 2, 0])

    def test_the_moves_of_clients_waiting_for_an_answer_go_first(self) -> None:
        paced = pacer(1, 1)
        idle, waiting_client = self.moves(3), FakeMove(3, self.started)
        for move in idle:
            paced.start(move, self.clock)
        paced.start(waiting_client, self.clock, urgent=True)
        self.assertEqual(paced.waiting, 3)
        for _ in range(3):
            paced.done()
            self.turn()
        self.assertEqual(self.started, [0, 3, 1, 2])

    def test_a_hurried_move_goes_first_and_its_first_place_is_passed_over(self) -> None:
        paced = pacer(1, 1)
        moves = [OnceMove(i, self.started) for i in range(4)]
        for move in moves:
            paced.start(move, self.clock)
        paced.hurry(moves[3], self.clock)  # its session now holds a message
        while paced.waiting or paced.in_flight:
            paced.done()
            self.turn()
        self.assertEqual(self.started, [0, 3, 1, 2])  # 3 did not go twice
        self.assertTrue(gc.isenabled())

    def test_the_collector_is_held_off_while_moves_wait(self) -> None:
        paced = pacer(2, 2)
        for move in self.moves(5):
            paced.start(move, self.clock)
        self.assertFalse(gc.isenabled())
        while paced.waiting or paced.in_flight:
            paced.done()
            self.turn()
        self.assertTrue(gc.isenabled())
        self.assertEqual(len(self.started), 5)


class MassResumeTests(ProxyTestCase):
    """Many sessions lose their server at once, over loopback."""

    SESSIONS = 200
    DIALS, PER_TURN = 8, 4
    RESUME_TIMEOUT = 30.0

    listen = test_resume.ResumeTests.listen
    kill = test_resume.ResumeTests.kill

    def start(self) -> list[int]:
        """Two echo backends behind a proxy with small pacing limits (its pacer: ``self.pacer``); the most dials it
        had in flight, as it goes."""
        self.backends = [EchoBackendFactory(), EchoBackendFactory()]
        self.listeners = [self.listen(factory) for factory in self.backends]
        config = WebSocketConfig(client_ping_interval=0, backend_ping_interval=0, resume_timeout=self.RESUME_TIMEOUT)
        self.frontend = self.start_proxy(*(listener.getHost().port for listener in self.listeners), websocket=config,
                                         resume_dials=self.DIALS, resume_dials_per_turn=self.PER_TURN)
        self.backend = self.frontend.backend
        self.pacer = self.frontend.resume_budget.dials
        most = [0]
        go = DialPacer._go

        def counted(paced: DialPacer, move: object) -> None:
            go(paced, move)  # type: ignore[arg-type]
            most[0] = max(most[0], paced.in_flight)

        self.patch(DialPacer, "_go", counted)
        return most

    @defer.inlineCallbacks
    def open_clients(self):  # type: ignore[no-untyped-def]
        """SESSIONS clients, the i-th having sent (and got back) "hello i"."""
        clients = []
        for i in range(self.SESSIONS):
            client = connect_client(self.proxy_port, "/chat")
            self.addCleanup(lambda c=client: c.transport.abortConnection() if c.transport.connected else None)
            yield client.opened
            client.sendMessage(b"hello %d" % i)
            yield client.wait_messages(1)
            clients.append(client)
        return clients

    @defer.inlineCallbacks
    def kill_under_clients(self):  # type: ignore[no-untyped-def]
        """:meth:`start`, :meth:`open_clients`, then server 0 killed: the most dials in flight (as it goes), the
        clients, and the indexes of those that were on server 0 (moving now)."""
        most = self.start()
        clients = yield self.open_clients()
        on_first = {int(payload.split()[1]) for payload, _ in self.backends[0].received}
        self.kill(0)
        return most, clients, on_first

    @defer.inlineCallbacks
    def test_the_other_servers_sessions_are_served_while_the_dead_ones_move(self):  # type: ignore[no-untyped-def]
        most, clients, on_first = yield self.kill_under_clients()
        self.assertEqual(len(on_first), self.SESSIONS // 2)
        survivors = [client for i, client in enumerate(clients) if i not in on_first]
        moving = len(on_first)
        done = [False]
        during: dict[int, int] = {}  # survivor: its round trips while the moves went on

        @defer.inlineCallbacks
        def ping_pong(index: int, client):  # type: ignore[no-untyped-def]
            count = len(client.messages)
            while not done[0]:
                client.sendMessage(b"ping")
                count += 1
                sent_at = time.thread_time()
                yield client.wait_messages(count)
                waits.append(time.thread_time() - sent_at)
                if 0 < self.backend.resumes < moving:
                    during[index] = during.get(index, 0) + 1

        # A round trip's cost in the reactor's own time (client, proxy and echo servers all run in it): what
        # the moves' batches make it wait for, not the time other processes of a loaded machine took the CPU.
        waits: list[float] = []
        for client in clients:
            if client not in survivors:
                client.sendMessage(b"after the kill")  # held while it moves, then echoed by the other server
        loops = [ping_pong(i, client) for i, client in enumerate(survivors)]
        yield self.poll(lambda: self.backend.resumes == moving, "every session of the dead server resumed",
                        ticks=3000)
        done[0] = True
        yield defer.gatherResults(loops)
        for client in clients:
            if client not in survivors:
                messages = yield client.wait_messages(2)
                self.assertEqual(messages[1][0], b"after the kill")
        self.assertFalse(any(client.closed.called for client in clients))
        self.assertLessEqual(most[0], self.DIALS)
        # Served between the batches: every survivor had round trips while the dead server's sessions moved.
        self.assertEqual(len(during), len(survivors))
        self.assertGreaterEqual(min(during.values()), 2)
        self.assertLess(max(waits), 1.0)  # about 0.1 s here (0.23 s unpaced, with 100 dials in flight)
        self.assertEqual((self.pacer.in_flight, self.pacer.waiting), (0, 0))
        self.assertTrue(gc.isenabled())


    @defer.inlineCallbacks
    def test_a_session_whose_client_waits_for_an_answer_moves_ahead_of_idle_ones(self):  # type: ignore[no-untyped-def]
        self.SESSIONS, self.DIALS, self.PER_TURN = 60, 2, 1
        _, clients, on_first = yield self.kill_under_clients()
        pacer = self.pacer
        moving = len(on_first)
        yield self.poll(lambda: pacer.waiting > moving // 2, "most moves waiting for their turn")
        session = pacer._waiting[-1]._session  # type: ignore[attr-defined]  # the move queued last
        port = session._legs.client.transport.getPeer().port
        (last,) = [client for client in clients if client.transport.getHost().port == port]
        last.sendMessage(b"waiting for an answer")  # held: its move goes ahead of the idle ones
        messages = yield last.wait_messages(2)
        self.assertEqual(messages[1][0], b"waiting for an answer")
        # Queued last, it would be answered after every other move; it is answered while many still wait (how
        # many moved meanwhile depends on how many reactor turns the echo's round trip takes on a loaded machine).
        self.assertLess(self.backend.resumes, moving * 3 // 4)
        yield self.poll(lambda: self.backend.resumes == moving, "every session of the dead server resumed",
                        ticks=3000)

    @defer.inlineCallbacks
    def test_moves_that_find_no_server_give_their_places_back(self):  # type: ignore[no-untyped-def]
        self.SESSIONS, self.RESUME_TIMEOUT = 40, 1.0
        most, clients, _ = yield self.kill_under_clients()
        pacer = self.pacer
        self.kill(1)  # every dial fails (connection refused), backs off and asks for a turn again, until resume-timeout
        closes = yield defer.gatherResults([client.closed for client in clients])
        self.assertEqual({code for _, code, _ in closes}, {1013})
        self.assertLessEqual(most[0], self.DIALS)
        yield self.poll(lambda: not pacer.waiting, "the pacer's queue empty")
        self.assertEqual(pacer.in_flight, 0)
        self.assertTrue(gc.isenabled())


class FakeSession:
    """What a SessionMove asks of its session."""

    session_id = "s"
    client = "127.0.0.1"
    resuming = True

    def __init__(self, clock: Clock) -> None:
        self.clock = clock


class FakeDialer:
    """Counts the turns a move asks for."""

    def __init__(self) -> None:
        self.paced = 0

    def pace(self, move: object) -> None:
        self.paced += 1


class BackoffTests(SynchronousTestCase):
    """A failed attempt backs off, doubling, each wait drawn from the upper half (jitter)."""

    def test_waits_double_with_jitter(self) -> None:
        clock = Clock()
        dialer = FakeDialer()
        move = SessionMove(FakeSession(clock), dialer, object(), "test")  # type: ignore[arg-type]
        waits = []
        for _ in range(8):
            move.attempt_failed(None, "refused", final=False)
            (call,) = clock.getDelayedCalls()
            waits.append(call.getTime() - clock.seconds())
            clock.advance(waits[-1])
        limits = [min(0.05 * 2**i, 2.0) for i in range(8)]
        for wait, limit in zip(waits, limits, strict=True):
            self.assertTrue(limit / 2 <= wait <= limit, (wait, limit))
        self.assertEqual(dialer.paced, 8)  # each retry asks the pacer for a turn again
        self.assertIs(move.state, MoveState.WAITING)
