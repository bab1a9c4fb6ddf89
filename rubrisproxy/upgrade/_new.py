"""A live upgrade as the new process takes part in it: connect to the old process, take its listeners, start
serving, then adopt the connections it hands over."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.protocols import amp

from ..listening import Inherited, ListeningService
from ..transfer import Adopters, Carried, Kind, Refused
from ._channel import VERSION, Adopt, AdoptRefused, Failed, Hello, Report, Serving, TakeListener
from ._notify import notify


class NewSide(amp.AMP):
    """The channel as the new process answers it: each connection handed over, and the old process's counts."""

    log = Logger()

    def __init__(self, adopters: Adopters, reported: Callable[[int, dict[str, dict[str, int]]], None]) -> None:
        super().__init__()
        self.adopters = adopters
        self.reported = reported

    @Adopt.responder
    def adopt(self, kind: str, version: int, frontend: str, record: bytes, client: int,  # noqa: PLR0913 - Adopt's arguments
              server: int | None = None) -> dict[str, Any]:
        sockets = (client,) if server is None else (client, server)
        try:
            self.adopters.adopt(Carried(Kind(kind), version, frontend, json.loads(record), sockets))
        except Refused as e:
            raise AdoptRefused(str(e)) from None
        except ValueError as e:  # an unknown kind, a record that does not parse
            raise AdoptRefused(f"unreadable {kind} record: {e}") from None
        finally:
            for fd in sockets:  # the reactor holds its own copies of those it adopted
                os.close(fd)
        return {}

    @Report.responder
    def report(self, counts: str, pid: int) -> dict[str, Any]:
        self.reported(pid, json.loads(counts))
        return {}


class Successor:
    """The new process's part: :meth:`take_over` connects to the old process at ``path``, takes the listening
    sockets its configuration still has, starts its services (``start``: they adopt those sockets and bind
    the others), then tells the old process it serves. Any failure is said to the old process, which serves
    on, and ``exit(why)`` ends this one."""

    log = Logger()

    def __init__(self, reactor: Any, path: str, adopters: Adopters,  # noqa: PLR0913 - what taking over touches
                 listeners: Callable[[], Sequence[ListeningService]],
                 reported: Callable[[int, dict[str, dict[str, int]]], None], exit: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.path = path
        self.adopters = adopters
        self.listeners = listeners
        self.reported = reported
        self.exit = exit
        self.channel: NewSide | None = None

    def take_over(self, start: Callable[[], None]) -> Deferred[None]:
        """Take the old process's place; fires once it has (or once this process gave up)."""
        done = self._take_over(start)
        done.addErrback(self._failed)
        return done

    @inlineCallbacks
    def _take_over(self, start: Callable[[], None]) -> Generator[Deferred[Any], Any, None]:
        endpoint = UNIXClientEndpoint(self.reactor, self.path)
        self.channel = channel = yield connectProtocol(endpoint, NewSide(self.adopters, self.reported))
        answer = yield channel.callRemote(Hello, version=VERSION, pid=os.getpid(),
                                          reads=json.dumps(self.adopters.reads()))
        services = list(self.listeners())
        wanted = {(service.key, endpoint) for service in services for endpoint in service.endpoints}
        inherited = Inherited()
        taken_count = 0
        for key, endpoint in json.loads(answer["listeners"]):
            if (key, endpoint) in wanted:
                taken = yield channel.callRemote(TakeListener, key=key, endpoint=endpoint)
                inherited.sockets[(key, endpoint)] = (taken["fd"], taken["family"])
                taken_count += 1
        for service in services:
            service.inherited = inherited
        try:
            start()
        finally:
            inherited.close_rest()
            for service in services:
                service.inherited = None
        self.log.info("upgrade: took {count} listening sockets over from the old process, serving", count=taken_count)
        yield channel.callRemote(Serving)
        if notify(f"MAINPID={os.getpid()}"):  # under systemd (NotifyAccess=all): this process is the service now
            self.log.info("upgrade: told systemd this process ({pid}) is the service's main process", pid=os.getpid())

    def _failed(self, failure: Any) -> None:
        why = failure.getErrorMessage()
        self.log.error("upgrade: this process cannot take over, it exits: {why}", why=why)
        if self.channel is not None:
            self.channel.callRemote(Failed, why=why)
            if self.channel.transport is not None:
                self.channel.transport.loseConnection()
        self.exit(why)
