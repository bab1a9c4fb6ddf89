"""A backend's own login to its servers (origin servers, or parent proxies): its credentials, what each server
asked per realm (so that later requests carry credentials up front), and how often challenges were answered."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..config import OriginAuthConfig
from ..http import Challenge, basic_credentials, digest
from ._server import Server

#: Protection spaces (server and realm) remembered per backend; past it they are all forgotten (a server may
#: name any number of realms, and each costs memory).
MAX_SPACES = 1024


@dataclass(slots=True)
class _Space:
    """What one server asked under one realm: the challenge last answered, and the uses of its nonce."""

    challenge: Challenge
    cnonce: str
    uses: int = 0


class Login:
    """The credentials a backend presents, and what its servers asked of them.

    After a server's first challenge, the realm it named is the server's current protection space: every later
    request to that server carries credentials for it at once (Basic, or Digest with the nonce it gave and the
    next nonce count), so only the first request pays a round trip. A refused login forgets the server's space.
    The counters are the admin API's and the metrics'.
    """

    def __init__(self, config: OriginAuthConfig, cnonce: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        credentials = config.credentials
        assert credentials is not None  # the config's loader requires them
        self._user, self._password = credentials.user, credentials.password
        self.resubmit_body = config.resubmit_body
        self._cnonce = cnonce
        self._spaces: dict[tuple[object, str], _Space] = {}
        self._current: dict[object, _Space] = {}  # by server key: the space it last challenged for
        self.answered = 0  # challenges answered: the request was sent again with credentials
        self.failed = 0  # credentials refused: challenged again after the proxy's answer
        self.passed = 0  # challenges handed to the client unanswered (a body not held, a scheme not spoken)

    def __repr__(self) -> str:
        return f"<Login answered={self.answered} failed={self.failed} passed={self.passed}>"

    def authorization(self, server: Server, method: bytes, uri: bytes) -> bytes | None:
        """The credentials for a request of ``method`` on ``uri`` to ``server``, if it has challenged before."""
        space = self._current.get(server.key)
        if space is None:
            return None
        challenge = space.challenge
        if challenge.scheme == "basic":
            return basic_credentials(self._user, self._password)
        space.uses += 1
        return digest((self._user, self._password), challenge, method, uri, (space.uses, space.cnonce))

    def learn(self, server: Server, challenge: Challenge) -> None:
        """``server`` challenged with ``challenge``: its realm is the server's current space (a new nonce starts
        its count again)."""
        key = (server.key, challenge.realm)
        space = self._spaces.get(key)
        if space is None or space.challenge != challenge:
            if len(self._spaces) >= MAX_SPACES:
                self._spaces.clear()
                self._current.clear()
            space = self._spaces[key] = _Space(challenge, self._cnonce())
        self._current[server.key] = space

    def forget(self, server: Server) -> None:
        """``server`` refused the credentials: send none up front until it challenges again."""
        space = self._current.pop(server.key, None)
        if space is not None:
            self._spaces.pop((server.key, space.challenge.realm), None)
