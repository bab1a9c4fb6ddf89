"""Who closed a WebSocket relayed as bytes (tunnel mode), told from the last bytes each side sent.

A tunnel does not parse frames, but a WebSocket endpoint sends nothing after its close frame, so a close
sent is at the end of what that side sent last; of two closes, the one answered came first, and its answer
was read last. That gives a tunnel the termination session mode reads from the frames it parses
(docs/websocket.md, "How a WebSocket's end is logged").
"""

from __future__ import annotations

from ..lifecycle import Termination

_CLOSE = 0x88  # FIN and the close opcode, no reserved bit
_LONGEST = 125  # a control frame's largest payload
#: What a tunnel keeps of each side's last read: room for a whole close frame, masked (2 + 4 + 125 bytes).
TAIL = 2 + 4 + _LONGEST

#: Who began the end, from the termination a tunnel reads off TCP (which side ended first, and how).
_CLIENT_ENDS = frozenset((Termination.CLIENT_CLOSE, Termination.CLIENT_ABORT))


def ends_with_close(data: bytes, masked: bool) -> bool:
    """Whether ``data`` ends with a whole close frame: empty, or with a code from 1000 to 4999 (``masked``: a
    client's, whose payload is masked)."""
    head = 6 if masked else 2
    size = len(data)
    length_bit = 0x80 if masked else 0
    for length in range(min(_LONGEST, size - head) + 1):
        start = size - head - length
        if data[start] != _CLOSE or data[start + 1] != length_bit | length:
            continue
        if length == 0:
            return True
        if length == 1:
            continue
        code = data[start + head] << 8 | data[start + head + 1]
        if masked:
            code ^= data[start + 2] << 8 | data[start + 3]
        if 1000 <= code <= 4999:
            return True
    return False


def tunnel_termination(by_tcp: Termination, client_tail: bytes, origin_tail: bytes, client_last: bool) -> Termination:
    """A WebSocket tunnel's end as session mode logs the same event: ``client-close`` or ``server-close`` for the side
    whose close frame came first, else ``client-abort`` or ``server-abort`` for the side whose TCP connection ended
    first (``by_tcp``, which says so). ``client_tail``, ``origin_tail``: the end of each side's last read;
    ``client_last``: whether the client's was read after the backend's."""
    client_closed = ends_with_close(client_tail, masked=True)
    origin_closed = ends_with_close(origin_tail, masked=False)
    if client_closed and origin_closed:
        return Termination.SERVER_CLOSE if client_last else Termination.CLIENT_CLOSE  # the answer was read last
    if client_closed:
        return Termination.CLIENT_CLOSE
    if origin_closed:
        return Termination.SERVER_CLOSE
    return Termination.CLIENT_ABORT if by_tcp in _CLIENT_ENDS else Termination.SERVER_ABORT
