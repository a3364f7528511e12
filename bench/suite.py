"""A whole benchmark run: every scenario against every target, then the verdicts.

`run_bench` is what `python -m bench` runs with the sandbox lock held, and what the smoke test
(tests/integration/test_bench_smoke.py) runs under its test session's lock.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import report
from bench.baseline_proto import DEFAULT_LOOP
from bench.phonemfa_target import DEFAULT_ASK
from bench.plan import MAX_CALLS, SCENARIOS
from bench.runner import PEER_PYTHON, WARMUP_CALLS, TargetRun, run_baseline, run_phonemfa
from bench.sandbox import REPO, wait_no_channels

TARGETS = ("phonemfa", "floor", "peer")
# Between two targets: Asterisk finishes what the last one left in its queues.
SETTLE = 3.0


@dataclass(frozen=True)
class Options:
    calls: int | None = None  # instead of each scenario's number of calls
    rate: float | None = None  # instead of each paced scenario's calls/s
    warmup: int = WARMUP_CALLS  # calls before measuring, per target
    profile: bool = False  # py-spy each target while measured
    cprofile: bool = False  # cProfile (CPU time) each target's main thread while measured
    phonemfa_src: Path | None = None  # run phonemfa from another source tree
    max_calls: int = MAX_CALLS  # phonemfa's trunk.max_calls, and the baselines' own limit
    baseline_loop: str = DEFAULT_LOOP  # the baselines' event loop (phonemfa's is uvloop)
    ask: str = DEFAULT_ASK  # the client asks for phonemfa's outcome in the POST, or a GET after


async def run_bench(
    scenarios: list[str],
    targets: list[str],
    workdir: Path,
    options: Options = Options(),
    log: Any = sys.stderr,
) -> dict[str, Any]:
    """Every scenario against every target; the report as a dict (`ok`: no correctness
    failure; `targets_met`: every performance target too). The caller holds the sandbox lock
    and has Asterisk up."""
    out: dict[str, Any] = {
        "started_at": time.time(),
        "machine": machine(),
        "baseline_loop": options.baseline_loop,
        "ask": options.ask,
        "scenarios": {},
    }
    if options.baseline_loop != DEFAULT_LOOP:
        print(f"bench: the baselines run on {options.baseline_loop}", file=log, flush=True)
    if "peer" in targets and not PEER_PYTHON.exists():
        raise SystemExit(f"bench: no {PEER_PYTHON} (make bench creates it)")
    all_verdicts: list[report.Verdict] = []
    for name in scenarios:
        scenario = SCENARIOS[name]
        if options.calls is not None:
            scenario = replace(scenario, calls=options.calls)
        if options.rate is not None and scenario.rate is not None:
            scenario = replace(scenario, rate=options.rate)
        print(f"bench: {name}: {scenario.description}", file=log, flush=True)
        by_target: dict[str, dict[str, Any]] = {}
        for target in targets:
            print(f"bench:   {target} ...", file=log, flush=True)
            folder = workdir / name / target
            run: TargetRun
            if target == "phonemfa":
                run = await run_phonemfa(
                    scenario,
                    folder,
                    options.warmup,
                    options.profile,
                    options.phonemfa_src,
                    options.cprofile,
                    options.max_calls,
                    options.ask,
                )
            else:
                run = await run_baseline(
                    target,
                    scenario,
                    folder,
                    options.warmup,
                    options.profile,
                    options.cprofile,
                    options.max_calls,
                    options.baseline_loop,
                )
            by_target[target] = report.summarize(run)
            s = by_target[target]
            print(
                f"bench:   {target}: {s['correct']}/{s['calls']} right, "
                f"{s['cpu_ms_per_call']} ms CPU/call, Asterisk {s['asterisk_cpu_ms_per_call']}",
                file=log,
                flush=True,
            )
            await wait_no_channels()
            await asyncio.sleep(SETTLE)
        verdicts = report.verdicts(name, by_target)
        all_verdicts += verdicts
        out["scenarios"][name] = {
            "description": scenario.description,
            "calls": scenario.calls,
            "rate": scenario.rate,
            "mix": scenario.mix,
            "targets": by_target,
            "verdicts": [v.__dict__ for v in verdicts],
        }
    out["ok"] = all(v.ok for v in all_verdicts if v.hard)
    out["targets_met"] = all(v.ok for v in all_verdicts)
    out["finished_at"] = time.time()
    return out


def render(data: dict[str, Any]) -> str:
    parts = []
    for name, s in data["scenarios"].items():
        parts.append(report.table(name, s["description"], s["targets"]))
        parts.append(report.verdict_lines([report.Verdict(**v) for v in s["verdicts"]]))
        for target, t in s["targets"].items():
            by_thread = t.get("extra", {}).get("thread_cpu_s")
            if by_thread:
                busy = sorted(by_thread.items(), key=lambda kv: -kv[1])
                parts.append(
                    f"  {target} CPU by thread (s): "
                    + ", ".join(f"{name} {cpu:g}" for name, cpu in busy if cpu > 0)
                )
            for line in t["examples"] + t["problems"][:10]:
                parts.append(f"  {target}: {line}")
    return "\n".join(parts)


def machine() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except OSError:
            return ""

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asterisk": run(str(REPO / "asterisk/sandbox.sh"), "cli", "core show version"),
        "commit": run("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        "dirty": bool(run("git", "-C", str(REPO), "status", "--porcelain", "--", "src", "bench")),
    }
