"""Retention (`storage.retention_days`): which calls go, and when, on a real database."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from phonemfa import retention
from phonemfa.store import Store
from tests.unit.test_store import kept_ids, record

DAY = 86400.0
NOW = 1_800_000_000.0


async def decided_calls(store: Store, n: int, created_at: float, name: str = "c") -> None:
    for i in range(n):
        call_id = f"{name}-{i}"
        await store.create_call(record(call_id, created_at=created_at))
        await store.finish_call(call_id, "approved", None, created_at + 30)


async def test_a_purge_goes_on_batch_after_batch_until_nothing_is_left(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db")
    try:
        await decided_calls(store, retention.PURGE_BATCH * 2 + 5, created_at=100.0, name="old")
        await decided_calls(store, 3, created_at=900.0, name="new")
        assert await retention.purge(store, before=500.0, pause=0) == retention.PURGE_BATCH * 2 + 5
        assert len(await kept_ids(store)) == 3
        assert await retention.purge(store, before=500.0, pause=0) == 0
    finally:
        await store.close()


async def until_kept(store: Store, ids: set[str]) -> None:
    async with asyncio.timeout(10):
        while await kept_ids(store) != ids:
            await asyncio.sleep(0.01)


async def test_keep_for_purges_at_once_then_by_the_clock_of_each_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "phonemfa.retention")
    store = await Store.open(tmp_path / "phonemfa.db")
    await decided_calls(store, 2, created_at=NOW - 31 * DAY, name="month-old")
    await decided_calls(store, 1, created_at=NOW - 29 * DAY, name="younger")
    now = [NOW]
    keeper = asyncio.create_task(retention.keep_for(store, 30, every=0.05, clock=lambda: now[0]))
    try:
        await until_kept(store, {"younger-0"})
        assert "deleted 2 decided calls created before 2026-12-16 " in caplog.text
        await asyncio.sleep(0.15)  # later purges, same day: it stays
        assert await kept_ids(store) == {"younger-0"}
        now[0] += 2 * DAY  # the cutoff moves with the clock
        await until_kept(store, set())
        await store.close()  # every write refused from now on
        async with asyncio.timeout(10):
            while "cannot delete the calls past their retention" not in caplog.text:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.12)
        assert not keeper.done()  # tries again next time
    finally:
        keeper.cancel()
        await store.close()
