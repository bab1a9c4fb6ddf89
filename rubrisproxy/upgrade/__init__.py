"""Live upgrade (docs/upgrade.md): a new rubrisproxy process takes the listeners and the live connections of
the running one, over a UNIX socket (AMP, descriptors passed with ``SCM_RIGHTS``)."""

from ._channel import SOCKET_ENV, VERSION
from ._new import Successor
from ._old import UpgradeFailed, Upgrader
from ._process import Pidfile, ProcessSpawner, Spawner, restore_stderr
from ._service import UpgradeOnSignal, exit_now, standard_adopters
from ._tally import Tally, UpgradeState

__all__ = [
    "SOCKET_ENV", "VERSION", "Pidfile", "ProcessSpawner", "Spawner", "Successor", "Tally", "UpgradeFailed",
    "UpgradeOnSignal", "UpgradeState", "Upgrader", "exit_now", "restore_stderr", "standard_adopters",
]
