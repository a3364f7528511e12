"""Starting the calls of a plan on time, bounded in count and in time.

Standard library only (the baselines use it too, in their own processes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.plan import KINDS, CallResult, PlannedCall

Place = Callable[[PlannedCall, CallResult], Awaitable[None]]


class InFlight:
    """How many calls are in progress now, and the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def run_plan(
    plan: list[PlannedCall], place: Place, *, call_timeout: float, in_flight: InFlight | None = None
) -> list[CallResult]:
    """Start each call at its offset (a burst shares offset 0: all are started in one go) and
    return one result per planned call. `place` fills in its result; a call that has not ended
    `call_timeout` seconds after its start is cancelled and reported lost, so the whole run
    ends by the last offset plus `call_timeout`."""
    results = [CallResult(p.index, p.kind, KINDS[p.kind].expected) for p in plan]
    counter = in_flight or InFlight()
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for call in plan:
        delay = start + call.offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(_one(call, results[call.index], place, call_timeout, counter))
        )
    await asyncio.gather(*tasks)
    return results


async def _one(
    call: PlannedCall, result: CallResult, place: Place, timeout: float, counter: InFlight
) -> None:
    counter.enter()
    try:
        async with asyncio.timeout(timeout):
            await place(call, result)
    except TimeoutError:
        result.error = result.error or f"lost: no end within {timeout:g} s"
    except Exception as exc:  # one broken call is a wrong result, not a broken run
        result.error = result.error or f"{type(exc).__name__}: {exc}"[:300]
    finally:
        counter.leave()
        if result.t_end is None:
            result.t_end = time.time()
