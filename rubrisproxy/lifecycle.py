"""How a request ended: the termination reasons logs and counters share."""

from __future__ import annotations

from enum import StrEnum


class Termination(StrEnum):
    """Why a request's exchange (or the WebSocket it upgraded to) ended, as written in the access log."""

    OK = "ok"
    BAD_REQUEST = "bad-request"  # refused by the parser or a limit (4xx)
    REQUEST_TIMEOUT = "request-timeout"  # timeout http-request: the head came too slowly
    CLIENT_TIMEOUT = "client-timeout"  # timeout client: the client stalled mid-exchange
    CLIENT_ABORT = "client-abort"  # the client closed before the response was sent
    NO_SERVER = "no-server"  # every connect attempt failed (503)
    CONNECT_TIMEOUT = "connect-timeout"  # the last connect attempt timed out (503)
    SERVER_TIMEOUT = "server-timeout"  # timeout server: the origin stalled (504)
    SERVER_ABORT = "server-abort"  # the origin closed or reset mid-exchange (502)
    BAD_RESPONSE = "bad-response"  # the origin's response was malformed (502)
    NOT_IMPLEMENTED = "not-implemented"  # a request this frontend does not serve (501)
    DENIED = "denied"  # refused by a route's deny rule
    QUEUE_TIMEOUT = "queue-timeout"  # every server stayed full past timeout queue (503)
    SHUTDOWN = "shutdown"  # cut by the end of the shutdown grace period
    CLIENT_CLOSE = "client-close"  # a WebSocket the client closed
    SERVER_CLOSE = "server-close"  # a WebSocket the backend closed
    IDLE_TIMEOUT = "idle-timeout"  # a WebSocket idle past timeout tunnel (or a half-closed one past client-fin/server-fin)
    PING_TIMEOUT = "ping-timeout"  # a WebSocket peer that did not answer a ping in time
    PROTOCOL_ERROR = "protocol-error"  # a WebSocket peer broke the protocol or a limit (1002, 1007, 1009)
    DRAINED = "drained"  # a tunnel closed because its server was drained, put in maintenance or removed
    RESUME_FAILED = "resume-failed"  # a session could not move to another server (buffer full, resume-timeout)
