"""How long decided calls stay in the database (`storage.retention_days`).

A call's record holds the masked number, its keyed hash and the user's id: personal data
that should not outlive its use, and without an end the database grows with every call.
`phonemfa serve` deletes decided calls older than the retention once at start and then
every hour, a few hundred per transaction so that the calls' own writes are never held up
for long. The calls that the velocity limits still count (a tenant's longest window, a day
at least) stay whatever the setting says; blocks stay until they are lifted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from phonemfa.config import TenantSettings
from phonemfa.store import Store, StoreUnavailable
from phonemfa.tollfraud import seed_horizon

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0  # seconds between two purges
PURGE_BATCH = 200  # calls per transaction
PURGE_PAUSE = 0.1  # seconds between two transactions of one purge: other writes go between


def cutoff(now: float, retention_days: int, tenants: Iterable[TenantSettings]) -> float:
    """Calls created before this are past the retention and no limit counts them."""
    return now - max(retention_days * 86400.0, seed_horizon(tenants))


async def purge(store: Store, before: float, *, pause: float = PURGE_PAUSE) -> int:
    """Delete every decided call created before `before` (see Store.purge_calls), a batch at
    a time; the number deleted."""
    total = 0
    while True:
        n = await store.purge_calls(before, PURGE_BATCH)
        total += n
        if n < PURGE_BATCH:
            return total
        await asyncio.sleep(pause)


async def keep_for(
    store: Store,
    retention_days: int,
    tenants: Callable[[], Iterable[TenantSettings]],
    *,
    every: float = PURGE_EVERY,
) -> None:
    """Purge now, then every `every` seconds, until cancelled. `tenants` gives the tenants'
    settings of the moment (the settings API changes their limits)."""
    while True:
        before = cutoff(time.time(), retention_days, tenants())
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
