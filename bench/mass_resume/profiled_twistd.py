"""twistd with cProfile switched on and off by a signal (for bench/mass_resume_instructions.py --cprofile).

    python profiled_twistd.py STATS_PATH TWISTD twistd-arguments...

The first SIGRTMIN+2 starts profiling the reactor thread, the second stops it and writes the stats to STATS_PATH
(TWISTD, the twistd script the command would have run, is left out: this runs its ``run``).
"""

from __future__ import annotations

import cProfile
import signal
import sys

from twisted.scripts.twistd import run

profiler = cProfile.Profile()
path = sys.argv.pop(1)
sys.argv.pop(1)
SIGNAL = signal.SIGRTMIN + 2
state = {"on": False}


def toggle(signum: int, frame: object) -> None:
    if state["on"]:
        profiler.disable()
        profiler.dump_stats(path)
    else:
        profiler.enable()
    state["on"] = not state["on"]


signal.signal(SIGNAL, toggle)
sys.argv[0] = "twistd"
run()
