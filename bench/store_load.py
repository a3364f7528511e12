"""The store alone under a call load: what its writer costs per call, and how long the commit
of an outcome takes while the event loop is busy. No Asterisk, no API: half a minute per run,
for trying a change to the store before `make bench` (minutes) says what it does in the whole.

    python -m bench.store_load [--rate 50] [--calls 1000] [--busy 0.4] [--rounds 1]
    PYTHONPATH=/tmp/old/src python -m bench.store_load     # an older store, to compare

Each call writes what one of phonemfa's writes (`CallService` and its flow observer): its
record (awaited, as before a dial), thirteen timeline steps of which four change the status
(queued; `phonemfa.service.STATUS_STEPS`), its outcome (awaited, as before it is shown),
spread over `--call-seconds`. On the same uvloop a load task keeps the event loop's thread
busy `--busy` of the time in bursts of 0.2-3 ms, as phonemfa's flows and API do at 50
calls/s (about 40 %), so that the writer waits for the GIL as it does in the service.

Printed per round: the writer thread's CPU per call, the whole process's (the load task's
bursts included, so compare it only between runs of the same options), and the outcome
commit's latency (`finish_call`, from the call to its return) p50/p95/p99/max.

Measured 2026-11-26 with the defaults (1000 calls at 50/s, 40 % busy), two alternated pairs:
the WAL checkpointed inside commits (SQLite's default, the store before f98194e) gave an
outcome commit p99 of 9.5 and 10.9 ms; a checkpointer thread of its own, 4.7 and 5.0 ms. The
writer's CPU stayed at 0.97-1.08 ms per call either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop

from bench.plan import percentile
from phonemfa.service import STATUS_STEPS
from phonemfa.store import CallRecord, Store, TimelineEntry

# A direct call's steps as its flow records them; those in the service's STATUS_STEPS also
# change the call's status, as `CallService` does. The outcome is decided at the entry.
STEPS = (
    "dialing", "ringing", "answered", "prompting", "talking_started", "talking_finished",
    "key", "key", "key", "key", "entry", "key_ignored", "hung_up",
)  # fmt: skip
OUTCOME_STEP = "entry"


def _record(i: int) -> CallRecord:
    now = time.time()
    return CallRecord(
        id=str(uuid.uuid4()), tenant="default", user=f"user{i}", phone_masked="+336******12",
        phone_hash=os.urandom(32).hex(), mode="direct", language="en", status="queued",
        outcome=None, reason=None, origin="api", created_at=now, updated_at=now, ended_at=None,
        channel_id=None, origin_channel=None, callback_url=None,
        timeline=[TimelineEntry(now, "queued", {"number": "+336******12", "mode": "direct"})],
    )  # fmt: skip


async def _call(store: Store, i: int, seconds: float, latencies: list[float]) -> None:
    record = _record(i)
    await store.create_call(record)
    for step in STEPS:
        await asyncio.sleep(seconds / len(STEPS) * random.uniform(0.5, 1.5))
        now = time.time()
        details: dict[str, Any] = {"channel": "1764000000.123", "asterisk_at": "2026-11-26"}
        store.append_event(record.id, TimelineEntry(now, step, details))
        if step in STATUS_STEPS:
            store.set_status(record.id, step, now, "1764000000.123" if step == "dialing" else None)
        elif step == OUTCOME_STEP:
            start = time.perf_counter()
            await store.finish_call(record.id, "approved", None, now)
            latencies.append((time.perf_counter() - start) * 1000)


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        sum(range(50))


async def _keep_busy(share: float, stop: asyncio.Event) -> None:
    while share > 0 and not stop.is_set():
        burst = random.uniform(0.2, 3.0)
        _spin(burst)
        await asyncio.sleep(burst * (1 - share) / share / 1000)


async def _writer_cpu(store: Store) -> float:
    """The writer thread's CPU seconds, read in that thread (its own clock, to the
    nanosecond: /proc counts in 10 ms ticks, more than a small run's whole writer)."""
    return await store._write("cpu time", lambda _conn: time.thread_time())


async def measure(
    calls: int, rate: float, busy: float, call_seconds: float, folder: Path
) -> dict[str, Any]:
    """One run on a new database in `folder`."""
    store = await Store.open(folder / "store-load.db")
    latencies: list[float] = []
    stop = asyncio.Event()
    load = asyncio.create_task(_keep_busy(busy, stop))
    before_writer, before_process = await _writer_cpu(store), time.process_time()
    try:
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.create_task(_call(store, i, call_seconds, latencies)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
        await store.flush()
    finally:
        stop.set()
        await load
        after_writer, after_process = await _writer_cpu(store), time.process_time()
        await store.close()
    writer_s = after_writer - before_writer
    return {
        "calls": calls,
        "writer_ms_per_call": writer_s * 1000 / calls,
        "process_ms_per_call": (after_process - before_process) * 1000 / calls,
        "outcome_commit_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="calls started per second")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--busy", type=float, default=0.4, help="event loop busy share, 0-0.9")
    parser.add_argument("--call-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not (0 <= args.busy <= 0.9 and args.rate > 0 and args.calls > 0):
        parser.error("--busy is 0-0.9; --rate and --calls are positive")
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="phonemfa-store-load-") as folder:
            r = uvloop.run(
                measure(args.calls, args.rate, args.busy, args.call_seconds, Path(folder))
            )
        c = r["outcome_commit_ms"]
        print(
            f"{r['calls']} calls: writer {r['writer_ms_per_call']:.3f} ms/call, process "
            f"{r['process_ms_per_call']:.3f} ms/call; outcome commit p50 {c['p50']:.2f} "
            f"p95 {c['p95']:.2f} p99 {c['p99']:.2f} max {c['max']:.2f} ms"
        )


if __name__ == "__main__":
    main()
