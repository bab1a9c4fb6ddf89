"""One request's login to its server: credentials sent up front, a challenge judged (send the request again, or
let the client have it), the request body held for sending it again, and the challenge's own body drained."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

from twisted.python.failure import Failure

from ..http import Headers, HTTPError, RequestHead, ResponseHead, best, challenges

if TYPE_CHECKING:
    from ..backend import Login, Server
    from ._connection import OriginConnection

#: The most of a challenge's body read (and dropped) to keep its connection for the request sent again; past it,
#: the connection is closed and the request goes on a new one.
DRAIN_LIMIT = 65536


class Verdict(Enum):
    """What becomes of a challenge (a ``401``, or a parent proxy's ``407``)."""

    RESUBMIT = "resubmit"  # answered: the request goes again, with credentials
    PASS = "pass"  # not answerable here (a scheme not spoken, a body not held): the client gets it
    FAIL = "fail"  # the proxy's credentials were refused


class LoginAttempt:
    """A request's login through its backend's :class:`~rubrisproxy.backend.Login`.

    ``status`` is the challenge it answers: ``401`` from an origin server (``WWW-Authenticate``, answered with
    ``Authorization``), ``407`` from a parent proxy (``Proxy-Authenticate``, ``Proxy-Authorization``). A request
    is sent again at most once for a challenge, and once more when a Digest nonce was only stale; and only if it
    had no body or its whole body is held (``body``: up to the login's ``resubmit_body`` bytes, else None).
    ``mark`` is what the access log says of it.
    """

    __slots__ = ("login", "status", "_ask", "_answer", "method", "uri", "body", "_held", "_sent", "_tries",
                 "verdict", "mark", "why")

    def __init__(self, login: Login, proxy: bool, method: bytes, uri: bytes, request: RequestHead) -> None:
        self.login = login
        self.status = 407 if proxy else 401
        self._ask = b"proxy-authenticate" if proxy else b"www-authenticate"
        self._answer = b"Proxy-Authorization" if proxy else b"Authorization"
        self.method, self.uri = method, uri
        limit = login.resubmit_body
        length = request.content_length
        held = not request.has_body or (limit > 0 and (length is None or length <= limit))
        self.body: list[bytes] | None = [] if held else None
        self._held = 0
        self._sent = False  # the last send carried credentials
        self._tries = 0  # sends after a challenge
        self.verdict: Verdict | None = None  # what became of the last challenge
        self.mark = ""  # "", "preemptive", "answered", "passed" or "failed"
        self.why = ""  # why a challenge was not answered

    def hold(self, data: bytes) -> None:
        """Keep request body bytes as they are sent, while they fit."""
        body = self.body
        if body is not None:
            self._held += len(data)
            if self._held > self.login.resubmit_body:
                self.body = None
            else:
                body.append(data)

    def head(self, server: Server, request: bytes) -> bytes:
        """``request`` (a serialized head) with the credentials ``server`` asked for before, if it did."""
        value = self.login.authorization(server, self.method, self.uri)
        self._sent = value is not None
        if value is None:
            return request
        if not self.mark:
            self.mark = "preemptive"
        return b"%s%s: %s\r\n\r\n" % (request[:-2], self._answer, value)

    def challenged(self, server: Server, headers: Headers, whole: bool) -> Verdict:
        """``server`` answered with a challenge (``headers``: its response's); ``whole``: the request's body, if
        any, is all read."""
        self.verdict = verdict = self._judge(server, headers, whole)
        return verdict

    def _judge(self, server: Server, headers: Headers, whole: bool) -> Verdict:
        login = self.login
        challenge = best(challenges(headers, self._ask))
        if challenge is None:
            return self._pass("no scheme the proxy speaks (Basic, Digest) was offered")
        stale = challenge.stale and self._sent and challenge.scheme == "digest"
        if self._tries >= 2 or (self._sent and self._tries and not stale):
            login.failed += 1
            login.forget(server)
            self.mark, self.why = "failed", "the proxy's credentials were refused"
            return Verdict.FAIL
        login.learn(server, challenge)  # later requests carry credentials up front, whatever becomes of this one
        if not whole or self.body is None:
            return self._pass("the request's body was not held whole to send again (auth.resubmit-body)")
        self._tries += 1
        login.answered += 1
        self.mark = "answered"
        return Verdict.RESUBMIT

    def _pass(self, why: str) -> Verdict:
        self.login.passed += 1
        self.mark, self.why = "passed", why
        return Verdict.PASS


class Resubmitter(TypingProtocol):
    """The exchange a :class:`ChallengeDrain` reports to."""

    def challenge_drained(self, connection: OriginConnection, complete: bool) -> None:
        """The challenge's response is over: read whole (``complete``), or its connection is useless."""


class ChallengeDrain:
    """Takes over a connection whose response is a challenge the proxy handles itself: reads and drops the rest
    of it (up to :data:`DRAIN_LIMIT`; a body delimited by the close is not waited for), then tells its exchange."""

    __slots__ = ("_exchange", "_connection", "_left", "_done")

    pending_head: bytes | None = None  # nothing of it is relayed

    def __init__(self, exchange: Resubmitter, connection: OriginConnection) -> None:
        self._exchange = exchange
        self._connection = connection
        self._left = DRAIN_LIMIT
        self._done = False
        connection.hand_to(self)
        if connection.parser.ended_by_close:
            self._end(False)

    def _end(self, complete: bool) -> None:
        if not self._done:
            self._done = True
            if not complete:
                self._connection.abort()
            self._exchange.challenge_drained(self._connection, complete)

    def response_interim(self, head: ResponseHead) -> None:
        raise RuntimeError("a challenge's drain is given no response head")  # it takes over after one

    def response_head(self, head: ResponseHead, has_body: bool) -> None:
        raise RuntimeError("a challenge's drain is given no response head")  # it takes over after one

    def response_body(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self._end(False)

    def response_end(self) -> None:
        self._end(True)

    def response_upgraded(self, head: ResponseHead, rest: bytes) -> None:
        self._end(False)

    def origin_failed(self, error: HTTPError) -> None:
        self._end(False)

    def origin_lost(self, reason: Failure) -> None:
        self._end(False)

    def origin_timed_out(self) -> None:
        self._end(False)

    def origin_backpressure(self, paused: bool) -> None:
        pass  # nothing is written to the client

    def flush_head(self) -> None:
        pass
