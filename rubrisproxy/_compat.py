"""Every place rubrisproxy relies on Twisted's or Autobahn's internals (private modules, underscore names,
undocumented attributes), each behind one name here with a test (tests/test_compat.py,
tests/test_hardening_conn.py) that fails when an upgrade changes what it relies on.

Nothing else in rubrisproxy imports a private module, reads or sets a library's underscore attribute, or
overrides a library's underscore method: it goes through this module.
"""

from __future__ import annotations

import errno
import functools
import gc
import os
import pprint
import select
import socket
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast
from typing import Protocol as TypingProtocol

# Among these, Twisted's private modules: _sslverify, for the interface of a TLS trust root (what platformTrust()
# and trustRootFromCertificates() make), and haproxy's parsers, which read a proxied connection's PROXY header.
from autobahn.twisted import util as _autobahn_util
from autobahn.twisted import websocket as _autobahn_twisted
from autobahn.websocket import protocol as _autobahn_protocol
from h2.connection import H2Connection as _H2Connection
from h2.errors import ErrorCodes as _H2ErrorCodes
from h2.exceptions import InvalidBodyLengthError as _InvalidBodyLengthError
from h2.exceptions import ProtocolError as _H2ProtocolError
from h2.utilities import HeaderValidationFlags as _HeaderValidationFlags
from h2.utilities import validate_headers as _validate_h2_headers
from twisted.internet import abstract, address, epollreactor, posixbase, tcp, unix
from twisted.internet import error as _tcp_error
from twisted.internet import main as _tcp_main
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionAborted, ConnectionDone
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import LogLevel
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.python import context as _context
from twisted.python import log as _log
from twisted.python.failure import Failure

try:  # Autobahn's compiled XOR masker: absent where it was installed without a compiler
    import _nvx_xormasker

    _nvx: tuple[Any, Any] | None = (_nvx_xormasker.ffi, _nvx_xormasker.lib)
except ImportError:
    _nvx = None

if TYPE_CHECKING:  # to the type checker, a leg's mixin is the Autobahn protocol it is mixed into
    from autobahn.twisted.websocket import WebSocketAdapterProtocol
    from autobahn.websocket.protocol import WebSocketProtocol

    class _AutobahnProtocol(WebSocketAdapterProtocol, WebSocketProtocol):  # type: ignore[misc]  # their hints disagree
        pass
else:
    _AutobahnProtocol = object

__all__ = [
    "accepted_without_delay", "AutobahnHooks", "cache_log_levels", "cancel_pong_timeout", "close_ended",
    "close_sent", "compresses", "connect_open", "connect_tcp", "connection_lost", "defer_autobahn_debug",
    "direct_write", "end_as_closed", "EXHAUSTED", "guard_accepts", "inbound_window_bits", "IOpenSSLTrustRoot",
    "LazyFuture", "LazyUtf8Validator", "BodyLengthMismatch", "lean_accepted", "lean_poll", "let_go", "let_go_port",
    "malformed_h2_request", "message_compressed", "native_xor", "open_at_once", "pause_auto_ping", "plain_peer_host",
    "prime_inflater", "rearm_pong_timeout", "report_start_failure", "resume_auto_ping", "send_queue_back", "slim_open_leg", "slim_transport",
    "StreamErrorFrames", "take_unsent", "tcp_buffered", "unsent", "unwrap_endpoint", "use_batched_timer", "V1Parser",
    "V2Parser",
]

_H2_REQUEST = _HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)


