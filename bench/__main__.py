"""`python -m bench` (`make bench`): phonemfa against the machine's limit and two baselines.

    python -m bench                          every scenario, every target (about 16 minutes)
    python -m bench --scenarios burst --targets phonemfa,floor
    python -m bench --json                   the JSON report on stdout instead of the table
    python -m bench --baseline-loop uvloop   the baselines on phonemfa's event loop too

The sandbox lock is held for the whole run (test sessions wait, and we wait for them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.baseline_proto import DEFAULT_LOOP, LOOPS
from bench.phonemfa_target import ASKS, DEFAULT_ASK
from bench.plan import MAX_CALLS, SCENARIOS
from bench.sandbox import REPO, asterisk_ready, sandbox_lock, sandbox_up
from bench.suite import TARGETS, Options, render, run_bench

RESULTS = REPO / "bench" / "results"


# Each call in flight holds a socket in the client and one in phonemfa (about 2000 of each at
# 50 calls/s): more than a 1024 default allows. phonemfa serve raises its own limit; the
# baselines inherit this one.
OPEN_FILES = 16384


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < OPEN_FILES:
        print(f"bench: open files limited to {wanted}: the 50 calls/s run may fail", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenarios",
        default="burst,sustained,mix",
        help=f"comma-separated, of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--calls", type=int, help="override every scenario's number of calls")
    parser.add_argument("--rate", type=float, help="override the paced scenarios' calls/s")
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
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="cProfile (CPU time) each target's main thread while measured: cprofile.pstats",
    )
    parser.add_argument(
        "--phonemfa-src",
        type=Path,
        help="run phonemfa from this source folder (e.g. an older commit's src/, unpacked "
        "with git archive) to compare before and after",
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=MAX_CALLS,
        help=f"calls on the line at once, for every target: phonemfa's trunk.max_calls, the "
        f"baselines' own limit (default {MAX_CALLS})",
    )
    parser.add_argument(
        "--baseline-loop",
        choices=LOOPS,
        default=DEFAULT_LOOP,
        help="the baselines' event loop: asyncio's own (default, as a minimal script and "
        "aioari's examples run) or uvloop (phonemfa's), to compare code on the same loop",
    )
    parser.add_argument(
        "--ask",
        choices=ASKS,
        default=DEFAULT_ASK,
        help="how the client asks phonemfa for the outcome: POST /v1/calls?wait= (default, "
        "one request per call) or the POST and then GET /v1/calls/{id}?wait=",
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
    _raise_open_file_limit()

    workdir = Path(tempfile.mkdtemp(prefix="phonemfa-bench-"))
    with sandbox_lock(held=args.lock_held):
        if not args.no_sandbox_up or not asyncio.run(asterisk_ready()):
            sandbox_up()
        options = Options(
            calls=args.calls,
            rate=args.rate,
            profile=args.profile,
            cprofile=args.cprofile,
            phonemfa_src=args.phonemfa_src,
            max_calls=args.max_calls,
            baseline_loop=args.baseline_loop,
            ask=args.ask,
        )
        data = asyncio.run(run_bench(scenarios, targets, workdir, options))
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
