"""The WebSocket conformance cases of ``tests/wsconformance.py``: directly against the Autobahn echo backend,
and through rubrisproxy in tunnel and session mode, where every verdict must equal the direct one."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

from rubrisproxy.config import WebSocketConfig

from .helpers import GUARD, ProxyTestCase
from .wsconformance import (
    CASES,
    CLOSED,
    DEFAULT_MESSAGE_SIZE,
    LIMIT_CASES,
    LIMITED_MESSAGE_SIZE,
    NO_STATUS,
    OP_CLOSE,
    Case,
    Verdict,
    conformance_backend,
    mismatches,
    run_all,
    stays_open,
)
from .wsecho import EchoBackendFactory, listen_echo_backend


class DirectConformanceTests(unittest.TestCase):
    """Each case's verdict against the backend itself is one its expectation allows."""

    def start_backend(self, max_message_size: int) -> tuple[EchoBackendFactory, int]:
        factory = conformance_backend(max_message_size)
        port = listen_echo_backend(factory)
        self.addCleanup(port.stopListening)
        return factory, cast(IPv4Address, port.getHost()).port

    async def run_cases(self, cases: list[Case], max_message_size: int = DEFAULT_MESSAGE_SIZE) -> dict[str, Verdict]:
        factory, port = self.start_backend(max_message_size)
        verdicts = await run_all(port, cases)
        for _ in range(int(GUARD / 0.01)):
            if not factory.open:
                break
            await deferLater(reactor, 0.01)  # type: ignore[arg-type]
        self.assertFalse(factory.open, "backend connections still open")
        return verdicts

    def assert_conform(self, cases: list[Case], verdicts: dict[str, Verdict]) -> None:
        wrong = mismatches(cases, verdicts)
        if wrong:
            self.fail("verdicts that do not conform:\n" + "\n".join(wrong))

    def test_cases(self) -> Deferred[None]:
        """All cases conform against a backend with 16 MiB limits."""

        async def check() -> None:
            verdicts = await self.run_cases(CASES)
            self.assertEqual(len(verdicts), len(CASES), "duplicate case ids")
            self.assert_conform(CASES, verdicts)

        return Deferred.fromCoroutine(check())

    def test_message_limit(self) -> Deferred[None]:
        """Messages over the backend's limit (1 MiB here, a second backend) fail with 1009."""

        async def check() -> None:
            verdicts = await self.run_cases(LIMIT_CASES, LIMITED_MESSAGE_SIZE)
            self.assert_conform(LIMIT_CASES, verdicts)

        return Deferred.fromCoroutine(check())

    def test_verdicts_are_repeatable(self) -> Deferred[None]:
        """A second run gives equal verdicts, so runs through a proxy can be compared with ``==``."""

        async def check() -> None:
            first = await self.run_cases(CASES)
            second = await self.run_cases(CASES)
            changed = [f"{key}: {first[key]} then {second[key]}" for key in first if first[key] != second[key]]
            if changed:
                self.fail("verdicts that changed:\n" + "\n".join(changed))

        return Deferred.fromCoroutine(check())

    def test_wrong_expectation_is_reported(self) -> Deferred[None]:
        """A case expecting an echo where the backend fails the connection is listed, with both verdicts."""
        (case,) = [c for c in CASES if c.id == "2.5"]
        wrong_case = replace(case, expected=stays_open())

        async def check() -> None:
            verdicts = await self.run_cases([wrong_case])
            (line,) = mismatches([wrong_case], verdicts)
            self.assertIn("2.5 ", line)
            self.assertIn(f"got {verdicts['2.5']}", line)
            self.assertIn(f"expected {Verdict()}", line)

        return Deferred.fromCoroutine(check())


