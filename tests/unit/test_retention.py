"""Retention (`storage.retention_days`): which calls go, on a real database in tmp_path."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from phonemfa import retention
from phonemfa.config import TenantSettings
from phonemfa.store import Store
from tests.unit.test_store import kept_ids, record

DAY = 86400.0
NOW = 1_800_000_000.0


def tenant(*windows: int) -> TenantSettings:
    rules = [{"count": 5, "window": w} for w in windows]
    return TenantSettings.model_validate({"limits": {"per_user": rules}})


def test_the_cutoff_is_the_retention_unless_a_limit_counts_calls_further_back() -> None:
    assert retention.cutoff(NOW, 90, [tenant(300, 86400)]) == NOW - 90 * DAY
    # A week's limit still counts the calls of six days ago: a purge must not reset it.
    assert retention.cutoff(NOW, 2, [tenant(300), tenant(7 * 86400)]) == NOW - 7 * DAY
    assert retention.cutoff(NOW, 1, []) == NOW - DAY  # the limits' day at least


async def decided_calls(store: Store, n: int, created_at: float) -> None:
    for i in range(n):
        call_id = f"c{created_at:.0f}-{i}"
        await store.create_call(record(call_id, created_at=created_at))
        await store.finish_call(call_id, "approved", None, created_at + 30)


async def test_a_purge_goes_on_batch_after_batch_until_nothing_is_left(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db")
    try:
        await decided_calls(store, retention.PURGE_BATCH * 2 + 5, created_at=100.0)
        await decided_calls(store, 3, created_at=900.0)
        assert await retention.purge(store, before=500.0, pause=0) == retention.PURGE_BATCH * 2 + 5
        assert len(await kept_ids(store)) == 3
        assert await retention.purge(store, before=500.0, pause=0) == 0
    finally:
        await store.close()


async def test_keep_for_purges_at_once_then_again_and_survives_a_store_that_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "phonemfa.retention")
    store = await Store.open(tmp_path / "phonemfa.db")
    old = 1000.0  # 1970: far past any retention
    await decided_calls(store, 2, created_at=old)
    keeper = asyncio.create_task(retention.keep_for(store, 1, lambda: [tenant(300)], every=0.05))
    try:
        async with asyncio.timeout(10):
            while await kept_ids(store):
                await asyncio.sleep(0.01)
            assert "deleted 2 decided calls created before " in caplog.text
            await decided_calls(store, 1, created_at=old)  # the next purge takes it
            while await kept_ids(store):
                await asyncio.sleep(0.01)
            await store.close()  # every write refused from now on
            while "cannot delete the calls past their retention" not in caplog.text:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.12)
        assert not keeper.done()  # tries again next time
    finally:
        keeper.cancel()
        await store.close()
