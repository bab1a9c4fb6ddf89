# cython: language_level=3, boundscheck=False, wraparound=False
"""The access log's text line, compiled: the same text as :func:`rubrisproxy.accesslog.format_text` (the reference,
and what runs when this module is not built) for about a third of its instructions."""


cdef inline long long _ms(double value):
    """A time in whole milliseconds, rounded; -1 (did not happen) stays -1."""
    return <long long>(value + 0.5) if value >= 0.0 else -1


cdef class TextLines:
    """``format_text`` of an :class:`~rubrisproxy.accesslog.AccessRecord`; ``timestamp`` (a
    :class:`rubrisproxy.logoutput.Timestamps`) is called once per millisecond, not once per line."""

    cdef object _timestamp
    cdef long long _millisecond
    cdef object _stamp

    def __init__(self, timestamp):
        self._timestamp = timestamp
        self._millisecond = -1
        self._stamp = ""

    def __call__(self, record):
        cdef double at, wait, queue, connect, response, total
        cdef long long status, bytes_in, bytes_out, retries, millisecond
        (at, client, frontend, method, target, version, status, bytes_in, bytes_out, backend, server, wait, queue,
         connect, response, total, termination, retries, session, request_id, auth) = record
        millisecond = <long long>(at * 1000)
        if millisecond != self._millisecond:
            self._stamp = self._timestamp(at)
            self._millisecond = millisecond
        line = (f'{self._stamp} {client} {frontend} {backend}/{server} '
                f'{_ms(wait)}/{_ms(queue)}/{_ms(connect)}/{_ms(response)}/{_ms(total)} '
                f'{status} {bytes_in} {bytes_out} {termination} retries={retries} "{method} {target} HTTP/{version}"')
        if session:
            line += " session=" + session
        if request_id:
            line += " id=" + request_id
        return line + " auth=" + auth if auth else line