class ProxyConformanceTests(ProxyTestCase):
    """Through rubrisproxy, in each mode, every case gets the same verdict as directly."""

    async def verdicts(self, mode: str | None, cases: list[Case], max_message_size: int) -> dict[str, Verdict]:
        factory = conformance_backend(max_message_size)
        listening = listen_echo_backend(factory)
        self.addCleanup(listening.stopListening)
        port = cast(IPv4Address, listening.getHost()).port
        if mode is not None:
            frontend = self.start_proxy(port, websocket=WebSocketConfig(
                mode=mode, max_message_size=max_message_size, max_frame_size=max_message_size,
                client_ping_interval=0, backend_ping_interval=0,
            ))
            port = self.proxy_port
        verdicts = await run_all(port, cases)
        if mode is not None:
            await self.settle(frontend)
        return verdicts

    def compare(self, mode: str, cases: list[Case], max_message_size: int = DEFAULT_MESSAGE_SIZE) -> Deferred[None]:
        async def check() -> None:
            direct = await self.verdicts(None, cases, max_message_size)
            proxied = await self.verdicts(mode, cases, max_message_size)
            # In session mode the proxy answers pings itself, so a pong may come before echoes the
            # backend has not sent yet: there, only the order among pongs and among messages counts.
            same = _pongs_apart if mode == "session" else _as_is
            if mode == "session":  # the proxy is the client's endpoint: a valid close is answered with its own code
                direct = {case.id: _answered_in_kind(case, direct[case.id]) for case in cases}
            # Where the backend drops TCP on an invalid close frame (RFC 6455 allows it), session mode fails
            # the client's connection the strict way, with the close code (its ``Case.expected[0]``).
            differ = [f"{case.id} {case.description}: direct {direct[case.id]}, through the proxy {proxied[case.id]}"
                      for case in cases if same(direct[case.id]) != same(proxied[case.id])
                      and not (mode == "session" and proxied[case.id] == case.expected[0])]
            if differ:
                self.fail(f"{len(differ)} verdicts differ in {mode} mode:\n" + "\n".join(differ))
            self.assertEqual(mismatches(cases, proxied), [])
            if mode == "session":
                lax = [f"{case.id} {case.description}: {proxied[case.id]}" for case in cases
                       if _fails(case) and proxied[case.id] != case.expected[0]]
                self.assertEqual(lax, [], "a failure without its close code in session mode")

        return Deferred.fromCoroutine(check())

    def test_tunnel(self) -> Deferred[None]:
        return self.compare("tunnel", CASES)

    def test_session(self) -> Deferred[None]:
        return self.compare("session", CASES)

    def test_tunnel_message_limit(self) -> Deferred[None]:
        return self.compare("tunnel", LIMIT_CASES, LIMITED_MESSAGE_SIZE)

    def test_session_message_limit(self) -> Deferred[None]:
        """Session mode enforces its own limit (set equal to the backend's) with 1009."""
        return self.compare("session", LIMIT_CASES, LIMITED_MESSAGE_SIZE)


def _fails(case: Case) -> bool:
    """Whether ``case`` fails the connection (its strict verdict: a close code, then TCP closed)."""
    strict = case.expected[0]
    return strict.close is not None and any(v.close is None and v.ending == strict.ending for v in case.expected[1:])


def _answered_in_kind(case: Case, verdict: Verdict) -> Verdict:
    """``verdict`` (the Autobahn backend's, which answers a valid close with 1000) as an endpoint that echoes the code
    of the client's close (RFC 6455 5.5.1, ``NO_STATUS`` for an empty one) would give it: session mode's."""
    if verdict.ending != CLOSED or verdict.close != 1000 or _fails(case):
        return verdict
    closes = [frame.payload for frame in case.steps() if frame.opcode == OP_CLOSE]
    if not closes:
        return verdict
    payload = closes[0]
    return replace(verdict, close=struct.unpack("!H", payload[:2])[0] if payload else NO_STATUS)


def _as_is(verdict: Verdict) -> object:
    return verdict


def _pongs_apart(verdict: Verdict) -> object:
    """The verdict with its pongs taken out of the messages' order (still in their own order)."""
    pongs = tuple(m for m in verdict.messages if m.kind == "pong")
    return replace(verdict, messages=tuple(m for m in verdict.messages if m.kind != "pong")), pongs
