"""The service tree of a proxy with several workers: the supervisor, its admin listener, ``SIGHUP`` reloading."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from ..admin import AdminAPISite
from ..config import CommandLine, ProxyConfig
from ..listening import ListeningService, ListenSettings
from ..logoutput import LineOutput
from ..reload import ReloadOnHangup
from ..startup import StartupReport
from ._admin import FleetAdminAPI, FleetReloader
from ._bind import check_listeners_free
from ._supervisor import Supervisor


class SupervisorService(service.MultiService):
    """The supervisor process's services; before anything starts, every frontend listener is tried (a port
    another program holds ends twistd with one line, as it does for one process)."""

    def __init__(self, reactor: Any, supervisor: Supervisor) -> None:
        super().__init__()
        self.reactor = reactor
        self.supervisor = supervisor

    def privilegedStartService(self) -> None:
        check_listeners_free(self.supervisor.config)
        super().privilegedStartService()


def build_supervisor(config: ProxyConfig, reactor: Any = None, command_line: CommandLine | None = None,
                     output: LineOutput | None = None) -> SupervisorService:
    """The supervisor of ``config.process.workers`` workers serving ``config``, with the proxy's admin API."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    supervisor = Supervisor(reactor, config, output)
    root = SupervisorService(reactor, supervisor)
    StartupReport(config, command_line.config_path if command_line is not None else None).setServiceParent(root)
    supervisor.setServiceParent(root)
    reloader = FleetReloader(supervisor, command_line) if command_line is not None and command_line.config_path else None
    if command_line is not None:
        ReloadOnHangup(reloader, reactor).setServiceParent(root)
    if config.admin.listen:
        api = FleetAdminAPI(supervisor, reloader, config.admin.token)
        site = AdminAPISite(api, config.timeouts.http_request, config.timeouts.client, reactor)
        ListeningService(reactor, "admin", site, ListenSettings(config.admin.listen, key="admin")).setServiceParent(root)
    return root
