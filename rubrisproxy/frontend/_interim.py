"""An origin's interim (1xx) responses, as an exchange relays them to its client."""

from __future__ import annotations

from ..http import RequestHead, ResponseHead, serialize_headers
from ._heads import VIA


def interim_response(head: ResponseHead, request: RequestHead) -> bytes:
    """What the client of ``request`` is sent of the origin's interim response ``head``, as it came (with its
    end-to-end headers and the proxy's Via): nothing to an HTTP/1.0 client, which may not understand it (RFC 9110
    15.2), nor a 100 when the client's ``Expect: 100-continue`` is the proxy's to answer (it answers it itself and
    does not pass it on: the origin's 100 would be a second one). An HTTP/2 stream sends it as an informational
    HEADERS frame."""
    if request.version == b"1.0" or (head.status == 100 and request.expect_continue):
        return b""
    return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (
        head.status, head.reason, serialize_headers(head.forward), VIA.get(head.version, VIA[b"1.1"]),
    )
