"""How the store's writer batches queued writes (timeline rows, status changes): runs of them
share one executemany, savepoints only come out when a write failed, a batch of them alone
waits `linger` for company, and none of it may cost a write its order, its neighbours, or an
awaited write its promptness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from phonemfa.store import Store, TimelineEntry
from tests.unit.test_store import one_batch, record


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "phonemfa.db", linger=0.01)
    yield s
    await s.close()


async def test_a_run_of_queued_writes_keeps_its_order(store: Store) -> None:
    await store.create_call(record("a"))
    await store.create_call(record("b"))
    async with one_batch(store):
        for i in range(50):  # two calls' steps interleaved, with status changes among them
            call = "ab"[i % 2]
            store.append_event(call, TimelineEntry(float(i), f"step-{i}", {"i": i}))
            if i % 7 == 0:
                store.set_status(call, f"status-{i}", float(i))
    await store.flush()
    a, b = await store.get_call("a"), await store.get_call("b")
    assert a is not None and b is not None
    assert [e.event for e in a.timeline] == [f"step-{i}" for i in range(0, 50, 2)]
    assert [e.details["i"] for e in b.timeline] == list(range(1, 50, 2))
    assert (a.status, b.status) == ("status-42", "status-49")


async def test_one_bad_queued_write_spoils_none_of_its_run(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.create_call(record("call-1"))
    with caplog.at_level(logging.ERROR, logger="phonemfa.store"):
        async with one_batch(store):
            store.append_event("call-1", TimelineEntry(1.0, "before", {}))
            store.append_event("no-such-call", TimelineEntry(2.0, "orphan", {}))  # foreign key
            store.append_event("call-1", TimelineEntry(3.0, "after", {}))
            store.set_status("call-1", "answered", 3.0)
        await store.flush()
    assert caplog.text.count("append_event failed") == 1
    got = await store.get_call("call-1")
    assert got is not None
    assert [e.event for e in got.timeline] == ["before", "after"]
    assert got.status == "answered"
    assert store.healthy is True


async def test_savepoints_only_when_a_write_of_the_batch_failed(store: Store) -> None:
    statements: list[str] = []
    store._writer.conn.set_trace_callback(statements.append)  # the writer's own connection

    async def batch_with(call: str, bad: bool) -> bool:
        statements.clear()
        async with one_batch(store):
            store.append_event(call, TimelineEntry(1.0, "step", {}))
            store.set_status(call, "answered", 1.0)
            if bad:
                store.append_event("no-such-call", TimelineEntry(2.0, "orphan", {}))
            finished = asyncio.ensure_future(store.finish_call(call, "approved", None, 3.0))
        return await finished

    await store.create_call(record("call-1"))
    assert await batch_with("call-1", bad=False) is True
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert not [s for s in statements if "SAVEPOINT" in s]
    await store.create_call(record("call-2"))
    assert await batch_with("call-2", bad=True) is True  # the careful run's answer
    # one_batch's own transaction, the batch without savepoints, rolled back, then careful
    assert statements.count("BEGIN IMMEDIATE") == 3 and statements.count("ROLLBACK") == 1
    assert [s for s in statements if "SAVEPOINT" in s]
    for call in ("call-1", "call-2"):
        got = await store.get_call(call)
        assert got is not None and got.outcome == "approved"
        assert [e.event for e in got.timeline] == ["step"]  # once, though run twice


async def test_queued_writes_wait_for_company_but_not_for_ever(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db", linger=0.3)
    try:
        await store.create_call(record("call-1"))
        store.append_event("call-1", TimelineEntry(1.0, "alone", {}))
        got = await store.get_call("call-1")
        assert got is not None and got.timeline == []  # still waiting for company
        await asyncio.sleep(1.0)
        got = await store.get_call("call-1")
        assert got is not None and [e.event for e in got.timeline] == ["alone"]
    finally:
        await store.close()


async def test_an_awaited_write_does_not_wait_for_the_linger(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db", linger=30)
    try:
        await store.create_call(record("call-1"))
        store.append_event("call-1", TimelineEntry(1.0, "queued", {}))
        started = time.monotonic()
        # The outcome is awaited: it goes at once, and takes the queued step with it.
        assert await asyncio.wait_for(store.finish_call("call-1", "approved", None, 2.0), 5)
        assert time.monotonic() - started < 5
        got = await store.get_call("call-1")
        assert got is not None and [e.event for e in got.timeline] == ["queued"]
    finally:
        await store.close()  # does not wait for the linger either


async def test_settled_waits_for_the_commit_that_comes_anyway(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db", linger=0.3)
    try:
        await store.create_call(record("call-1"))
        store.append_event("call-1", TimelineEntry(1.0, "last", {}))
        settled = asyncio.ensure_future(store.settled())
        await asyncio.sleep(0.1)
        assert not settled.done()  # it does not cut the linger short...
        got = await store.get_call("call-1")
        assert got is not None and got.timeline == []
        await asyncio.wait_for(settled, 5)  # ...and returns once the step is committed
        got = await store.get_call("call-1")
        assert got is not None and [e.event for e in got.timeline] == ["last"]
    finally:
        await store.close()


async def test_settled_rides_along_with_an_urgent_write(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db", linger=30)
    try:
        await store.create_call(record("call-1"))
        store.append_event("call-1", TimelineEntry(1.0, "queued", {}))
        settled = asyncio.ensure_future(store.settled())
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(store.finish_call("call-1", "approved", None, 2.0), 5)
        await asyncio.wait_for(settled, 5)
        got = await store.get_call("call-1")
        assert got is not None and [e.event for e in got.timeline] == ["queued"]
    finally:
        await store.close()
