"""Run a Python module under cProfile that measures CPU time (time.thread_time) of the main
thread, switched on by SIGUSR1 and off (stats written to PROFILE_OUT) by SIGUSR2:

    python -m bench.cprofile_run OUT.pstats phonemfa serve --config ...

`python -m bench --cprofile` starts `phonemfa serve` this way and signals it around the
measured part. Unlike py-spy's samples, which count a thread that waits for a CPU (or for the
GIL) as busy, this charges each function only with the CPU its thread really used; the
profiler's own overhead inflates small functions, so read shares, not absolute times.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from pathlib import Path


def command(module: str, stats: Path | None) -> list[str]:
    """The interpreter arguments that run `module`, under this profiler when `stats` is given
    (its main thread profiled between SIGUSR1 and SIGUSR2, the stats written to `stats`)."""
    if stats is None:
        return ["-m", module]
    return ["-m", "bench.cprofile_run", str(stats), module]


def main() -> None:
    out, module, *args = sys.argv[1:]
    profile = cProfile.Profile(time.thread_time)

    def start(*_: object) -> None:
        profile.enable()

    def stop(*_: object) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
