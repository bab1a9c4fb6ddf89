"""A live upgrade of the workers (docs/upgrade.md): each worker replaced in turn by one started from the code
installed now, the old one handing its listening sockets (its ``SO_REUSEPORT`` ones, accept queue included) and
its connections to its replacement, so that ``workers`` processes always serve."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from ..transfer import UpgradeUnderWay
from ..upgrade import SOCKET_ENV, UpgradeFailed
from ._channel import AbortUpgrade, AwaitUpgrade, PrepareUpgrade
from ._handle import HandleState, WorkerHandle

if TYPE_CHECKING:
    from ._supervisor import Supervisor


class RollingUpgrade:
    """The supervisor's live upgrades: :meth:`start` replaces the workers one at a time; the supervisor itself is
    not upgraded."""

    log = Logger()

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.replacing: tuple[WorkerHandle, WorkerHandle] | None = None  # (old, new) while one worker is replaced
        self.running = False
        self.last_failure: str | None = None
        self.replaced: list[dict[str, Any]] = []

    def start(self) -> defer.Deferred[dict[str, Any]]:
        """Replace every worker in turn; fires with the pids, or fails with :class:`UpgradeFailed` (the workers
        not yet replaced serve on as before)."""
        if self.running:
            return defer.fail(UpgradeUnderWay("an upgrade is under way"))
        self.running = True
        self.last_failure = None
        return defer.Deferred.fromCoroutine(self._all())

    async def _all(self) -> dict[str, Any]:
        try:
            replaced = []
            for index in range(len(self.supervisor.handles)):
                replaced.append(await self._one(index))
            self.replaced = replaced
            self.log.info("upgrade: every worker replaced ({count})", count=len(replaced))
            return {"pid": os.getpid(), "was": os.getpid(), "workers": replaced}
        except UpgradeFailed as e:
            self.last_failure = str(e)
            self.log.error("upgrade failed: {why}", why=str(e))
            raise
        finally:
            self.running = False

    async def _one(self, index: int) -> dict[str, Any]:
        supervisor = self.supervisor
        old = supervisor.handles[index]
        if not old.serving or old.channel is None:
            raise UpgradeFailed(f"worker {index} is not serving ({old.state.value})")
        try:
            prepared = await old.call(PrepareUpgrade)
        except Exception as e:  # noqa: BLE001 - refused, or unanswered: said as it is
            raise UpgradeFailed(f"worker {index}: {e}") from None
        new = WorkerHandle(supervisor, index)
        self.replacing = (old, new)
        try:
            new.spawn({SOCKET_ENV: prepared["socket"]})
            channel = old.channel
            if channel is None:
                raise UpgradeFailed(f"worker {index} ended during its upgrade")
            answer = await channel.callRemote(AwaitUpgrade)  # no deadline: the new worker starts meanwhile
        except UpgradeFailed:
            new.signal(signal.SIGKILL)
            raise
        except Exception as e:  # noqa: BLE001 - the old worker's reason
            new.signal(signal.SIGKILL)
            raise UpgradeFailed(f"worker {index}: {e}") from None
        finally:
            self.replacing = None
        supervisor.handles[index] = new
        old.state = HandleState.STOPPING  # it exits once what it kept has ended: not restarted
        self.log.info("upgrade: worker {index} replaced: pid {new} serves, pid {old} hands over and exits",
                      index=index, new=answer["pid"], old=old.pid)
        return {"index": index, "pid": new.pid, "was": old.pid}

    def ended(self, handle: WorkerHandle) -> bool:
        """A worker process that is not (or no longer) one of the supervisor's ended: True if it was a replacement
        that ended before taking over (its old worker is told) or a replaced one, not to be restarted."""
        if handle in self.supervisor.handles:
            return False
        handle.state = HandleState.STOPPED
        replacing = self.replacing
        if replacing is not None and replacing[1] is handle:
            old = replacing[0]
            if old.channel is not None:
                old.channel.callRemote(AbortUpgrade, why=f"its replacement ended before taking over ({handle.last_exit})")
        else:
            self.log.info("upgrade: replaced worker {index} (pid {pid}) exited ({how})", index=handle.index,
                          pid=handle.pid, how=handle.last_exit)
        return True

    def status(self) -> dict[str, Any]:
        return {"state": "replacing" if self.running else "idle", "last_failure": self.last_failure,
                "replaced": self.replaced}
