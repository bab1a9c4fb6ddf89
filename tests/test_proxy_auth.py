"""Forward-proxy authentication under guessing: failures slowed per source, valid logins never in line
behind the guesses, the hashing threads never flooded, every table bounded."""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rubrisproxy.frontend import _auth
from rubrisproxy.frontend._auth import FREE_FAILURES, HASHING, SOURCES, WAITING, ProxyAuth, hash_password
from rubrisproxy.http import HTTPError

USERS = {"ann": hash_password("s3cret", b"salt1234", 1000), "bob": hash_password("hunter2", b"salt5678", 1000)}


def basic(credentials: str) -> bytes:
    return b"Basic " + base64.b64encode(credentials.encode())


class ProxyAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hashes: list[tuple[bytes, defer.Deferred[bool], bool]] = []  # (header, its answer, valid), in order
        self.auth = ProxyAuth(USERS, self.clock, self.hash_later)

    def hash_later(self, function, header: bytes) -> defer.Deferred[bool]:  # type: ignore[no-untyped-def]
        """Hashing "off the thread": computed now, answered when the test says (:meth:`finish`)."""
        answer: defer.Deferred[bool] = defer.Deferred()
        self.hashes.append((header, answer, function(header)))
        return answer

    def finish(self, count: int = 1) -> None:
        for _, answer, valid in [h for h in self.hashes if not h[1].called][:count]:
            answer.callback(valid)

    def check(self, credentials: str, client: str):  # type: ignore[no-untyped-def]
        """The check's outcome once every hash started is done: "ok", or the status refused with."""
        try:
            waiting = self.auth.check(basic(credentials), client)
        except HTTPError as error:
            return error.status
        if waiting is None:
            return "ok"
        outcome: list[object] = []
        waiting.addCallbacks(lambda _: outcome.append("ok"), lambda f: outcome.append(f.value.status))
        while not outcome and any(not h[1].called for h in self.hashes):
            self.finish()
        return outcome[0]

    def test_a_guessing_source_waits_longer_each_time_without_a_hash(self) -> None:
        for _ in range(FREE_FAILURES):
            self.assertEqual(self.check("ann:guess", "192.0.2.9"), 407)
        hashed = len(self.hashes)
        self.assertEqual(hashed, FREE_FAILURES)
        self.assertEqual(self.check("ann:guess2", "192.0.2.9"), 407)  # the first failure over the free ones: 1 s
        with self.assertRaises(HTTPError) as caught:
            self.auth.check(basic("ann:guess3"), "192.0.2.9")
        self.assertEqual((caught.exception.status, caught.exception.headers), (429, b"Retry-After: 1\r\n"))
        self.assertEqual(len(self.hashes), hashed + 1)  # answered from the cooldown, no hash
        self.clock.advance(1)
        self.assertEqual(self.check("ann:guess4", "192.0.2.9"), 407)
        with self.assertRaises(HTTPError) as caught:
            self.auth.check(basic("ann:guess5"), "192.0.2.9")
        self.assertEqual(caught.exception.headers, b"Retry-After: 2\r\n")  # doubled
        for _ in range(20):
            self.clock.advance(_auth.MAX_COOLDOWN)
            self.check("ann:more", "192.0.2.9")
        with self.assertRaises(HTTPError) as caught:
            self.auth.check(basic("ann:guess6"), "192.0.2.9")
        self.assertEqual(caught.exception.headers, b"Retry-After: %d\r\n" % _auth.MAX_COOLDOWN)  # capped
        self.clock.advance(_auth.FORGET_AFTER + 1)
        self.assertEqual(self.check("ann:s3cret", "192.0.2.9"), "ok")  # forgotten after a quiet while

    def test_others_are_not_slowed_and_known_credentials_pass_even_from_the_guesser(self) -> None:
        self.assertEqual(self.check("ann:s3cret", "192.0.2.9"), "ok")
        for _ in range(FREE_FAILURES + 1):
            self.check("ann:guess", "192.0.2.9")
        self.assertEqual(self.check("ann:guess", "192.0.2.9"), 429)
        hashed = len(self.hashes)
        self.assertEqual(self.check("ann:s3cret", "192.0.2.9"), "ok")  # remembered: no hash, no wait
        self.assertEqual(self.check("bob:hunter2", "198.51.100.7"), "ok")  # another source: checked at once
        self.assertEqual(len(self.hashes), hashed + 1)
        self.assertEqual(self.check("bob:hunter2", "192.0.2.9"), "ok")  # and now remembered for anyone

    def test_a_source_has_one_check_in_line_so_a_login_never_waits_behind_guesses(self) -> None:
        attacker = [self.auth.check(basic("ann:guess0"), "192.0.2.9")]
        for i in range(1, 50):  # parallel guesses on other connections: refused at once, never queued
            with self.assertRaises(HTTPError) as caught:
                self.auth.check(basic(f"ann:guess{i}"), "192.0.2.9")
            self.assertEqual(caught.exception.status, 429)
        others = [self.auth.check(basic(f"ann:x{i}"), f"203.0.113.{i}") for i in range(HASHING - 1)]
        login = self.auth.check(basic("bob:hunter2"), "198.51.100.7")
        self.assertEqual(len(self.hashes), HASHING)  # the slots are taken: the login is next in line
        self.finish()
        self.assertEqual(self.hashes[HASHING][0], basic("bob:hunter2"))
        self.finish(HASHING)
        self.assertEqual(self.successResultOf(login), None)
        for waiting in attacker + others:
            self.assertEqual(self.failureResultOf(waiting, HTTPError).value.status, 407)
        self.assertEqual((self.auth._checking, self.auth._waiters, len(self.auth._line)), ({}, {}, 0))

    def test_the_same_credentials_on_many_connections_are_hashed_once(self) -> None:
        checks = [self.auth.check(basic("ann:s3cret"), "192.0.2.9") for _ in range(6)]  # a browser's connections
        self.assertEqual(len(self.hashes), 1)
        self.finish()
        self.assertEqual([self.successResultOf(c) for c in checks], [None] * 6)

    def test_the_line_and_the_tables_are_bounded(self) -> None:
        waiting = [self.auth.check(basic(f"ann:guess{i}"), f"10.0.{i // 250}.{i % 250}") for i in range(HASHING + WAITING)]
        with self.assertRaises(HTTPError) as caught:
            self.auth.check(basic("ann:one-more"), "10.9.9.9")
        self.assertEqual(caught.exception.status, 429)
        while len(self.hashes) < HASHING + WAITING:
            self.finish(HASHING)
        self.finish(HASHING)
        self.assertEqual({self.failureResultOf(w, HTTPError).value.status for w in waiting}, {407})
        for i in range(SOURCES + 10):
            self.check(f"ann:g{i}", f"10.{i // 62500}.{i // 250 % 250}.{i % 250}")
        self.assertEqual(len(self.auth.strikes), SOURCES)
        for i in range(_auth.REMEMBERED):
            self.auth.verified[b"%d" % i] = True
        self.assertEqual(self.check("bob:hunter2", "192.0.2.1"), "ok")
        self.assertEqual(len(self.auth.verified), _auth.REMEMBERED)
        self.assertNotIn(b"0", self.auth.verified)  # the oldest went

    def test_an_ipv6_host_is_one_source_and_a_mapped_address_is_its_ipv4(self) -> None:
        for i in range(FREE_FAILURES + 1):
            self.check("ann:guess", f"2001:db8::{i + 1}")
        self.assertEqual(self.check("ann:guess", "2001:db8::ffff"), 429)
        self.assertEqual(self.check("ann:guess", "2001:db8:0:1::1"), 407)  # another /64
        for _ in range(FREE_FAILURES + 1):
            self.check("ann:guess", "192.0.2.9")
        self.assertEqual(self.check("ann:guess", "::ffff:192.0.2.9"), 429)
