"""`python -m bench` (`make bench`): phonemfa against the machine's limit and two baselines.

    python -m bench                          every scenario, every target (about 10 minutes)
    python -m bench --scenarios burst --targets phonemfa,floor
    python -m bench --json                   the JSON report on stdout instead of the table

The sandbox lock is held for the whole run (test sessions wait, and we wait for them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import report
from bench.plan import SCENARIOS
from bench.runner import PEER_PYTHON, TargetRun, run_baseline, run_phonemfa
from bench.sandbox import REPO, asterisk_ready, sandbox_lock, sandbox_up, wait_no_channels

TARGETS = ("phonemfa", "floor", "peer")
RESULTS = REPO / "bench" / "results"
# Between two targets: Asterisk finishes what the last one left in its queues.
SETTLE = 3.0


async def run_bench(
    scenarios: list[str],
    targets: list[str],
    *,
    calls: int | None = None,
    workdir: Path,
    profile: bool = False,
    log: Any = sys.stderr,
) -> dict[str, Any]:
    """Every scenario against every target; the report as a dict (`ok` says if it passed).
    The caller holds the sandbox lock and has Asterisk up."""
    out: dict[str, Any] = {"started_at": time.time(), "machine": machine(), "scenarios": {}}
    if "peer" in targets and not PEER_PYTHON.exists():
        raise SystemExit(f"bench: no {PEER_PYTHON} (make bench creates it)")
    all_verdicts: list[report.Verdict] = []
    for name in scenarios:
        scenario = SCENARIOS[name]
        if calls is not None:
            scenario = replace(scenario, calls=calls)
        print(f"bench: {name}: {scenario.description}", file=log, flush=True)
        by_target: dict[str, dict[str, Any]] = {}
        for target in targets:
            print(f"bench:   {target} ...", file=log, flush=True)
            folder = workdir / name / target
            run: TargetRun
            if target == "phonemfa":
                run = await run_phonemfa(scenario, folder, profile=profile)
            else:
                run = await run_baseline(target, scenario, folder, profile=profile)
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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenarios",
        default="burst,sustained,mix",
        help=f"comma-separated, of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--calls", type=int, help="override every scenario's number of calls")
    parser.add_argument("--json", action="store_true", help="the JSON report on stdout")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON report goes")
    parser.add_argument(
        "--lock-held",
        action="store_true",
        help="this process (or its parent) already holds the sandbox lock",
    )
    parser.add_argument(
        "--no-sandbox-up",
        action="store_true",
        help="do not run asterisk/sandbox.sh up (start or reload) first",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and databases")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (on PATH) samples each target while measured: py-spy.txt in its folder",
    )
    parser.add_argument("--strict", action="store_true", help="a missed target fails the run")
    args = parser.parse_args()  # fmt: skip
    scenarios = [s for s in args.scenarios.split(",") if s]
    targets = [t for t in args.targets.split(",") if t]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r}")

    workdir = Path(tempfile.mkdtemp(prefix="phonemfa-bench-"))
    with sandbox_lock(held=args.lock_held):
        if not args.no_sandbox_up or not asyncio.run(asterisk_ready()):
            sandbox_up()
        data = asyncio.run(
            run_bench(scenarios, targets, calls=args.calls, workdir=workdir, profile=args.profile)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / time.strftime("bench-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(data, indent=1))
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print(render(data))
        print(f"\nJSON report: {path}")
    failed = not data["ok"] or (args.strict and not data["targets_met"])
    if failed or args.keep:
        print(f"logs and databases: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
