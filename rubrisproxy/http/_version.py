"""The HTTP/1.x versions a request may carry, as the proxy serves them.

Kept out of the compiled parser (``rubrisproxy._native``): a subclass of ``bytes`` cannot be a native class.
"""

from __future__ import annotations


class LaterVersion(bytes):
    """``b"1.1"``, the version a later HTTP/1.x request is served as, remembering the one it said (``sent``, as the
    access log shows it). Equal to ``b"1.1"`` wherever a version is read, and made once per version: the request
    path pays nothing for it, only the access-log record looks (``isinstance``)."""

    sent: str


def _later(minor: int) -> LaterVersion:
    version = LaterVersion(b"1.1")
    version.sent = f"1.{minor}"
    return version


#: The versions served, as the proxy reads them: a later HTTP/1.x as 1.1, the highest it speaks (RFC 9112 2.3).
#: llhttp takes any ``digit.digit``; any other is refused with 505.
SERVED_VERSIONS: dict[str, bytes] = {"1.1": b"1.1", "1.0": b"1.0"} | {f"1.{minor}": _later(minor) for minor in range(2, 10)}
