"""How long decided calls stay in the database (`storage.retention_days`).

A call's record holds the masked number, its keyed hash and the user's id: personal data
that should not outlive its use, and without an end the database grows with every call.
`phonemfa serve` deletes decided calls older than the retention once at start and then
every hour, a few hundred per transaction so that the calls' own writes are never held up
for long. The retention is at least the longest window a rate limit may have (config), so
no limit loses a call it counts; blocks stay until they are lifted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from phonemfa.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0  # seconds between two purges
PURGE_BATCH = 200  # calls per transaction
PURGE_PAUSE = 0.1  # seconds between two transactions of one purge: other writes go between
PROGRESS_EVERY = 60.0  # a long purge (a first start on years of calls) says how far it is


async def purge(store: Store, before: float, *, pause: float = PURGE_PAUSE) -> int:
    """Delete every decided call created before `before` (see Store.purge_calls), a batch at
    a time; the number deleted."""
    total, after = 0, None
    said = time.monotonic()
    while True:
        n, after = await store.purge_calls(before, PURGE_BATCH, after)
        total += n
        if after is None:
            return total
        if time.monotonic() - said >= PROGRESS_EVERY:
            log.info("deleting the calls past their retention: %d so far", total)
            said = time.monotonic()
        await asyncio.sleep(pause)


async def keep_for(
    store: Store,
    retention_days: int,
    *,
    every: float = PURGE_EVERY,
    clock: Callable[[], float] = time.time,
) -> None:
    """Purge now, then every `every` seconds, until cancelled."""
    while True:
        before = clock() - retention_days * 86400.0
        try:
            n = await purge(store, before)
        except StoreUnavailable as exc:  # next time
            log.warning("cannot delete the calls past their retention: %s", exc)
        except Exception:  # a bug: said, and the purges go on
            log.exception("deleting the calls past their retention failed")
        else:
            if n:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(before))
                log.info("deleted %d decided calls created before %s (retention)", n, when)
        await asyncio.sleep(every)
