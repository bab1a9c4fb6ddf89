"""HTTP authentication as a client answers it: challenges read (RFC 9110 11.6), Basic (RFC 7617) and Digest
(RFC 7616) credentials written. Pure functions: what a server asked is kept by the caller."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from ._headers import Headers

#: Digest algorithms answered, by their name in a challenge (upper case), and their hashlib names. The
#: ``-sess`` variants hash the password with the nonce and the client's nonce (RFC 7616 3.4.2).
DIGEST_ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
#: Preference among the challenges a server offers: the strongest Digest first, Basic last.
_RANK = {"SHA-512-256": 3, "SHA-256": 2, "MD5": 1}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SPACE = b" \t"


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` or ``Proxy-Authenticate`` header: its scheme (lower case) and its
    parameters (names lower case, values unquoted)."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def stale(self) -> bool:
        return self.params.get("stale", "").lower() == "true"

    @property
    def algorithm(self) -> str:
        """The Digest algorithm asked for, upper case (MD5 when the challenge names none)."""
        return self.params.get("algorithm", "MD5").upper()


def challenges(headers: Headers, name: bytes) -> list[Challenge]:
    """The challenges of every ``name`` header (lower case) in ``headers``, in order; what cannot be read is
    skipped."""
    found: list[Challenge] = []
    for header, value in headers:
        if header.lower() == name:
            found.extend(_parse(value))
    return found


def _parse(value: bytes) -> list[Challenge]:  # noqa: C901 - one scan of a header value, as its grammar goes
    found: list[Challenge] = []
    params: dict[str, str] | None = None
    position, end = 0, len(value)
    while position < end:
        while position < end and value[position] in b" \t,":
            position += 1
        token = _TOKEN.match(value, position)
        if token is None:
            break  # not a challenge we can read: the rest of the value is left
        position = _skip(value, token.end())
        name = token.group().decode("ascii").lower()
        if position < end and value[position] == 0x3D and params is not None:  # "=": a parameter of the challenge
            position = _skip(value, position + 1)
            text, position = _value(value, position)
            params[name] = text
        elif position < end and value[position] == 0x3D:
            break  # a token68 or a parameter before any scheme
        else:
            params = {}
            found.append(Challenge(name, params))
            if _TOKEN.match(value, position) and not _is_param(value, position):
                position = _skip_token68(value, position)
    return found


def _skip(value: bytes, position: int) -> int:
    while position < len(value) and value[position] in _SPACE:
        position += 1
    return position


def _value(value: bytes, position: int) -> tuple[str, int]:
    """A parameter's value at ``position`` (a token or a quoted string), and where it ends."""
    if position < len(value) and value[position] == 0x22:  # '"'
        out = bytearray()
        position += 1
        while position < len(value) and value[position] != 0x22:
            if value[position] == 0x5C and position + 1 < len(value):  # "\": the next byte as it is
                position += 1
            out.append(value[position])
            position += 1
        return out.decode("latin-1"), position + 1
    token = _TOKEN.match(value, position)
    if token is None:
        return "", position
    return token.group().decode("ascii"), token.end()


def _is_param(value: bytes, position: int) -> bool:
    token = _TOKEN.match(value, position)
    assert token is not None
    after = _skip(value, token.end())
    return after < len(value) and value[after] == 0x3D and value[after + 1:after + 2] != b"="


def _skip_token68(value: bytes, position: int) -> int:
    """Past a scheme's token68 (``Negotiate abc+/==``): not read, only stepped over."""
    while position < len(value) and value[position] not in b", \t":
        position += 1
    return position


def answerable(challenge: Challenge) -> bool:
    """Whether the proxy can answer ``challenge``: Basic, or Digest with a known algorithm and ``qop=auth`` (or
    no qop, as RFC 2069 servers send)."""
    if challenge.scheme == "basic":
        return True
    if challenge.scheme != "digest" or "nonce" not in challenge.params:
        return False
    algorithm = DIGEST_ALGORITHMS.get(challenge.algorithm.removesuffix("-SESS"))
    if algorithm is None or algorithm not in hashlib.algorithms_available:
        return False
    qop = challenge.params.get("qop")
    return qop is None or "auth" in _qops(qop)


def best(offered: list[Challenge]) -> Challenge | None:
    """The challenge to answer among those offered: the strongest Digest, else Basic; None if none can be."""
    usable = [c for c in offered if answerable(c)]
    if not usable:
        return None
    return max(usable, key=lambda c: _RANK.get(c.algorithm.removesuffix("-SESS"), 1) if c.scheme == "digest" else 0)


def _qops(qop: str) -> list[str]:
    return [part.strip().lower() for part in qop.split(",")]


def basic(user: str, password: str) -> bytes:
    """The ``Basic`` credentials of ``user`` (UTF-8, RFC 7617 2.1)."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def digest(credentials: tuple[str, str], challenge: Challenge, method: bytes, uri: bytes, use: tuple[int, str]) -> bytes:
    """The ``Digest`` credentials (user, password) answering ``challenge`` for a request of ``method`` on ``uri``;
    ``use`` is (nc, cnonce): the count of this use of its nonce and the client nonce (RFC 7616 3.4). The user and
    password are hashed as UTF-8, what the server sent as the bytes it sent."""
    user, password = credentials
    nc, cnonce = use
    params = challenge.params
    algorithm = challenge.algorithm
    name = DIGEST_ALGORITHMS[algorithm.removesuffix("-SESS")]

    def h(*parts: bytes) -> bytes:
        return hashlib.new(name, b":".join(parts)).hexdigest().encode()

    realm, nonce = params.get("realm", "").encode("latin-1"), params["nonce"].encode("latin-1")
    secret = h(user.encode(), realm, password.encode())
    if algorithm.endswith("-SESS"):
        secret = h(secret, nonce, cnonce.encode())
    target = h(method, uri)
    qop = b"auth" if "qop" in params else None
    count = b"%08x" % nc
    if qop is None:
        response = h(secret, nonce, target)
    else:
        response = h(secret, nonce, count, cnonce.encode(), qop, target)
    if params.get("userhash", "").lower() == "true":
        fields = [(b"username", _quoted(h(user.encode(), realm))), (b"userhash", b"true")]
    elif user.isascii():
        fields = [(b"username", _quoted(user.encode()))]
    else:
        fields = [(b"username*", b"UTF-8''" + quote(user, safe="").encode())]
    fields += [(b"realm", _quoted(realm)), (b"uri", _quoted(uri)), (b"algorithm", params.get("algorithm", "MD5").encode("latin-1")),
               (b"nonce", _quoted(nonce))]
    if qop is not None:
        fields += [(b"nc", count), (b"cnonce", _quoted(cnonce.encode())), (b"qop", qop)]
    fields.append((b"response", _quoted(response)))
    if "opaque" in params:
        fields.append((b"opaque", _quoted(params["opaque"].encode("latin-1"))))
    return b"Digest " + b", ".join(k + b"=" + v for k, v in fields)


def _quoted(text: bytes) -> bytes:
    return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
