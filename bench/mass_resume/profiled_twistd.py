"""twistd with cProfile switched on and off by a signal (for bench/mass_resume_instructions.py --cprofile).

    python profiled_twistd.py STATS_PATH TWISTD twistd-arguments...

The first SIGRTMIN+2 starts profiling the reactor thread, the second stops it and writes the stats to STATS_PATH
(TWISTD, the twistd script the command would have run, is left out: this runs its ``run``), and the garbage
collector's passes meanwhile (generation, milliseconds, objects collected) to STATS_PATH.gc.
"""

from __future__ import annotations

import cProfile
import gc
import signal
import sys
import time

from twisted.scripts.twistd import run

profiler = cProfile.Profile()
path = sys.argv.pop(1)
sys.argv.pop(1)
SIGNAL = signal.SIGRTMIN + 2
state = {"on": False}
passes: list[str] = []
started: list[float] = []


def collected(phase: str, info: dict[str, int]) -> None:
    if not state["on"]:
        return
    if phase == "start":
        started[:] = [time.perf_counter()]
    elif started:
        passes.append(f"{time.time():.3f} gen {info['generation']} {1e3 * (time.perf_counter() - started[0]):.1f} ms "
                      f"collected {info['collected']}")


def toggle(signum: int, frame: object) -> None:
    if state["on"]:
        profiler.disable()
        profiler.dump_stats(path)
        with open(path + ".gc", "w") as out:
            out.write("\n".join(passes) + "\n")
    else:
        profiler.enable()
    state["on"] = not state["on"]


gc.callbacks.append(collected)


signal.signal(SIGNAL, toggle)
sys.argv[0] = "twistd"
run()
