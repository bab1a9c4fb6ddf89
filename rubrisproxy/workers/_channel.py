"""The supervisor-worker channel's messages: AMP commands over a socket pair the supervisor hands each worker at
spawn (the worker's file descriptor :data:`CHANNEL_FD`). Both ends say :data:`VERSION` first (:class:`Hello`); a
worker of another version is refused and stopped."""

from __future__ import annotations

from twisted.protocols import amp

from ..ampvalues import BigBytes

#: The channel's version: a change to a command's arguments or meaning takes a new one.
VERSION = 3
#: The worker's end of the channel, as the worker process finds it.
CHANNEL_FD = 3


class VersionMismatch(Exception):
    """The two ends of the channel speak different versions."""


class StartFailed(Exception):
    """A worker could not start serving (a listener it could not bind, say)."""


class Refused(Exception):
    """A configuration a worker could not apply."""


class Unresponsive(Exception):
    """A worker left a call of the supervisor unanswered past ``process.worker-timeout`` (or was found so by
    another call meanwhile): it is killed and restarted."""


class Hello(amp.Command):
    """Worker to supervisor, first: its channel version and pid."""

    arguments = [(b"version", amp.Integer()), (b"pid", amp.Integer())]
    errors = {VersionMismatch: b"VERSION_MISMATCH"}


class Start(amp.Command):
    """Supervisor to worker: serve ``config`` (a pickled, checked :class:`ProxyConfig`) as worker ``index`` of
    ``workers``; answered once it listens."""

    arguments = [(b"config", BigBytes()), (b"index", amp.Integer()), (b"workers", amp.Integer())]
    errors = {StartFailed: b"START_FAILED"}


class Apply(amp.Command):
    """Supervisor to worker: a reload, ``config`` checked once by the supervisor; the changes made."""

    arguments = [(b"config", BigBytes())]
    response = [(b"changes", amp.ListOf(amp.Unicode()))]
    errors = {Refused: b"REFUSED"}


class AdminCall(amp.Command):
    """Supervisor to worker: an admin API call (docs/admin.md), already authorised by the supervisor, answered by
    the worker's own API: its status, content type and body."""

    arguments = [(b"method", amp.Unicode()), (b"path", amp.Unicode()), (b"query", amp.Unicode()),
                 (b"body", BigBytes()), (b"peer", amp.Unicode())]
    response = [(b"status", amp.Integer()), (b"content_type", amp.Unicode()), (b"body", BigBytes())]


class Ping(amp.Command):
    """Supervisor to worker, every second or so while it serves: answered at once by a worker whose reactor runs."""


class Publish(amp.Command):
    """Worker to supervisor: ``payload`` on ``topic`` for the other workers (and the supervisor's subscribers).
    A non-empty ``retain`` key keeps it, the last payload per (topic, key), for workers that start later."""

    arguments = [(b"topic", amp.Unicode()), (b"payload", BigBytes()), (b"retain", amp.Unicode())]
    requiresAnswer = False


class Deliver(amp.Command):
    """Supervisor to worker: what ``sender`` (a worker's index; -1 the supervisor) published on ``topic``."""

    arguments = [(b"topic", amp.Unicode()), (b"payload", BigBytes()), (b"sender", amp.Integer())]
    requiresAnswer = False


class Ask(amp.Command):
    """Worker to supervisor: ``question`` on ``topic`` for the other workers; answered with their non-empty
    answers once each has answered (:class:`Query`), or was found gone or unresponsive."""

    arguments = [(b"topic", amp.Unicode()), (b"question", amp.String())]
    response = [(b"answers", amp.ListOf(amp.String()))]


class Query(amp.Command):
    """Supervisor to worker: what worker ``sender`` asks on ``topic``; its answer (empty: nothing to say)."""

    arguments = [(b"topic", amp.Unicode()), (b"question", amp.String()), (b"sender", amp.Integer())]
    response = [(b"answer", amp.String())]


class UpgradeRefused(Exception):
    """A worker's live upgrade could not happen: why (the worker serves on as before)."""


class PrepareUpgrade(amp.Command):
    """Supervisor to worker: a live upgrade of this worker (docs/upgrade.md) begins: open the hand-over socket and
    say where it is, for the replacement the supervisor starts next."""

    response = [(b"socket", amp.Unicode())]
    errors = {UpgradeRefused: b"UPGRADE_REFUSED"}


class AwaitUpgrade(amp.Command):
    """Supervisor to worker: answered once its replacement has taken its listeners (its pid), or failed (why)."""

    response = [(b"pid", amp.Integer())]
    errors = {UpgradeRefused: b"UPGRADE_REFUSED"}


class AbortUpgrade(amp.Command):
    """Supervisor to worker: its replacement ended before taking over (``why``): the upgrade is given up."""

    arguments = [(b"why", amp.Unicode())]
    requiresAnswer = False
