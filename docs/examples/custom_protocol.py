"""An example connection protocol for rubrisproxy (see docs/extending.md).

Name the class in a frontend's ``protocol``::

    [frontends.api]
    protocol = "custom_protocol.ApiKeyConnection"
"""

from __future__ import annotations

import hashlib

from rubrisproxy.frontend import ClientConnection
from rubrisproxy.http import RequestHead


class ApiKeyConnection(ClientConnection):
    """A local connection whose requests are attributed to the API key they carry, not to the address.

    ``client_of`` decides who a request's client is: the access log, ``source`` balancing,
    stick tables and client sessions all use its answer. The key itself is never logged,
    only a short digest of it.
    """

    def client_of(self, head: RequestHead) -> str:
        key = next((v for n, v in head.headers if n.lower() == b"x-api-key"), None)
        if key is None:
            return self.client_address
        return "key-" + hashlib.sha256(key).hexdigest()[:12]
