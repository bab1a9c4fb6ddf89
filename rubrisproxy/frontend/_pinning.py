"""Connection pinning: a client connection keeps one server connection to itself.

Connection-oriented auth (NTLM, Negotiate) authenticates a connection, not a request, so once an origin asks
for it (or the backend says ``pin``) the client's later requests all go on that server connection; it is
never pooled, and the loss of either connection closes the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..http import Headers, HTTPError
from ..lifecycle import ConnectionEnd

if TYPE_CHECKING:
    from ..backend import Server
    from ..origin import OriginConnection
    from ._client import ExchangeClient

#: Authentication schemes that authenticate the connection, not the request.
_CONNECTION_AUTH = (b"ntlm", b"negotiate")


def asks_connection_auth(headers: Headers) -> bool:
    """Whether a 401's headers ask for connection-oriented auth (which pins its server connection)."""
    return any(
        name.lower() == b"www-authenticate" and value.strip().lower().startswith(_CONNECTION_AUTH)
        for name, value in headers
    )


def pinned_connection(client: ExchangeClient, server: Server | None = None) -> OriginConnection | None:
    """The server connection a request of ``client`` must go on (taken from the pool's idle ones), or None;
    :class:`HTTPError` 502 if it has closed.

    ``server`` is a forward proxy's destination: a client pinned to another destination is unpinned (its
    server connection closed) and the request goes on as any other.
    """
    pinned = client.pinned
    if pinned is None:
        return None
    if server is not None and pinned.pool_key != server.key:
        client.unpin()
        return None
    if not pinned.connected:
        raise HTTPError(502, "the server connection this client is pinned to has closed")
    client.frontend.pool.in_use.add(pinned)
    return pinned


def keep_pinned(client: ExchangeClient, connection: OriginConnection, reusable: bool) -> None:
    """A request on a pinned (or newly pinning) server connection is over: the connection stays the client's,
    or, not reusable, is closed with the client (no silent re-route to another server connection)."""
    client.frontend.pool.in_use.discard(connection)
    if reusable:
        if client.pinned is not connection:
            client.unpin()  # a client is pinned to one server connection at a time
        connection.pinned_to = client  # never pooled; its loss closes the client, and the reverse
        client.pinned = connection
    else:
        connection.abort()
        client.end(ConnectionEnd.SERVER_ERROR)
