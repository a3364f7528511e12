"""How the orchestrator drives a baseline process (bench/floor.py, bench/peer.py).

A baseline runs in a process of its own so that /proc charges it alone: the orchestrator
samples its CPU and memory around the measured part, exactly as it does for `phonemfa serve`.
The conversation, one JSON line each way on stdin/stdout:

    baseline: {"ready": ...}          connected, warm-up calls done
    bench:    go                      (CPU sampled just before)
    baseline: {"done": ..., "peak_in_flight": N}
    bench:    results                 (CPU sampled just before)
    baseline: {"results": [...]}      then exits

Standard library only, like everything the peer's venv imports from bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Protocol

from bench.pacing import InFlight, run_plan
from bench.plan import KINDS, MAX_CALLS, CallResult, PlannedCall, Scenario

# A baseline runs on asyncio's own loop, as a minimal script and aioari's examples do, or on
# uvloop, phonemfa's, to compare code with code on the same loop.
LOOPS = ("asyncio", "uvloop")
DEFAULT_LOOP = "asyncio"


class Baseline(Protocol):
    async def start(self) -> None: ...

    async def place(self, call: PlannedCall, result: CallResult) -> None: ...

    async def close(self) -> None: ...


def warmup_plan(calls: int) -> list[PlannedCall]:
    """A few calls of every kind before measuring: imports, connection pools and caches are
    warm, as they are in a service that has been up for a while."""
    names = list(KINDS)
    return [PlannedCall(i, names[i % len(names)], i * 0.05) for i in range(calls)]


def _say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _hear(expected: str) -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != expected:
        raise SystemExit(f"baseline: expected {expected!r} from the bench, got {line!r}")


async def _serve(
    app: Baseline, scenario: Scenario, warmup: int, call_timeout: float, max_calls: int
) -> None:
    # As many calls on the line at once as phonemfa's trunk.max_calls lets it have: the rest
    # wait their turn, so both load Asterisk alike.
    lines = asyncio.Semaphore(max_calls)

    async def place(call: PlannedCall, result: CallResult) -> None:
        async with lines:
            await app.place(call, result)

    await app.start()
    try:
        warm = await run_plan(warmup_plan(warmup), place, call_timeout=call_timeout)
        failed = [r for r in warm if not r.correct]
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # "uvloop", "asyncio"
        _say({"ready": True, "warmup_failed": len(failed), "loop": loop})
        await _hear("go")
        counter = InFlight()
        results = await run_plan(
            scenario.plan(), place, call_timeout=call_timeout, in_flight=counter
        )
        _say({"done": True, "peak_in_flight": counter.peak})
        await _hear("results")
        _say({"results": [r.to_json() for r in results]})
    finally:
        await app.close()


def main(make: Callable[[argparse.Namespace], Baseline]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True, help="the Scenario as JSON")
    parser.add_argument("--app", required=True, help="Stasis application name")
    parser.add_argument("--ari-url", required=True)
    parser.add_argument("--ari-user", required=True)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--call-timeout", type=float, default=60)
    parser.add_argument(
        "--max-calls", type=int, default=MAX_CALLS, help="calls on the line at once"
    )
    parser.add_argument("--loop", choices=LOOPS, default=DEFAULT_LOOP, help="the event loop")
    args = parser.parse_args()
    # The password comes from the environment (BENCH_ARI_PASSWORD), not the command line.
    scenario = Scenario(**json.loads(args.scenario))

    async def run() -> None:
        await _serve(make(args), scenario, args.warmup, args.call_timeout, args.max_calls)

    if args.loop == "uvloop":  # phonemfa's own loop (`python -m bench --baseline-loop`)
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())
