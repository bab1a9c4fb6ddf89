"""The hand-over channel of a live upgrade: AMP commands over the old process's UNIX socket, file descriptors
passed with them (``SCM_RIGHTS``, :class:`amp.Descriptor`). The new process connects and speaks first
(:class:`Hello`); the channel's :data:`VERSION` must match, each kind's record versions are negotiated per
connection (what the new process reads, said in :class:`Hello`)."""

from __future__ import annotations

from twisted.protocols import amp

from ..ampvalues import BigBytes

#: The channel's version: a change to a command's arguments or meaning takes a new one.
VERSION = 1
#: The environment variable that tells a new process where the old one's hand-over socket is; read (and
#: removed from the environment) once, as the new process starts.
SOCKET_ENV = "RUBRISPROXY_UPGRADE_SOCKET"


class VersionMismatch(Exception):
    """The two processes speak different channel versions."""


class AdoptRefused(Exception):
    """The new process cannot take a connection (its kind or record version, a frontend it lacks)."""


class Hello(amp.Command):
    """New to old, first: its channel version, pid, and the record versions it reads by kind (JSON); the
    answer lists the old process's listening sockets (JSON ``[[key, endpoint], ...]``)."""

    arguments = [(b"version", amp.Integer()), (b"pid", amp.Integer()), (b"reads", amp.Unicode())]
    response = [(b"listeners", amp.Unicode())]
    errors = {VersionMismatch: b"VERSION_MISMATCH"}


class TakeListener(amp.Command):
    """New to old: a copy of the listening socket ``key`` listens with on ``endpoint``."""

    arguments = [(b"key", amp.Unicode()), (b"endpoint", amp.Unicode())]
    response = [(b"fd", amp.Descriptor()), (b"family", amp.Integer())]


class Serving(amp.Command):
    """New to old: it listens on everything it is configured with (adopted or bound): the old one stops
    accepting, and hands its connections over."""


class Failed(amp.Command):
    """New to old: it cannot take over (``why``), and exits; the old one carries on as it was."""

    arguments = [(b"why", amp.Unicode())]
    requiresAnswer = False


class Adopt(amp.Command):
    """Old to new: one connection (:class:`~rubrisproxy.transfer.Carried`): its kind, record version and
    frontend, the record (JSON), its client's socket and, for a tunnel, its server's."""

    arguments = [(b"kind", amp.Unicode()), (b"version", amp.Integer()), (b"frontend", amp.Unicode()),
                 (b"record", BigBytes()), (b"client", amp.Descriptor()),
                 (b"server", amp.Descriptor(optional=True))]
    errors = {AdoptRefused: b"REFUSED"}


class Report(amp.Command):
    """Old to new, as it exits: what became of its connections (JSON ``{kind: {outcome: count}}``)."""

    arguments = [(b"counts", amp.Unicode()), (b"pid", amp.Integer())]
