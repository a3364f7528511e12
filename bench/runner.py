"""One scenario against one target (phonemfa, the floor, the peer), measured from outside.

Each target runs in a process of its own, started fresh for the scenario, warmed up with a
few calls, then measured: CPU and memory of its process and of Asterisk's, sampled from /proc
just before the first call and once the last call is over and Asterisk has no channel left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import cprofile_run, procstat
from bench.baseline_proto import DEFAULT_LOOP, warmup_plan
from bench.pacing import InFlight, run_plan
from bench.phonemfa_target import DEFAULT_ASK, QUEUE_TIMEOUT, ApiDriver, PhonemfaProcess
from bench.plan import MAX_CALLS, CallResult, Scenario
from bench.sandbox import ARI_PASSWORD, ARI_URL, ARI_USER, REPO, wait_no_channels

PEER_PYTHON = REPO / "bench" / ".venv-peer" / "bin" / "python"
# A call not over this long after it started is lost (the longest right call is ~10 s).
# A call placed past phonemfa's trunk.max_calls may wait up to QUEUE_TIMEOUT for a line.
CALL_TIMEOUT = QUEUE_TIMEOUT + 60.0
WARMUP_CALLS = 12


@dataclass
class TargetRun:
    target: str
    scenario: str
    results: list[CallResult] = field(default_factory=list)
    cpu: float = 0.0  # seconds, the target's process
    asterisk_cpu: float = 0.0
    wall: float = 0.0  # first call started .. all over
    rss_before: int = 0
    peak_rss: int = 0
    hwm: int = 0
    peak_in_flight: int = 0
    channels_left: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Measure:
    """CPU of the target and Asterisk between `begin()` and `end()`, and the target's peak
    RSS in between (sampled 10 times a second). With `profile` (a file name), py-spy samples
    the target's stacks meanwhile (--nonblocking: it never pauses the target), and with
    BENCH_PERF=1 perf the whole machine (Asterisk's threads come and go with its channels)."""

    def __init__(
        self, run: TargetRun, pid: int, in_flight: Any = None, profile: Path | None = None
    ) -> None:
        self.run = run
        self.pid = pid
        self.asterisk = procstat.asterisk_pid()
        self.sampler = procstat.PeakSampler(pid, in_flight)
        self.profile = profile
        self.spy: asyncio.subprocess.Process | None = None
        self.perf: asyncio.subprocess.Process | None = None

    async def begin(self) -> None:
        if self.profile is not None and shutil.which("perf") and os.environ.get("BENCH_PERF"):
            self.perf = await asyncio.create_subprocess_exec(
                "perf", "record", "-a", "-g", "-F", "299",
                "-o", str(self.profile.with_suffix(".perf")),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        if self.profile is not None:
            self.spy = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--pid", str(self.pid), "--rate", "250", "--nonblocking",
                "--threads", "--format", "raw", "--output", str(self.profile),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1)  # py-spy attaches
        self.threads0 = procstat.threads(self.pid)
        self.busy0 = procstat.machine_busy()
        self.me0 = procstat.sample(os.getpid()).cpu
        self.t0 = procstat.sample(self.pid)
        self.a0 = procstat.sample(self.asterisk)
        self.wall0 = asyncio.get_running_loop().time()
        self.run.rss_before = self.t0.rss
        self.sampler.start()

    async def end(self) -> None:
        await self.sampler.stop()
        for tool in (self.spy, self.perf):
            if tool is not None:
                tool.send_signal(signal.SIGINT)  # they write their output and exit
                await asyncio.wait_for(tool.wait(), 60)
        t1 = procstat.sample(self.pid)
        # What else kept the machine busy meanwhile (other users of a shared box skew
        # latencies; this says how much): all CPU but the target's, Asterisk's and ours.
        busy1, steal1 = procstat.machine_busy()
        busy, steal = busy1 - self.busy0[0], steal1 - self.busy0[1]
        me = procstat.sample(os.getpid()).cpu - self.me0
        self.run.extra["thread_cpu_s"] = procstat.thread_cpu(
            self.threads0, procstat.threads(self.pid)
        )
        a1 = procstat.sample(self.asterisk)
        self.run.wall = asyncio.get_running_loop().time() - self.wall0
        self.run.cpu = t1.cpu - self.t0.cpu
        self.run.asterisk_cpu = a1.cpu - self.a0.cpu
        self.run.extra["bench_cpu_s"] = round(me, 2)
        self.run.extra["other_cpu_s"] = round(busy - self.run.cpu - self.run.asterisk_cpu - me, 2)
        # Of which the hypervisor gave to other guests (its share of the processes' own CPU
        # time is not known: the two overlap).
        self.run.extra["steal_cpu_s"] = round(steal, 2)
        self.run.peak_rss = self.sampler.peak_rss
        self.run.hwm = t1.hwm


async def run_phonemfa(
    scenario: Scenario,
    folder: Path,
    warmup: int = WARMUP_CALLS,
    profile: bool = False,
    src: Path | None = None,
    cprofile: bool = False,
    max_calls: int = MAX_CALLS,
    ask: str = DEFAULT_ASK,
) -> TargetRun:
    run = TargetRun("phonemfa", scenario.name)
    stats = folder / "cprofile.pstats" if cprofile else None
    service = PhonemfaProcess(folder, src=src, cprofile=stats, max_calls=max_calls)
    await service.start()
    run.extra["loop"] = service.event_loop()
    if src is None and run.extra["loop"] != "uvloop":  # what the bench reports it on
        run.problems.append(f"phonemfa serve ran on {run.extra['loop']}, not uvloop")
    run.extra["ask"] = ask
    driver = ApiDriver(service.url, ask=ask)
    try:
        warm = await run_plan(warmup_plan(warmup), driver.place, call_timeout=CALL_TIMEOUT)
        _check_warmup(run, warm)
        await driver.wait_idle()
        await wait_no_channels()
        driver.new_run()
        spy = folder / "py-spy.txt" if profile else None
        measure = Measure(run, service.pid, lambda: driver.in_progress, spy)
        driver.start_polling()
        if stats is not None:
            service.signal(signal.SIGUSR1)  # the profiler starts
        await measure.begin()
        counter = InFlight()
        run.results = await run_plan(
            scenario.plan(), driver.place, call_timeout=CALL_TIMEOUT, in_flight=counter
        )
        left = await driver.wait_idle()
        run.channels_left = await wait_no_channels()
        await measure.end()
        if stats is not None:
            service.signal(signal.SIGUSR2)  # ...and writes its stats
        await driver.stop_polling()
        run.peak_in_flight = measure.sampler.peak_in_flight
        run.extra["client_peak_in_flight"] = counter.peak
        if left:
            run.problems.append(f"{left} call(s) still in progress after the run")
        # Not measured: reading every call back and the service's own counters.
        await driver.verify([r for r in run.results])
        run.extra["ari_connections"] = await driver.metric("phonemfa_ari_connections")
        if (run.extra["ari_connections"] or 0) > 1:
            run.problems.append("the ARI websocket reconnected during the run")
    finally:
        await driver.close()
        code = await service.stop()
        if code != 0:
            run.problems.append(f"phonemfa serve exited with {code}")
    run.problems += [f"log: {line}" for line in service.log_problems()[:20]]
    return run


async def run_baseline(
    target: str,
    scenario: Scenario,
    folder: Path,
    warmup: int = WARMUP_CALLS,
    profile: bool = False,
    cprofile: bool = False,
    max_calls: int = MAX_CALLS,
    loop: str = DEFAULT_LOOP,
) -> TargetRun:
    """`target` is "floor" (bench/floor.py, phonemfa's venv) or "peer" (bench/peer.py, in
    bench/.venv-peer), on `loop` (baseline_proto.LOOPS). With `cprofile`, its main thread is
    profiled while measured, as phonemfa's is (cprofile.pstats in its folder)."""
    run = TargetRun(target, scenario.name)
    python = str(PEER_PYTHON) if target == "peer" else sys.executable
    stats = folder / "cprofile.pstats" if cprofile else None
    with _log_file(folder, target) as log:
        proc = await asyncio.create_subprocess_exec(
            python, *cprofile_run.command(f"bench.{target}", stats),
            "--scenario", json.dumps(dataclasses.asdict(scenario)),
            "--app", f"bench-{target}-{secrets.token_hex(3)}",
            "--ari-url", ARI_URL, "--ari-user", ARI_USER,
            "--warmup", str(warmup), "--call-timeout", str(CALL_TIMEOUT),
            "--max-calls", str(max_calls), "--loop", loop,
            cwd=REPO, env={**os.environ, "BENCH_ARI_PASSWORD": ARI_PASSWORD},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            limit=256 * 1024 * 1024,  # the results come back as one line
        )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    async def hear(timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{target} exited early; see {folder / (target + '.log')}")
        return dict(json.loads(line))

    async def say(word: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(word.encode() + b"\n")
        await proc.stdin.drain()

    try:
        ready = await hear(120)
        if ready.get("warmup_failed"):
            run.problems.append(f"{ready['warmup_failed']} warm-up call(s) went wrong")
        run.extra["loop"] = ready.get("loop")
        if ready.get("loop") != loop:
            run.problems.append(f"asked to run on {loop}, ran on {ready.get('loop')}")
        await wait_no_channels()
        measure = Measure(run, proc.pid, profile=folder / "py-spy.txt" if profile else None)
        if stats is not None:
            proc.send_signal(signal.SIGUSR1)  # the profiler starts
        await measure.begin()
        await say("go")
        done = await hear(scenario.duration + CALL_TIMEOUT + 60)
        run.channels_left = await wait_no_channels()
        await measure.end()
        if stats is not None:
            proc.send_signal(signal.SIGUSR2)  # ...and writes its stats
        run.peak_in_flight = int(done["peak_in_flight"])
        await say("results")
        run.results = [CallResult.from_json(r) for r in (await hear(60))["results"]]
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return run


def _log_file(folder: Path, target: str) -> IO[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / f"{target}.log").open("ab")


def _check_warmup(run: TargetRun, warm: list[CallResult]) -> None:
    wrong = [r for r in warm if not r.correct]
    if wrong:
        first = wrong[0]
        run.problems.append(
            f"{len(wrong)} warm-up call(s) went wrong, e.g. {first.kind}: "
            f"{first.outcome} {first.reason or ''} {first.error or ''}".strip()
        )