def malformed_h2_request(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """What h2's own checks of a request's header list (RFC 9113 8.2 and 8.3: the characters, the pseudo-headers,
    the connection-specific fields, ``te``) find wrong with it, or None. h2 runs them on every HEADERS frame when
    ``validate_inbound_headers`` is on, but a failure there ends the whole connection; run here, it refuses the one
    stream (RFC 9113 8.1.1: a malformed request is a stream error)."""
    try:
        for _ in _validate_h2_headers(headers, _H2_REQUEST):
            pass
    except _H2ProtocolError as error:
        return str(error)
    return None


class BodyLengthMismatch:
    """The event :class:`StreamErrorFrames` reports for a stream it reset: its body's length is not its
    Content-Length."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamErrorFrames(_H2Connection):
    """h2's connection, but a request body longer or shorter than its Content-Length is a stream error (RFC 9113
    8.1.1: a malformed request), as HAProxy makes it: the stream is reset with ``PROTOCOL_ERROR``, its bytes count
    against the connection's window alone, and :class:`BodyLengthMismatch` is reported. h2 raises it from inside
    its DATA frame handling (``_receive_data_frame``), which would end the connection, every other stream with it.
    """

    def _receive_data_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        try:
            return super()._receive_data_frame(frame)
        except _InvalidBodyLengthError:
            stream_id = frame.stream_id
            self.reset_stream(stream_id, _H2ErrorCodes.PROTOCOL_ERROR)
            self.acknowledge_received_data(frame.flow_controlled_length, stream_id)
            return [], [BodyLengthMismatch(stream_id)]


#: accept(2) failures that mean the process or the system is out of a resource, not that the peer failed.
EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def rearm_pong_timeout(leg: Any, call_later: Callable[..., Any]) -> None:
    """Give an Autobahn protocol's pending auto-ping another ``autoPingTimeout`` for its pong.

    Autobahn keeps the pending ping's timer in ``autoPingTimeoutCall`` (anything with
    ``cancel()``, here from ``call_later``): it cancels it when the matching pong
    arrives or the connection is lost, and clears it before calling ``onAutoPingTimeout``.
    """
    leg.autoPingTimeoutCall = call_later(leg.autoPingTimeout, leg.onAutoPingTimeout)


def use_batched_timer(factory: Any, timer: Any) -> None:
    """Make an Autobahn factory's protocols arm their timers (handshakes, pings) on ``timer``.

    Autobahn's own (``txaio``'s batched timer) rounds every deadline down to a whole
    second and reads the global reactor; ``timer`` needs only ``call_later(delay, func)``
    returning something with ``cancel()``.
    """
    factory._batched_timer = timer


class _Deferred:
    """A debug-log argument built only when the line is written (formatted, or turned into a string)."""

    __slots__ = ("_build", "_args", "_kwargs")

    def __init__(self, build: Callable[..., str], *args: Any, **kwargs: Any) -> None:
        self._build = build
        self._args = args
        self._kwargs = kwargs

    def __str__(self) -> str:
        return self._build(*self._args, **self._kwargs)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(self._build(*self._args, **self._kwargs), spec)


#: Autobahn's helpers that colour a debug line's arguments (with ``click``), whatever the log level.
_DEBUG_HELPERS = ("hltype", "hlval")


def defer_autobahn_debug() -> None:
    """Have Autobahn's WebSocket protocol (``autobahn.websocket.protocol``, ``autobahn.twisted.websocket``) build
    the coloured arguments of its debug lines only if one is written (and pretty-print an empty list quickly).

    Every handshake, connection and close calls ``hltype``/``hlval`` for a ``log.debug`` that the proxy's log level
    drops: about a tenth of a session handshake's CPU. Those modules use them only as keyword arguments of log
    calls (a test checks), so the module globals are replaced by deferring wrappers. Idempotent.
    """
    for module in (_autobahn_protocol, _autobahn_twisted):
        for name in _DEBUG_HELPERS:
            helper = getattr(module, name)
            if not isinstance(helper, functools.partial):
                setattr(module, name, functools.partial(_Deferred, helper))
    setattr(_autobahn_protocol, "pformat", _pformat)  # noqa: B010 - its own signature, not pprint's


def connection_lost(protocol: Any, reason: Failure) -> None:
    """Autobahn's Twisted ``connectionLost`` (its ``WebSocketAdapterProtocol``'s) without its four debug lines, whose
    arguments it builds whether or not they are written: a TLS error is still logged as an error, then Autobahn's
    ``_connectionLost`` runs. A tenth of a lost leg's CPU, which a server's death multiplies by its thousands."""
    if _autobahn_twisted._is_tls_error(reason.value):
        protocol.log.error(_autobahn_twisted._maybe_tls_reason(reason.value))
    protocol._connectionLost(reason)


def _pformat(value: object, *args: Any, **kwargs: Any) -> str:
    """``pprint.pformat``, without making a PrettyPrinter for an empty list: each new connection's debug line (of
    the settings it copied from its factory: none, for a leg) pretty-prints one."""
    if value.__class__ is list and not value:
        return "[]"
    return pprint.pformat(value, *args, **kwargs)


def native_xor() -> Callable[[bytes | memoryview, bytes], bytearray] | None:
    """XOR with a repeated 4-byte mask in C: Autobahn's NVX masker (``_nvx_xormasker``, the cffi module its wheels
    ship), called without the two copies and the allocations its ``XorMaskerNvx.process`` adds; None where that
    module was not built (no compiler at install time), and the caller uses Python's.
    """
    if _nvx is None:
        return None
    ffi, lib = _nvx
    new, process, free, into = lib.nvx_xormask_new, lib.nvx_xormask_process, lib.nvx_xormask_free, ffi.from_buffer

    def xor(data: bytes | memoryview, mask: bytes) -> bytearray:
        out = bytearray(data)
        masker = new(mask)
        process(masker, into(out), len(out))
        free(masker)
        return out

    return xor


#: One TrafficStats for every slimmed leg: Autobahn adds to its counters, which nothing reads.
_SHARED_TRAFFIC_STATS = _autobahn_protocol.TrafficStats()


def slim_open_leg(leg: Any, at_rest: Mapping[str, object]) -> None:
    """Drop what an open Autobahn protocol keeps per connection but a leg does not use: about 2.5 KB each.

    Its send queue (an empty ``deque``, 760 bytes; Autobahn fills it only from ``sendData`` with ``sync`` or
    ``chopsize``, after :func:`send_queue_back`), its ``TrafficStats`` (shared by all legs: written,
    never read) and its ``TransportDetails`` (read only while opening, and by ``_onOpen`` just before ``onOpen``).
    Its ``utf8validator`` goes too (the leg class makes one when Autobahn's parser next needs it: see
    :class:`LazyUtf8Validator`), and so do its ``is_open`` and ``is_closed`` futures where the leg class makes them
    when read (:class:`LazyFuture`). An empty list of extensions in use becomes what ``at_rest`` names for it (a
    shared empty tuple). Then each attribute whose value is the very object ``at_rest`` names for it (None, False,
    0: the leg's class holds the same value, so reading it is unchanged, and Autobahn's next assignment puts it
    back), and the instance dict is rebuilt at its new size.
    """
    if not leg.send_queue:
        leg.send_queue = ()
    leg.trafficStats = _SHARED_TRAFFIC_STATS
    leg._transport_details = None
    # ObservableMixin's: its one event ("message") is fired from onMessage, which a leg overrides; with these at
    # None (the mixin's class defaults) ``on`` still works, without checking the event's name.
    leg._valid_events = leg._results = None
    _drop_futures(leg)
    if leg.__dict__.get("websocket_extensions_in_use") == [] and "websocket_extensions_in_use" in at_rest:
        leg.websocket_extensions_in_use = at_rest["websocket_extensions_in_use"]  # none: its class's (an empty tuple)
    attributes = leg.__dict__
    leg.__dict__ = {name: value for name, value in attributes.items()
                    if name not in at_rest or at_rest[name] is not value}


def open_at_once(leg: Any, version: int, protocol: str | None) -> None:
    """Open an Autobahn protocol whose opening handshake the proxy checked (and, as a server, answered) itself,
    leaving it as Autobahn's ``processHandshake`` (a client's) or ``succeedHandshake`` (a server's) would with no
    extension in use: open, its auto-ping scheduled, ``onOpen`` called (through ``_onOpen``), ``is_open`` resolved.
    (tests/test_compat.py compares such a leg with one Autobahn opened.)
    """
    leg.websocket_version = version
    leg.websocket_protocol_in_use = protocol
    leg.websocket_extensions_in_use = []
    leg.state = _autobahn_protocol.WebSocketProtocol.STATE_OPEN
    if leg.openHandshakeTimeoutCall is not None:
        leg.openHandshakeTimeoutCall.cancel()
        leg.openHandshakeTimeoutCall = None
    leg.inside_message = False
    leg.current_frame = None
    leg.autoPingPendingCall = (leg.factory._batched_timer.call_later(leg.autoPingInterval, leg._sendAutoPing)
                               if leg.autoPingInterval else None)
    if leg.trackedTimings:
        leg.trackedTimings.track("onOpen")
    leg._onOpen()
    leg.is_open.callback(None)  # txaio.resolve, on Twisted
    _drop_futures(leg)  # is_open, resolved only now (after onOpen, where the leg was slimmed)


class LazyUtf8Validator:
    """An Autobahn protocol's ``utf8validator``, made when it is first read rather than for every connection.

    Autobahn makes one per connection (``_connectionMade``) and uses it only for text messages its own parser
    reads (``reset`` at a message's start, then ``validate``); a leg's fast path validates those it takes itself.
    As a class attribute of the leg, this data descriptor drops what Autobahn assigns and keeps the one it makes
    in ``_utf8``.
    """

    def __get__(self, leg: Any, owner: type | None = None) -> Any:
        if leg is None:
            return self
        validator = leg.__dict__.get("_utf8")
        if validator is None:
            validator = leg._utf8 = _autobahn_protocol.Utf8Validator()
        return validator

    def __set__(self, leg: Any, value: object) -> None:
        pass  # Autobahn's own, made at connectionMade: one is made when needed


class LazyFuture:
    """An Autobahn protocol's ``is_open`` or ``is_closed`` future (a Deferred on Twisted), dropped while an open leg
    waits, made again when something reads it.

    Autobahn makes both in every protocol's ``__init__``; it resolves ``is_open`` as it opens and ``is_closed`` as
    it closes, and nothing of the proxy's adds callbacks. As a class attribute of the leg, this data descriptor
    keeps what Autobahn assigns in the instance dict (read back unchanged) until :func:`slim_open_leg` drops the
    future it no longer needs: an ``is_open`` already resolved with None, an ``is_closed`` not resolved yet, each
    with no callbacks. One read after that makes the same again (``is_open`` resolved with None, ``is_closed``
    pending) and keeps it.
    """

    def __init__(self, resolved: bool) -> None:
        self._resolved = resolved

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, leg: Any, owner: type | None = None) -> Any:
        if leg is None:
            return self
        future = leg.__dict__.get(self._name)
        if future is None or future is _RESOLVED_WITH_LEG:
            made: Deferred[object] = Deferred()
            if future is _RESOLVED_WITH_LEG:
                made.callback(leg)
            elif self._resolved:
                made.callback(None)
            future = leg.__dict__[self._name] = made
        return future

    def __set__(self, leg: Any, value: object) -> None:
        leg.__dict__[self._name] = value

    def drop_unused(self, leg: Any) -> None:
        """Drop the leg's future if it is as a read would make it again, with no callbacks (Deferred's private
        ``_callbacks``: its public ``callbacks`` is deprecated)."""
        future: Any = leg.__dict__.get(self._name)
        if (isinstance(future, Deferred) and not future._callbacks and future.called == self._resolved
                and (not self._resolved or future.result is None)):
            del leg.__dict__[self._name]


    def drop_resolved_with_leg(self, leg: Any) -> None:
        """Drop the leg's future if Autobahn resolved it with the leg itself (``is_closed``, as it closes) and nothing
        waits on it: it would keep a cycle through the leg, which only Python's cyclic collector frees. A read
        after that makes it again, resolved with the leg."""
        future: Any = leg.__dict__.get(self._name)
        if isinstance(future, Deferred) and not future._callbacks and future.called and future.result is leg:
            leg.__dict__[self._name] = _RESOLVED_WITH_LEG


#: What stands for a future :meth:`LazyFuture.drop_resolved_with_leg` dropped.
_RESOLVED_WITH_LEG = object()


def _drop_futures(leg: Any) -> None:
    """Drop the futures a leg's class makes when read (:class:`LazyFuture`) that it holds unused."""
    for name in ("is_open", "is_closed"):
        lazy = getattr(type(leg), name, None)
        if isinstance(lazy, LazyFuture):
            lazy.drop_unused(leg)


def send_queue_back(leg: Any) -> None:
    """Give a slimmed leg (:func:`slim_open_leg`) a send queue again, before Autobahn's ``sendData`` may fill it."""
    if leg.send_queue.__class__ is tuple:
        leg.send_queue = deque()


def cancel_pong_timeout(leg: Any) -> None:
    """Count traffic from the peer as its answer to the pending auto-ping, as Autobahn does for a data frame
    it parses itself: the pong timeout is cancelled and the next ping scheduled an interval from now."""
    leg._cancelAutoPingTimeoutCall()


def compresses(leg: Any) -> bool:
    """Whether an open Autobahn protocol negotiated a per-message compression extension."""
    return leg._perMessageCompress is not None


def inbound_window_bits(leg: Any) -> int:
    """The window (in bits) of the inflater an open Autobahn protocol's permessage-deflate keeps from one message
    to the next (its peer's context takeover), or 0 if it has none (no extension, or no context takeover)."""
    pmce = leg._perMessageCompress
    if pmce is None:
        return 0
    if pmce._is_server:
        return 0 if pmce.client_no_context_takeover else int(pmce.client_max_window_bits)
    return 0 if pmce.server_no_context_takeover else int(pmce.server_max_window_bits)


def message_compressed(leg: Any) -> bool:
    """Whether the message an Autobahn protocol is ending (in ``onMessageEnd``) came compressed (RSV1)."""
    return bool(leg._isMessageCompressed)


def prime_inflater(leg: Any, window: bytes) -> None:
    """Make an open Autobahn protocol's permessage-deflate inflater go on from ``window``, the plaintext its
    peer's compressor holds as its window: the peer's next messages, which may refer to it, decode. Replaces
    its private ``_decompressor`` (raw inflate, its window bits, ``window`` as the dictionary)."""
    leg._perMessageCompress._decompressor = zlib.decompressobj(-inbound_window_bits(leg), zdict=window)


def slim_transport(transport: object) -> None:
    """Rebuild a TCP connection's attribute dict at the size of what it holds, where it has grown a table of its
    own: for a connection that stays open, mostly idle (a WebSocket's), about 350 bytes less.

    A Python object keeps its attributes in a compact array laid out by keys its class shares, until one is set
    that those keys cannot take: then it gets a dict with a table of its own, sized after the shared keys.
    Twisted's ``tcp.Server`` and ``tcp.Client`` take more attribute names over a process's life than the shared
    keys hold (30), so a connection given a producer (``registerProducer``) or flushing its first buffered write
    (``doWrite`` sets ``dataBuffer`` and ``offset``, its class's defaults until then) soon gets such a table, of 64
    slots for some 17 attributes; a copy has 32. A connection with bytes waiting gets the names its flush sets
    first (so that it does not grow the copy again). A connection without a dict (its gc referents are its
    attribute values, not a dict: reading ``__dict__`` would make one), or whose dict is no larger than a copy
    (one on the shared keys), is left as it is, as are other transports. Attributes read and written as before.
    """
    if not isinstance(transport, tcp.Connection):
        return
    if unsent(transport):
        for name in _WRITE_STATE:
            setattr(transport, name, getattr(transport, name))
    referents = gc.get_referents(transport)
    if len(referents) <= 2 and referents and referents[0].__class__ is dict:
        attributes = referents[0]
        copy = dict(attributes)
        if sys.getsizeof(copy) < sys.getsizeof(attributes):
            transport.__dict__ = copy


#: The attributes ``FileDescriptor.doWrite`` sets on a transport (with ``_tempDataBuffer`` and ``_tempDataLen``,
#: which its ``__init__`` sets already).
_WRITE_STATE = ("dataBuffer", "offset")


def tcp_buffered(transport: object) -> bool:
    """Whether ``transport`` is a Twisted TCP connection, whose write buffer :func:`unsent` counts and
    :func:`direct_write` may bypass (TLS and other transports are not)."""
    return isinstance(transport, tcp.Connection)


def unsent(transport: object) -> int:
    """Bytes written to ``transport`` that the kernel has not taken yet (0 where it cannot tell).

    Reads ``tcp.Connection``'s write buffer (``dataBuffer``, ``offset``, ``_tempDataLen``); for TLS,
    the TCP connection under it, so the count is of encrypted bytes.
    """
    if not hasattr(transport, "dataBuffer"):
        transport = getattr(transport, "transport", None)  # TLSMemoryBIOProtocol: the TCP connection below
        if not hasattr(transport, "dataBuffer"):
            return 0
    t: Any = transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen


def take_unsent(transport: object) -> bytes:
    """Take the bytes written to a TCP ``transport`` that the kernel has not taken yet out of its write buffer
    (``dataBuffer`` from ``offset``, then ``_tempDataBuffer``), leaving it empty; b"" for any other transport.

    For a connection handed to another process, which writes them first.
    """
    if not isinstance(transport, tcp.Connection):
        return b""
    t: Any = transport
    data = bytes(t.dataBuffer[t.offset:]) + b"".join(t._tempDataBuffer)
    t.dataBuffer, t.offset, t._tempDataBuffer, t._tempDataLen = b"", 0, [], 0
    return data


class _LetGo(Protocol):
    """What a connection let go of tells of its end: nothing (its protocol lives on in another process)."""


def let_go(transport: object) -> None:
    """Stop using a TCP ``transport``'s socket without shutting it down: another process holds a copy of it.

    ``loseConnection`` would ``shutdown(2)`` the socket, which ends it for every process holding it. Here
    the transport's producer is dropped without being stopped, the transport stops reading and writing,
    and its ``connectionLost`` runs with ``_shouldShutdown`` off (``tcp._SocketCloser``), so only this
    process's descriptor is closed; the protocol is not told (a stand-in hears the loss instead).
    Later writes and closes are no-ops, as on any lost connection.
    """
    t: Any = transport
    t.producer = None
    t.protocol = _LetGo()
    t._shouldShutdown = False
    t.connectionLost(Failure(ConnectionDone()))


def let_go_port(port: object) -> None:
    """Stop accepting on a listening ``port`` and close this process's copy of its socket, leaving the socket
    itself (and the connections waiting in its accept queue) to the process that adopted a copy.

    ``stopListening`` closes the socket after ``shutdown(2)`` (``tcp._SocketCloser``: a port that bound its
    own socket has ``_shouldShutdown`` set), which would end it in every process (EPOLLHUP on the other's
    copy): it is turned off first. A UNIX ``unix.Port`` would also remove its path, which the other
    process's copy still answers on: its ``_bindPath`` is made an abstract name, which nothing removes.
    """
    p: Any = port
    p._shouldShutdown = False
    if isinstance(port, unix.Port):
        p._bindPath = b"\0"
    p.stopListening()


def pause_auto_ping(leg: Any) -> None:
    """Stop an Autobahn protocol's auto-ping: its next ping and any wait for a pong are cancelled (Autobahn's
    ``autoPingPendingCall``, ``autoPingTimeoutCall``, ``autoPingPending``); :func:`resume_auto_ping` starts it again."""
    for name in ("autoPingPendingCall", "autoPingTimeoutCall"):
        call = getattr(leg, name)
        if call is not None:
            call.cancel()
            setattr(leg, name, None)
    leg.autoPingPending = None


def resume_auto_ping(leg: Any, call_later: Callable[..., Any]) -> None:
    """Schedule an Autobahn protocol's next auto-ping an interval from now (its private ``_sendAutoPing``), on
    ``call_later``, if it pings at all."""
    if leg.autoPingInterval:
        leg.autoPingPendingCall = call_later(leg.autoPingInterval, leg._sendAutoPing)


class _GuardedListener:
    """A listening socket whose ``accept`` reports running out of descriptors instead of failing.

    ``tcp.Port.doRead`` calls ``self.socket.accept()`` and, on EMFILE and its kin, logs a line and
    returns, to be called again at once while the backlog is readable. Here such a failure is handed
    to ``on_exhausted`` and turned into EAGAIN, which Twisted takes silently as "nothing to accept".
    Everything else is the real socket's.
    """

    __slots__ = ("_socket", "_on_exhausted", "_on_accepted", "_on_close", "no_delay", "_kind")

    def __init__(self, sock: Any, on_exhausted: Callable[[int], None], on_accepted: Callable[[], None],
                 on_close: Callable[[], None]) -> None:
        self._socket = sock
        self._on_exhausted = on_exhausted
        self._on_accepted = on_accepted
        self._on_close = on_close
        self.no_delay = _no_delay_inherited(sock)  # what it accepts has TCP_NODELAY on already
        # What socket.accept() reads from the listener for each socket it makes (as enums, through properties):
        # read once. None for anything but a plain socket.socket.
        self._kind = (int(sock.family), int(sock.type), sock.proto) if type(sock) is socket.socket else None

    def accept(self) -> tuple[Any, Any]:
        try:
            kind = self._kind
            accepted = self._socket.accept() if kind is None else self._accept(*kind)
        except OSError as error:
            if error.errno not in EXHAUSTED:
                raise
            self._on_exhausted(error.errno)
            raise BlockingIOError(errno.EAGAIN, "accepting paused") from None
        self._on_accepted()
        return accepted

    def _accept(self, family: int, kind: int, proto: int) -> tuple[socket.socket, Any]:
        """``socket.socket.accept``, with the listener's family, type and protocol read once (its private
        ``_accept`` is accept4(2) with close-on-exec)."""
        listener = self._socket
        fd, address = listener._accept()
        sock = socket.socket(family, kind, proto, fileno=fd)
        if socket.getdefaulttimeout() is None and listener.gettimeout():
            sock.setblocking(True)
        return sock, address

    def close(self) -> None:
        self._on_close()
        self._socket.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def _no_delay_inherited(sock: Any) -> bool:
    """Turn TCP_NODELAY on on a listening TCP socket where the sockets it accepts inherit it (Linux); whether it did."""
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


def accepted_without_delay(transport: object) -> bool:
    """Whether TCP ``transport`` was accepted by a port :func:`guard_accepts` guards whose sockets inherit
    TCP_NODELAY from it (``tcp.Server``'s ``server``, the port): then it has it on, with no setsockopt of its own."""
    listener = getattr(getattr(transport, "server", None), "socket", None)
    return type(listener) is _GuardedListener and listener.no_delay


def guard_accepts(port: object, on_exhausted: Callable[[int], None], on_accepted: Callable[[], None],
                  on_close: Callable[[], None]) -> bool:
    """Have a listening ``tcp.Port`` (or a subclass: TLS, UNIX) report accept(2) running out of descriptors
    to ``on_exhausted(errno)`` instead of logging it on every reactor turn; ``on_accepted`` hears of each
    accepted connection, ``on_close`` of the port's socket closing. False for a port that is not one.
    On Linux, a TCP port's socket gets TCP_NODELAY, which the sockets it accepts inherit
    (:func:`accepted_without_delay`).
    """
    sock = getattr(port, "socket", None)
    if sock is None or not hasattr(sock, "accept") or not hasattr(port, "stopReading"):
        return False
    port.socket = _GuardedListener(sock, on_exhausted, on_accepted, on_close)  # type: ignore[attr-defined]
    return True


def direct_write(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, sending at once when nothing is queued ahead.

    Twisted's ``write`` always queues and registers for writability, so every message
    costs two epoll changes and one more trip through the reactor. A relay mostly
    writes into an empty buffer, so this tries the socket first and hands only what
    the kernel did not take to ``transport.write``: order, buffering and producer
    pausing are unchanged. Reads ``tcp.Connection``'s write buffer (``dataBuffer``, ``offset``,
    ``_tempDataLen``) and sends on its ``socket`` (what its ``writeSomeData`` does, without the memoryview and
    retry wrapper around each send: those cost about as much as the send's own Python call).
    """
    if (
        not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            pass  # full, interrupted or broken: queued below, where Twisted's own write reports a loss
        else:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


def plain_peer_host(transport: object) -> str | None:
    """The peer's host of an accepted TCP ``transport`` that has not started TLS: ``tcp.Server``'s ``hostname``, what
    ``getPeer().host`` says, without building the address. None for any other transport, which may be secure, and
    for one that started TLS (``tcp.Server``'s ``TLS`` flag, which ``startTLS`` sets as it makes it provide
    ``ISSLTransport``)."""
    if isinstance(transport, tcp.Server) and not transport.TLS:
        return str(transport.hostname)
    return None


_PROTOCOL_LOG_PREFIX = Protocol.logPrefix


class _LeanServer(tcp.Server):
    """``tcp.Server`` as a port given :func:`lean_accepted` builds it: the same attributes, logging prefix and
    ``repr``, with the ``repr`` formatted when read (Twisted formats it for every connection, and nothing reads it
    unless something goes wrong), and a close told apart from an abort by the failure's type rather than
    ``Failure.check``, which formats the qualified names of the class it is given on every call."""

    def __init__(self, sock: socket.socket, protocol: Any, client: tuple[object, ...], server: Any,  # noqa: PLR0913 - tcp.Server's
                 sessionno: int, reactor: Any) -> None:
        # tcp.Server.__init__, through Connection's and FileDescriptor's, in one frame.
        self.reactor = reactor
        self._tempDataBuffer: list[bytes] = []
        self._tempDataLen = 0
        self.socket = sock
        sock.setblocking(False)
        self.fileno = sock.fileno
        self.protocol = protocol
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        cls = protocol.__class__
        self._protocol_name = name = cls.__name__  # for __repr__: what Twisted formats at once
        self._port_number = server._realPortNumber  # (which a port that stops listening sets to None)
        # A protocol with Protocol's own logPrefix is an ILoggingContext whose prefix is its class's name.
        prefix = name if cls.logPrefix is _PROTOCOL_LOG_PREFIX else self._getLogPrefix(protocol)
        self.logstr = f"{prefix},{sessionno},{self.hostname}"
        self.startReading()
        self.connected = 1

    def __repr__(self) -> str:  # tcp.Server's, which returns the repstr it formatted as it was made
        return f"<{self._protocol_name} #{self.sessionno} on {self._port_number}>"

    def connectionLost(self, reason: Failure) -> None:
        if not hasattr(self, "socket"):  # as tcp.Connection's: called twice, the second time does nothing
            return
        abstract.FileDescriptor.connectionLost(self, reason)
        self._closeSocket(not isinstance(reason.value, ConnectionAborted))
        protocol = self.protocol
        del self.protocol
        del self.socket
        del self.fileno
        protocol.connectionLost(reason)


def lean_accepted(port: object) -> bool:
    """Have a listening TCP ``port`` (a ``tcp.Port``, TLS ones and ``SO_REUSEPORT`` ones included) build what it
    accepts as a :class:`_LeanServer` instead of a ``tcp.Server``; False, and nothing changed, for another port
    (UNIX, or one that builds its own kind of connection). Where the port's factory says its ``buildProtocol`` ignores the
    address it is given (a true ``builds_without_address``), the port gives it None instead of building an
    ``IPv4Address`` per connection (the port's private ``_buildAddr``). The port's ``_logger`` (a ``Logger``
    class attribute, which makes a Logger for the port on every read) is read once and kept."""
    if not isinstance(port, tcp.Port) or port.transport is not tcp.Server:
        return False
    p: Any = port
    p.transport = _LeanServer
    # Its Logger, which each accepting read reads twice (a Logger class attribute makes a new one on every read).
    p._logger = p._logger
    if getattr(p.factory, "builds_without_address", False) is True:
        p._buildAddr = _no_address
    return True


def _no_address(address: object) -> None:
    """A lean port's address for a factory that does not read it (see :func:`lean_accepted`)."""


def end_as_closed(transport: Any) -> None:
    """End a connection whose peer half-closed as Twisted ends one whose protocol does not take half-closes.

    Calls the transport's own ``connectionLost`` (``tcp.Connection``'s, not part of any interface) with
    ``ConnectionDone``, as the reactor does on such an end of stream: the socket is closed and the
    protocol's ``connectionLost`` called.
    """
    transport.connectionLost(Failure(ConnectionDone()))


def close_sent(transport: Any) -> None:
    """Close a TCP ``transport`` that has nothing left to send and no producer: what ``loseConnection`` does,
    without waiting for the socket to be writable.

    ``loseConnection`` stops reading, registers for writability and closes once the empty buffer's write
    event comes: two epoll changes and a trip through the reactor. Here reading stops and ``disconnecting`` is
    set (as ``loseConnection`` sets them), and the connection ends on its reactor's next turn (the transport's
    ``reactor``, whatever clock its protocol times with) as that write event would end it: the transport's
    ``connectionLost`` with ``ConnectionDone``, never inside the caller, its socket closed without the
    ``shutdown(2)`` before (see :func:`close_ended`). Whatever was written meanwhile is
    left to Twisted, which closes once it is sent. The connections a reactor turn closes so share one call
    of the next turn, in the order they were closed; one whose end fails is logged as a failing call is, and
    the others still end.
    """
    if not transport.connected or transport.disconnecting:
        return
    transport.stopReading()
    transport.disconnecting = 1
    reactor = transport.reactor
    batch = _closing.get(reactor)
    if batch is None:
        batch = _closing[reactor] = []
        reactor.callLater(0, _close_batch, reactor)
    batch.append(transport)


#: The transports close_sent ends on each reactor's next turn, by reactor; a reactor is in it only while its
#: call is pending.
_closing: dict[Any, list[Any]] = {}


def _close_batch(reactor: Any) -> None:
    for transport in _closing.pop(reactor):
        try:
            if transport.connected and not unsent(transport) and transport.producer is None:
                transport._shouldShutdown = False  # close(2) alone ends it, as close_ended says
                transport.connectionLost(connectionDone)  # Twisted's shared ConnectionDone failure: none per connection
        except Exception:  # noqa: BLE001 - as the reactor logs a failing call, and goes on with the next
            _log.err()


class _Connected(ClientFactory):
    """What an unwrapped TCP connection's connector points at: nothing to tell."""

    noisy = False


_CONNECTED = _Connected()


class Connectable(TypingProtocol):
    """A protocol as a TCP connection drives it: Twisted calls these, whatever the class derives from (a class
    compiled native by mypyc, such as ``OriginConnection``, derives from nothing)."""

    transport: Any

    def makeConnection(self, transport: Any) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...


P = TypeVar("P", bound=Connectable)


def unwrap_endpoint(protocol: P) -> P:
    """Let a TCP connection an endpoint made talk to ``protocol`` directly.

    A client endpoint puts a pass-through protocol (``endpoints._WrappingProtocol``) between
    ``tcp.Client`` and the caller's protocol, and the connection's connector keeps the endpoint's
    factories and Deferred: about 1.4 KB per connection, for nothing once it is made. Here the
    connection's ``protocol`` becomes ``protocol`` and its ``connector.factory`` an empty one.
    (The wrapper passes on half-closes too, which a protocol here takes itself.) Other transports
    (TLS) are left as they are. Returns ``protocol`` (a callback of the endpoint's Deferred).
    """
    transport = protocol.transport
    if isinstance(transport, tcp.Client):
        transport.protocol = cast(Protocol, protocol)
        transport.connector.factory = _CONNECTED
    return protocol


class AutobahnHooks(_AutobahnProtocol):
    """The private methods of Autobahn's ``WebSocketProtocol`` a leg takes part in, under names of ours.

    Listed before Autobahn's protocol class in a subclass's bases. Autobahn calls
    ``_fail_connection(code, reason)`` wherever it fails a connection (a protocol error, a message
    too big, an invalid close); that calls :meth:`fail_connection`, which a subclass overrides and
    which runs Autobahn's own as :meth:`autobahn_fail_connection`. Autobahn's ``connectionLost``
    (its Twisted adapter) calls ``_connectionLost(reason)``, which cancels its timers and calls
    ``onClose``; :meth:`connection_gone` runs after it. Its ``dropConnection`` ends the transport with
    ``_closeConnection(abort)`` (its Twisted adapter's), which calls :meth:`close_transport`.
    """

    def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
        self.fail_connection(code, reason)

    def fail_connection(self, code: int, reason: str) -> None:
        """Fail the WebSocket with ``code`` and ``reason``, as Autobahn would (by default)."""
        self.autobahn_fail_connection(code, reason)

    def autobahn_fail_connection(self, code: int, reason: str) -> None:
        """Autobahn's own failing: a close frame with ``code`` (failByDrop off), or the TCP connection dropped."""
        super()._fail_connection(code, reason)

    def _connectionLost(self, reason: Any) -> None:
        super()._connectionLost(reason)
        self.connection_gone(reason)

    def connection_gone(self, reason: Any) -> None:
        """The connection is lost and Autobahn has cancelled its own timers and called ``onClose``."""

    def _closeConnection(self, abort: bool = False) -> None:  # noqa: N802 - Autobahn's name
        self.close_transport(abort)

    def close_transport(self, abort: bool) -> None:
        """End the transport of a WebSocket Autobahn dropped (its state CLOSED already), as its Twisted adapter
        does: cut (``abort``, a reset) or closed once what was written is sent (a FIN)."""
        transport: Any = self.transport
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()


# The reactor's poll, without the call layers around each event


_STOCK_CALL_WITH_LOGGER = _log.callWithLogger


def lean_poll(reactor: object) -> bool:
    """Have an epoll ``reactor`` run each I/O event in the same logging context as Twisted, without the call layers.

    ``EPollReactor.doPoll`` runs every ready descriptor's event through ``log.callWithLogger``, which reaches
    the event through four more calls (``log.callWithContext``, ``context.get``, ``context.call`` and the
    thread's tracker) that look up, copy and push the log context: about as much Python per event as a small
    request's own reading. Here the reactor's ``doIteration`` is a copy of ``doPoll`` that does the same
    inline: the context pushed for an event is the same dict (the outer log context with ``system`` set to
    the selectable's ``logPrefix()``), a failing ``logPrefix`` or event is logged as ``callWithLogger`` logs
    it, and with any other context tracker or ``callWithLogger`` in place each event goes through Twisted's.
    Reads ``EPollReactor``'s ``_poller``, ``_selectables`` and ``_doReadOrWrite``. False, and nothing changed,
    for another reactor.
    """
    if getattr(type(reactor), "doIteration", None) is not epollreactor.EPollReactor.doPoll:  # or a subclass polling its own way
        return False
    r: Any = reactor
    r.doIteration = functools.partial(_lean_do_poll, reactor)
    return True


def _lean_do_poll(reactor: Any, timeout: float | None) -> None:
    """``EPollReactor.doPoll`` with ``log.callWithLogger`` inlined (see :func:`lean_poll`)."""
    try:
        events = reactor._poller.poll(-1 if timeout is None else timeout, len(reactor._selectables))
    except OSError as error:
        if error.errno == errno.EINTR:
            return
        raise
    if not events:
        return
    tracker = _context.theContextTracker
    if type(tracker) is _context.ThreadedContextTracker and _log.callWithLogger is _STOCK_CALL_WITH_LOGGER:
        _handle_events(reactor, events, tracker.currentContext().contexts, tracker.getContext(_log.ILogContext))
        return
    selectables, handle = reactor._selectables, reactor._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is not None:
            _log.callWithLogger(selectable, handle, selectable, fd, event)


def _handle_events(reactor: Any, events: list[tuple[int, int]], contexts: list[dict[Any, Any]],
                   outer: dict[str, Any]) -> None:
    """Each event's handling in the log context ``log.callWithLogger`` would push onto ``contexts`` (``outer``,
    what ``log.callWithContext`` copies, is the same for every event of a poll); a read on a lean TCP connection
    through :func:`_lean_read`."""
    selectables, handle = reactor._selectables, reactor._doReadOrWrite
    lean: dict[Any, Any] | None = None  # the log context _lean_read pushes, made at this poll's first such read
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        if event == _EPOLLIN and type(selectable) in _LEAN_TRANSPORTS and selectable.connected:
            if lean is None:
                lean = {_log.ILogContext: outer.copy()}
            _lean_read(reactor, selectable, contexts, lean)
            continue
        try:
            system = selectable.logPrefix()
        except KeyboardInterrupt:
            raise
        except BaseException:
            system = "(buggy logPrefix method)"
            _log.err(system=system)
        logging = outer.copy()
        logging["system"] = system
        try:
            contexts.append({_log.ILogContext: logging})
            try:
                handle(selectable, fd, event)
            finally:
                contexts.pop()
        except KeyboardInterrupt:
            raise
        except BaseException:
            _log.err(system=system)


_EPOLLIN = select.EPOLLIN


def _lean_read(reactor: Any, transport: Any, contexts: list[dict[Any, Any]], pushed: dict[Any, Any]) -> None:
    """A read event on a connected :class:`_LeanServer` or :class:`_LeanClient`, in one frame: what the reactor's
    ``_doReadOrWrite`` with Twisted's ``Connection.doRead`` and ``_dataReceived`` do for it (about half the
    instructions of an event's handling went to those three calls and the log context's two new dicts).

    The log context is the one ``log.callWithLogger`` pushes (the poll's outer context, ``system`` the
    transport's ``logPrefix()``: its ``logstr``), one pair of dicts per poll whose ``system`` is set for each
    read: a context is read or copied while pushed, never kept. A failed ``recv`` ends the connection as lost
    (``EWOULDBLOCK``: nothing to read), an empty one as done (a half-closeable protocol hears of it through
    ``readConnectionLost``), and an exception from the protocol is logged and ends it, as Twisted's poll does."""
    pushed[_log.ILogContext]["system"] = transport.logstr
    contexts.append(pushed)
    try:
        try:
            data = transport.socket.recv(transport.bufferSize)
        except OSError as error:
            if error.args[0] == errno.EWOULDBLOCK:
                return
            why: BaseException = _tcp_main.CONNECTION_LOST
        else:
            if data:
                try:
                    transport.protocol.dataReceived(data)
                    return
                except BaseException as error:  # noqa: BLE001 - as _doReadOrWrite: logged, and the connection ends
                    why = error
                    _log.err()
            else:
                why = _tcp_main.CONNECTION_DONE
        try:
            reactor._disconnectSelectable(transport, why, True)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - as a failing event is logged (_handle_events), and the next one runs
            _log.err()
    finally:
        contexts.pop()


# A backend leg opened at once, without Autobahn's connection set-up


def connect_open(leg: Any, transport: Any, version: int, protocol: str | None, no_delay: bool) -> None:
    """Connect an Autobahn client protocol to ``transport`` and open it, its opening handshake checked by the proxy
    with no extension in use, as ``makeConnection`` then :func:`open_at_once` then :func:`slim_open_leg` would leave it
    (tests/test_compat.py compares), without making what they make only to drop: Autobahn's ``__init__`` (its futures,
    events and transport details: for a leg whose class skips it), ``connectionMade``'s transport details, traffic
    stats, UTF-8 validator and send queue, and some forty attributes at the values its class keeps (``_AT_REST``).
    ``onOpen`` is not called: the caller goes on as it would (the leg is open).

    For a leg of a class configured as the proxy's are: settings on the class, no open-handshake timeout, no timing
    tracking, no proxy. ``no_delay``: TCP_NODELAY is on already (an origin connection's), set only if the leg's
    factory asks for it off, as ``connectionMade`` would set it.
    """
    leg.connected = 1  # BaseProtocol.makeConnection's
    leg.transport = transport
    leg.peer = _autobahn_util.peer2str(transport)  # connectionMade's, which Autobahn keeps "for backward compatibility"
    if leg.tcpNoDelay != no_delay:
        try:
            transport.setTcpNoDelay(leg.tcpNoDelay)
        except Exception:  # noqa: BLE001 - as Autobahn: not a TCP socket (a UNIX one)
            pass
    leg.data = b""
    leg.send_queue = ()
    leg.trafficStats = _SHARED_TRAFFIC_STATS
    leg.websocket_version = version
    if protocol is not None:
        leg.websocket_protocol_in_use = protocol
    leg.state = _autobahn_protocol.WebSocketProtocol.STATE_OPEN
    leg.inside_message = False
    leg.current_frame = None
    leg.autoPingPendingCall = (leg.factory._batched_timer.call_later(leg.autoPingInterval, leg._sendAutoPing)
                               if leg.autoPingInterval else None)


def close_ended(transport: Any) -> None:
    """:func:`end_as_closed` for a TCP connection whose peer ended its stream, without ``shutdown(2)`` before the
    socket's ``close(2)`` (Twisted's ``_SocketCloser`` does both "to be safe"): closing its last descriptor ends the
    connection as the shutdown would (the peer is gone: its FIN came), one system call fewer for each of a dead
    server's thousands of connections. A copy of the socket held by another process (a session carried there) is
    left to it, as :func:`let_go` leaves one. Twisted's shared ``ConnectionDone`` failure, not one per connection."""
    transport._shouldShutdown = False
    transport.connectionLost(connectionDone)


def cache_log_levels() -> None:
    """Have ``LogLevel.iterconstants()``, which Twisted's ``Logger.emit`` calls for every event to check its level,
    iterate over the levels sorted once rather than sort them again at each call (with a Python key function: a
    sixth of a log line's cost). The same levels in the same order, a new iterator each call. Idempotent."""
    if "iterconstants" in vars(LogLevel):
        return
    levels = tuple(LogLevel.iterconstants())

    def iterconstants(cls: type) -> Iterator[LogLevel]:
        return iter(levels)

    LogLevel.iterconstants = classmethod(iterconstants)


# A TCP connection to an IP address, without a client endpoint's layers


class _Connecting(ClientFactory):
    """The factory of one connection :func:`connect_tcp` makes: hands its protocol over once connected, or fails its
    Deferred (the attempt's failure, its timeout, its cancelling)."""

    noisy = False

    def __init__(self, protocol: Connectable, done: Deferred[Any], timed_out: Callable[[], Exception]) -> None:
        self._protocol = protocol
        self.done = done
        self._timed_out = timed_out
        self.connector: Any = None
        self.timer: Any = None  # the timeout's reactor call

    def buildProtocol(self, addr: object) -> Protocol:
        self._stop_timer()
        return _HandOver(self._protocol, self.done)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self._stop_timer()
        self.connector = None  # it refers back to this factory: no cycle left for the collector
        if not self.done.called:  # else timed out or cancelled, which stopped the attempt
            self.done.errback(reason)

    def time_out(self) -> None:
        self.timer = None
        self.done.errback(self._timed_out())
        self.connector.stopConnecting()

    def cancel(self, done: Deferred[Any]) -> None:
        self._stop_timer()
        done.errback(ConnectingCancelledError(self.connector.getDestination()))
        self.connector.stopConnecting()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _HandOver(Protocol):
    """What a connection :func:`connect_tcp` made first talks to: it gives the connection to the caller's protocol."""

    def __init__(self, protocol: Connectable, done: Deferred[Any]) -> None:
        self._protocol = protocol
        self._done = done

    def makeConnection(self, transport: Any) -> None:
        protocol = self._protocol
        transport.protocol = protocol
        transport.connector.factory = _CONNECTED  # nothing to tell it any more (see unwrap_endpoint)
        protocol.makeConnection(transport)
        self._done.callback(protocol)


class _LeanClient(tcp.Client):
    """``tcp.Client`` with a connection attempt of five system calls fewer: the address (an IP address) used as it is
    rather than through a Deferred; no ``SO_ERROR`` read before the ``connect(2)`` of a new socket, which has none;
    on the socket's first event (writable: connected, or failed with the error ``SO_ERROR`` gives, as Twisted's), no
    second ``connect(2)``, and reading left registered (writing off: one epoll change) rather than both taken off
    and reading put back (three)."""

    _attempted = False

    def resolveAddress(self) -> None:
        if self._requiresResolution:
            super().resolveAddress()
            return
        try:
            self._setRealAddress(self.addr)
        except BaseException:  # as the Deferred's errback in Twisted's
            self.failIfNotConnected(Failure())

    def doConnect(self) -> None:
        vars(self).update(doRead=self.doConnect, doWrite=self.doConnect)  # as Twisted's: both events come here
        if not hasattr(self, "connector"):
            return  # failed meanwhile
        if not self._attempted:
            self._attempted = True
            try:
                result = self.socket.connect_ex(self.realAddress)
            except OSError as e:
                result = e.args[0]
            if result in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                self.startReading()
                self.startWriting()
                return
            if result and result != errno.EISCONN:
                self.failIfNotConnected(_tcp_error.getConnectError((result, os.strerror(result))))
                return
        else:
            err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.failIfNotConnected(_tcp_error.getConnectError((err, os.strerror(err))))
                return
        del self.doWrite, self.doRead
        self.stopWriting()
        self._connectDone()

    def failIfNotConnected(self, err: object) -> None:
        super().failIfNotConnected(err)
        if "doRead" in vars(self):  # bound to it (doConnect): a cycle, which only the collector would free
            vars(self).update(doRead=_no_event, doWrite=_no_event)  # an event of this poll may still come


def _no_event() -> None:
    """A failed :class:`_LeanClient`'s events (its socket is closed already)."""


#: The transports whose read events :func:`_lean_read` handles: Twisted's ``doRead`` unchanged (a connecting
#: :class:`_LeanClient` reads through ``doConnect``, but is not ``connected`` yet).
_LEAN_TRANSPORTS = frozenset((_LeanServer, _LeanClient))

#: A connector's timeout when it has none (Twisted takes None; its stubs say float).
_NO_TIMEOUT: Any = None


class _LeanConnector(tcp.Connector):
    """A ``tcp.Connector`` making a :class:`_LeanClient`."""

    def _makeTransport(self) -> tcp.Client:
        return _LeanClient(self.host, self.port, self.bindAddress, self, self.reactor)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.transport = None  # the lost client refers back to its connector: no cycle left for the collector


def connect_tcp(reactor: Any, address: tuple[str, int], protocol: P, timeout: float,
                timed_out: Callable[[], Exception]) -> Deferred[P]:
    """Connect ``protocol`` over TCP to ``address`` (an IP address and a port), as ``TCP4ClientEndpoint`` (or 6) then
    :func:`unwrap_endpoint` would: the Deferred fires with ``protocol`` once connected (its ``makeConnection``
    done, the connection talking to it directly), or fails with the attempt's failure, with ``timed_out()`` after
    ``timeout`` seconds (the attempt stopped), or, cancelled, with ``ConnectingCancelledError`` (the attempt
    stopped). Without the endpoint's wrapping factory and protocol, with one reactor call for the timeout rather
    than the connector's and the Deferred's, and (on a real reactor) with five system calls fewer
    (:class:`_LeanClient`): each of a dead server's thousands of moving sessions' dials makes one."""
    factory = _Connecting(protocol, Deferred(lambda done: factory.cancel(done)), timed_out)
    if isinstance(reactor, posixbase.PosixReactorBase):  # what its connectTCP does, with a lean client
        factory.connector = connector = _LeanConnector(*address, factory, _NO_TIMEOUT, None, reactor)
        connector.connect()
    else:
        factory.connector = reactor.connectTCP(*address, factory, timeout=None)
    factory.timer = reactor.callLater(timeout, factory.time_out)
    return factory.done


def report_start_failure(twistd_options: Any, message: str) -> None:
    """Tell a daemonizing twistd's parent, which waits for its daemon to say how its start went, that it failed
    with ``message`` (the parent prints it and exits 1). twistd writes its status pipe (``statusPipe`` in its
    options) only for an ``Exception`` raised as the application starts; a start ended by ``SystemExit`` (one line,
    no traceback) would leave the parent waiting for ever. Nothing to do without a daemon (``twistd -n``)."""
    pipe = twistd_options.get("statusPipe") if twistd_options is not None else None
    if pipe is None:
        return
    twistd_options["statusPipe"] = None
    try:
        os.write(pipe, ("1 " + message).encode("ascii", "backslashreplace")[:100])  # what twistd writes: "1 why"
    finally:
        os.close(pipe)
