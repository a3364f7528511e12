"""CPU time and memory of a process, from /proc: what the kernel charged it, not an estimate.

CPU is utime + stime of /proc/<pid>/stat (every thread of the process, in clock ticks: 10 ms
on Linux, fine when divided by hundreds of calls). Memory is VmRSS (now) and VmHWM (the peak
since the process started) of /proc/<pid>/status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SANDBOX = Path(os.environ.get("PHONEMFA_SANDBOX", "/var/tmp/phonemfa-sandbox"))
ASTERISK_PIDFILE = SANDBOX / "root/run/asterisk/asterisk.pid"


@dataclass(frozen=True)
class Sample:
    cpu: float  # seconds, user + system
    rss: int  # bytes
    hwm: int  # bytes, peak RSS so far


def _cpu(stat: str) -> float:
    """utime + stime, in seconds, of a /proc/.../stat line."""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/stat") as f:
        cpu = _cpu(f.read())
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return Sample(cpu, rss, hwm)


def threads(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of a process: tid -> (name, seconds)."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[int(task.name)] = (name, _cpu(stat))
    return out


def thread_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two `threads()` samples, by thread ("name:main", or
    "name:N" for the thread whose id is the main's + N: threads in the order they started).
    Threads that ended in between are missing: their time is only in the process's total."""
    out: dict[str, float] = {}
    main = min(after, default=0)  # the main thread's id is the process id, the lowest
    for tid, (name, cpu) in sorted(after.items()):
        spent = cpu - before.get(tid, (name, 0.0))[1]
        # Python does not name its threads for the OS: tell them apart by id.
        label = f"{name}:main" if tid == main else f"{name}:{tid - main}"
        if spent > 0:
            out[label] = round(spent, 2)
    return out


def machine_busy() -> tuple[float, float]:
    """CPU seconds the whole machine spent not idle since boot, and of those how many the
    hypervisor gave to someone else (steal: a noisy neighbour on a shared host), from
    /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle) / TICK, steal / TICK


def asterisk_pid() -> int:
    """The sandbox Asterisk's pid (asterisk/sandbox.sh keeps the pid file in the root)."""
    pid = int(ASTERISK_PIDFILE.read_text().strip())
    os.kill(pid, 0)  # raises if it is not running
    return pid


class PeakSampler:
    """Samples a process's RSS (and a caller's count of calls in flight) a few times a
    second while a scenario runs: RSS growth per call in flight is read at the peak."""

    def __init__(
        self, pid: int, in_flight: Callable[[], int] | None = None, period: float = 0.1
    ) -> None:
        self.pid = pid
        self.in_flight = in_flight
        self.period = period
        self.peak_rss = 0
        self.peak_in_flight = 0
        self.rss_at_peak_in_flight = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._take()

    async def _run(self) -> None:
        while True:
            self._take()
            await asyncio.sleep(self.period)

    def _take(self) -> None:
        try:
            rss = sample(self.pid).rss
        except (OSError, ValueError):
            return
        self.peak_rss = max(self.peak_rss, rss)
        if self.in_flight is not None:
            n = self.in_flight()
            if n >= self.peak_in_flight:
                self.peak_in_flight = n
                self.rss_at_peak_in_flight = max(self.rss_at_peak_in_flight, rss)
