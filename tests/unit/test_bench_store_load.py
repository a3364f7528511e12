"""`python -m bench.store_load` in miniature, so that it cannot rot (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.store_load import measure
from phonemfa.store import Store


async def test_store_load_writes_every_call_and_reports(tmp_path: Path) -> None:
    result = await measure(calls=20, rate=200, busy=0.2, call_seconds=0.2, folder=tmp_path)
    assert result["calls"] == 20
    assert result["writer_ms_per_call"] > 0
    commit = result["outcome_commit_ms"]
    assert 0 < commit["p50"] <= commit["p95"] <= commit["p99"] <= commit["max"]
    # Every call's record, timeline and outcome reached the database.
    store = await Store.open(tmp_path / "store-load.db")
    try:
        assert await store.count_calls() == {"approved": 20}
        calls, _ = await store.list_calls(limit=100)
        assert len(calls) == 20
        for call in calls:
            full = await store.get_call(call.id)
            assert full is not None and len(full.timeline) == 14
    finally:
        await store.close()
