"""An exchange's login to its server: the proxy's credentials sent, a challenge answered by sending the request
again (origin servers' ``401``, parent proxies' ``407``)."""

from __future__ import annotations

from ..backend import Login
from ..http import Headers, HTTPError, ResponseHead
from ..lifecycle import Termination
from ..origin import ChallengeDrain, LoginAttempt, OriginConnection, Verdict
from ._dispatch import State
from ._exchange_ending import ExchangeEnding

_DONE = State.DONE


class Resubmitting(ExchangeEnding):
    """The part of :class:`~rubrisproxy.frontend.Exchange` that logs in to servers for its backend.

    Only a request routed to a backend with credentials (``auth``) has a :class:`~rubrisproxy.origin.LoginAttempt`
    (``_login``); others pay one attribute check per request. A request to an origin server whose client sent its
    own ``Authorization`` has none either: the client's credentials win, and its challenges are its own. A
    challenge answered is drained (:class:`~rubrisproxy.origin.ChallengeDrain`) and the request sent again on the
    same connection, or a new one to the same server; a challenge not answered goes to the client, except a
    parent proxy's, which the client cannot answer: a ``502`` then.
    """

    __slots__ = ("_login",)

    _login: LoginAttempt | None  # set by Exchange.__init__

    def _begin_login(self, login: Login, proxy: bool, method: bytes, uri: bytes) -> None:
        """Log in with ``login``: to a parent proxy (``proxy``) or an origin server, for ``method`` on ``uri``."""
        head = self.head
        if not proxy and _has_authorization(head.headers):
            return
        self._login = LoginAttempt(login, proxy, method, uri, head)

    def _challenged(self, login: LoginAttempt, head: ResponseHead) -> bool:
        """The server challenged (``head``); True if the response is the proxy's to handle (not relayed)."""
        server, connection = self.server, self.connection
        assert server is not None and connection is not None  # it answered
        verdict = login.challenged(server, head.headers, self.request_done or not self.head.has_body)
        if verdict is not Verdict.RESUBMIT and login.status == 401:
            return False  # the client's to answer
        ChallengeDrain(self, connection)
        return True

    def challenge_drained(self, connection: OriginConnection, complete: bool) -> None:
        """The challenge's response is read (``complete``) or given up: send the request again, or end."""
        if self._state is _DONE:
            self.client.frontend.pool.release(connection, reusable=False)
            return
        login, server = self._login, self.server
        assert login is not None and server is not None
        reusable = complete and connection.finish()
        if login.verdict is not Verdict.RESUBMIT:
            self._release(connection, reusable, keep_slot=True)
            self._refused(login)
            return
        if self.head.has_body:
            self._pending = list(login.body or ())
        if reusable:
            self._connected(connection)
        else:
            self._release(connection, False, keep_slot=True)
            self._connect(self.client.frontend.pool.connect(server))

    def _refused(self, login: LoginAttempt) -> None:
        self.fail(HTTPError(502, f"parent proxy {self.server} answered 407: {login.why}"),
                  Termination.AUTH_FAILED)

    def _tunnel_challenged(self, connection: OriginConnection, headers: Headers) -> bool:
        """A parent proxy answered a CONNECT with ``407``: True if it is asked again (else it has ended)."""
        login, server = self._login, self.server
        assert login is not None and server is not None
        self.client.frontend.pool.release(connection, reusable=False)
        if login.challenged(server, headers, True) is Verdict.RESUBMIT:
            return True
        self._refused(login)
        return False


def _has_authorization(headers: Headers) -> bool:
    return any(name.lower() == b"authorization" for name, _ in headers)
