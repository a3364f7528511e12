"""The SQLite store, on real database files in tmp_path.

A few tests reach into the writer (`store._writer`, `store._queue`, `store._write`) to hold it
still, so that writes land in one known batch, or to make its connection fail the way a full
disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phonemfa.store import (
    SCHEMA_VERSION,
    CallRecord,
    Store,
    StoreUnavailable,
    TimelineEntry,
    WebhookDelivery,
    migrate,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "phonemfa.db", retry_delay=0.2)
    yield s
    await s.close()


def record(call_id: str = "call-1", **changes: Any) -> CallRecord:
    base = CallRecord(
        id=call_id,
        tenant="default",
        user="alice",
        phone_masked="+1*******34",
        phone_hash="h-" + call_id,
        mode="direct",
        language="en",
        status="queued",
        outcome=None,
        reason=None,
        origin="api",
        created_at=1000.0,
        updated_at=1000.0,
        ended_at=None,
        channel_id=None,
        origin_channel=None,
        callback_url=None,
    )
    return replace(base, **changes)


def hook(call_id: str = "call-1", **changes: Any) -> WebhookDelivery:
    base = WebhookDelivery(
        call_id=call_id,
        tenant="default",
        url="https://idp.example/hook",
        body=b'{"id":"%s"}' % call_id.encode(),
        attempts=0,
        next_attempt_at=1010.0,
        delivered_at=None,
        last_error=None,
    )
    return replace(base, **changes)


def event(at: float, name: str, **details: Any) -> TimelineEntry:
    return TimelineEntry(at, name, details)


@contextlib.asynccontextmanager
async def one_batch(store: Store) -> AsyncIterator[None]:
    """Hold the writer busy; everything written inside reaches it as one batch (writes in
    tasks too: their first step runs before the writer is let go)."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(5)

    store._queue("hold", hold)
    assert await asyncio.to_thread(entered.wait, 5)
    try:
        yield
        await asyncio.sleep(0)  # let tasks started inside queue their writes
    finally:
        release.set()


class FaultyConnection:
    """The writer's connection, whose COMMIT fails like a full disk `times` times, in
    transactions that ran a statement containing `trigger`."""

    def __init__(self, conn: sqlite3.Connection, trigger: str, times: int = 1) -> None:
        self.conn = conn
        self.trigger = trigger
        self.times = times
        self.armed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            self.armed = False
        if self.trigger in sql:
            self.armed = True
        if sql == "COMMIT" and self.armed and self.times > 0:
            self.times -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def make_faulty(store: Store, trigger: str, times: int = 1) -> FaultyConnection:
    faulty = FaultyConnection(store._writer.conn, trigger, times)
    store._writer.conn = faulty  # type: ignore[assignment]
    return faulty


# --- calls ---------------------------------------------------------------------------------


async def test_create_and_get_round_trip(store: Store) -> None:
    rec = record(
        user=None,
        mode="operator",
        language="fr",
        origin="dialplan",
        origin_channel="PJSIP/desk-0001",
        callback_url="https://idp.example/hook",
        code_used=True,
        token_name="idp",
        timeline=[event(1000.0, "queued", phone="+1*******34")],
    )
    await store.create_call(rec)
    assert await store.get_call("call-1") == rec
    assert await store.get_call("nope") is None


async def test_a_call_id_is_created_once(store: Store) -> None:
    await store.create_call(record())
    with pytest.raises(ValueError, match="exists"):
        await store.create_call(record(tenant="other"))
    got = await store.get_call("call-1")
    assert got is not None and got.tenant == "default"


async def test_timeline_keeps_the_order_of_appends(store: Store) -> None:
    await store.create_call(record("a"))
    await store.create_call(record("b"))
    # Same and decreasing timestamps: the order they were appended in is the order.
    store.append_event("a", event(5.0, "dialing"))
    store.append_event("b", event(1.0, "dialing"))
    store.append_event("a", event(5.0, "ringing", n=1))
    store.append_event("a", event(4.0, "answered", nested={"digits": ["1", "#"]}))
    await store.flush()
    a = await store.get_call("a")
    b = await store.get_call("b")
    assert a is not None and b is not None
    assert [(e.event, e.at) for e in a.timeline] == [
        ("dialing", 5.0),
        ("ringing", 5.0),
        ("answered", 4.0),
    ]
    assert a.timeline[2].details == {"nested": {"digits": ["1", "#"]}}
    assert [e.event for e in b.timeline] == ["dialing"]


async def test_timeline_details_that_json_cannot_encode_are_kept_as_text(store: Store) -> None:
    await store.create_call(record())
    store.append_event("call-1", event(1.0, "odd", path=Path("/x")))
    await store.flush()
    got = await store.get_call("call-1")
    assert got is not None and got.timeline[0].details == {"path": "/x"}


async def test_set_status_and_channel(store: Store) -> None:
    await store.create_call(record())
    store.set_status("call-1", "dialing", 1001.0, channel_id="phonemfa-abc")
    store.set_status("call-1", "ringing", 1002.0)  # no channel: keeps the one we have
    await store.flush()
    got = await store.get_call("call-1")
    assert got is not None
    assert (got.status, got.updated_at, got.channel_id) == ("ringing", 1002.0, "phonemfa-abc")


async def test_finish_call_records_outcome_and_webhook_together(store: Store) -> None:
    await store.create_call(record())
    store.append_event("call-1", event(1001.0, "answered"))
    # Not flushed: the event was issued first, so it is committed no later than the outcome.
    assert await store.finish_call("call-1", "approved", None, 1005.0, hook()) is True
    got = await store.get_call("call-1")
    assert got is not None
    assert (got.status, got.outcome, got.reason, got.ended_at, got.updated_at) == (
        "approved",
        "approved",
        None,
        1005.0,
        1005.0,
    )
    assert [e.event for e in got.timeline] == ["answered"]
    assert await store.get_webhook("call-1") == hook()


async def test_a_call_never_gets_two_outcomes(store: Store) -> None:
    await store.create_call(record())
    assert await store.finish_call("call-1", "no_answer", "cause_19", 1005.0, hook())
    second = hook(url="https://elsewhere.example/", body=b"{}")
    assert await store.finish_call("call-1", "approved", None, 1006.0, second) is False
    got = await store.get_call("call-1")
    assert got is not None
    assert (got.outcome, got.reason, got.ended_at) == ("no_answer", "cause_19", 1005.0)
    assert await store.get_webhook("call-1") == hook()
    # Late status changes do not hide the outcome either.
    store.set_status("call-1", "ringing", 1007.0)
    await store.flush()
    got = await store.get_call("call-1")
    assert got is not None and got.status == "no_answer"


async def test_a_fraud_reports_block_is_written_with_its_outcome_or_not_at_all(
    store: Store,
) -> None:
    """One transaction: a crash between two commits kept the report and lost the block."""
    await store.create_call(record())
    block = ("default", "alice", "fraud_reported")
    assert await store.finish_call("call-1", "fraud_reported", None, 1005.0, hook(), block)
    got = await store.get_block("default", "alice")
    assert got is not None and (got["reason"], got["call_id"]) == ("fraud_reported", "call-1")
    # A call that already has an outcome writes nothing, the block included.
    assert (
        await store.finish_call(
            "call-1", "fraud_reported", None, 1006.0, None, ("default", "bob", "fraud_reported")
        )
        is False
    )
    assert await store.get_block("default", "bob") is None


async def test_finish_call_of_an_unknown_call(store: Store) -> None:
    assert await store.finish_call("ghost", "failed", "x", 1.0) is False
    with pytest.raises(ValueError):
        await store.finish_call("call-1", "approved", None, 1.0, hook("call-2"))


async def test_in_flight_and_recent_calls(store: Store) -> None:
    await store.create_call(record("old", created_at=100.0))
    await store.create_call(record("mid", created_at=200.0, user=None, tenant="acme"))
    backups = {"backup_phones": ("+1*******00", "+33********12"), "backup_hashes": ("b1", "b2")}
    await store.create_call(record("new", created_at=300.0, **backups))
    await store.finish_call("mid", "busy", "cause_17", 210.0)
    assert [r.id for r in await store.in_flight()] == ["old", "new"]
    # A call the policy refused (nothing dialled: no number key) is no call placed.
    await store.create_call(record("refused", created_at=250.0, phone_hash="", outcome="blocked"))
    assert await store.recent_calls(150.0) == [
        ("acme", None, "h-mid", 200.0, ()),
        ("default", "alice", "h-new", 300.0, ("b1", "b2")),
    ]
    # A record keeps its backup numbers, masked and hashed, in order.
    new = await store.get_call("new")
    assert new is not None
    assert new.backup_phones == backups["backup_phones"]
    assert new.backup_hashes == ("b1", "b2")


async def test_count_calls_by_status(store: Store) -> None:
    assert await store.count_calls() == {}
    for i in range(4):
        await store.create_call(record(f"c{i}"))
    store.set_status("c0", "ringing", 1.0)
    store.set_status("c1", "ringing", 1.0)
    store.set_status("c1", "answered", 2.0)
    await store.finish_call("c2", "approved", None, 3.0)
    await store.finish_call("c3", "approved", None, 3.0)
    assert await store.count_calls() == {"ringing": 1, "answered": 1, "approved": 2}


# --- listing -------------------------------------------------------------------------------


async def test_list_calls_filters(store: Store) -> None:
    await store.create_call(record("a1", tenant="a", user="u1", created_at=1.0))
    await store.create_call(record("a2", tenant="a", user="u2", created_at=2.0))
    await store.create_call(record("b1", tenant="b", user="u1", created_at=3.0))
    await store.create_call(record("c1", tenant="c", user="u1", created_at=4.0))
    await store.finish_call("a2", "denied", None, 5.0)
    store.append_event("a1", event(1.0, "dialing"))
    await store.flush()

    async def ids(**filters: Any) -> list[str]:
        page, cursor = await store.list_calls(**filters)
        assert cursor is None
        return [r.id for r in page]

    assert await ids() == ["c1", "b1", "a2", "a1"]
    assert await ids(tenants=["a", "b"]) == ["b1", "a2", "a1"]
    assert await ids(tenants=set()) == []
    assert await ids(user="u1") == ["c1", "b1", "a1"]
    assert await ids(status="denied") == ["a2"]
    assert await ids(status="queued", tenants={"a"}) == ["a1"]
    assert await ids(since=2.0) == ["c1", "b1", "a2"]
    page, _ = await store.list_calls(tenants=["a"])
    assert all(r.timeline == [] for r in page)


async def test_list_calls_pages_with_a_cursor(store: Store) -> None:
    # Ties on created_at must neither repeat nor skip a call across pages.
    times = [10.0, 20.0, 20.0, 20.0, 30.0, 30.0, 40.0]
    for i, t in enumerate(times):
        await store.create_call(record(f"c{i}", created_at=t))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await store.list_calls(limit=2, cursor=cursor)
        pages += 1
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert pages == 4
    expected = sorted(range(len(times)), key=lambda i: (times[i], f"c{i}"), reverse=True)
    assert seen == [f"c{i}" for i in expected]
    # Exactly a full last page: no cursor for an empty page after it.
    page, cursor = await store.list_calls(limit=7)
    assert len(page) == 7 and cursor is None


async def test_list_calls_refuses_bad_cursor_and_limit(store: Store) -> None:
    for bad in ("garbage!", "bm90IGpzb24=", "WzFd"):  # not base64, not JSON, wrong shape
        with pytest.raises(ValueError, match="cursor"):
            await store.list_calls(cursor=bad)
    with pytest.raises(ValueError):
        await store.list_calls(limit=0)


# --- numbers -------------------------------------------------------------------------------


async def test_number_key_is_keyed_and_stable_across_reopen(tmp_path: Path) -> None:
    one = await Store.open(tmp_path / "one.db")
    key = one.number_key("+14255550100")
    assert key == one.number_key("+14255550100")
    assert key != one.number_key("+14255550101")
    assert key != hashlib.sha256(b"+14255550100").hexdigest()
    await one.close()
    again = await Store.open(tmp_path / "one.db")
    other = await Store.open(tmp_path / "other.db")
    try:
        assert again.number_key("+14255550100") == key
        assert other.number_key("+14255550100") != key
    finally:
        await again.close()
        await other.close()


# --- settings and blocks -------------------------------------------------------------------


async def test_tenant_settings_round_trip(store: Store) -> None:
    assert await store.get_tenant_settings("acme") is None
    assert await store.all_tenant_settings() == {}
    await store.put_tenant_settings("acme", {"region": "FR", "fraud": {"block": True}})
    await store.put_tenant_settings("acme", {"region": "BE"})
    await store.put_tenant_settings("default", {})
    assert await store.get_tenant_settings("acme") == {"region": "BE"}
    assert await store.all_tenant_settings() == {"acme": {"region": "BE"}, "default": {}}
    with pytest.raises(TypeError):
        await store.put_tenant_settings("bad", {"x": object()})


async def test_blocks_round_trip(store: Store) -> None:
    assert await store.get_block("acme", "bob") is None
    await store.block_user("acme", "bob", "fraud_reported", "call-9", 50.0)
    await store.block_user("acme", "eve", "fraud_reported", None, 40.0)
    await store.block_user("acme", "bob", "manual", None, 60.0)  # replaces the first
    assert await store.get_block("acme", "bob") == {
        "tenant": "acme",
        "user": "bob",
        "reason": "manual",
        "call_id": None,
        "created_at": 60.0,
    }
    assert [b["user"] for b in await store.all_blocks()] == ["eve", "bob"]
    assert await store.unblock_user("acme", "bob") is True
    assert await store.unblock_user("acme", "bob") is False
    assert await store.get_block("acme", "bob") is None


# --- webhook outbox ------------------------------------------------------------------------


async def test_the_blocks_stamp_changes_with_every_block_for_every_process(
    store: Store, tmp_path: Path
) -> None:
    other = await Store.open(tmp_path / "phonemfa.db")  # another process on the same file
    try:
        assert store.blocks_stamp() is None and other.blocks_stamp() is None
        seen = set()
        for user in ("alice", "bob", "alice"):
            await other.block_user("t1", user, "fraud_reported", None, 1.0)
            stamp = store.blocks_stamp()
            assert stamp is not None and stamp not in seen and stamp == other.blocks_stamp()
            seen.add(stamp)
        await store.unblock_user("t1", "bob")  # lifting one needs no telling
        assert store.blocks_stamp() in seen
        left = [n for n in os.listdir(tmp_path) if n.startswith("phonemfa.db.blocks.")]
        assert left == []  # no temporary file left behind
    finally:
        await other.close()


async def test_webhook_outbox(store: Store) -> None:
    for i, due in enumerate([30.0, 10.0, 20.0]):
        await store.create_call(record(f"c{i}"))
        await store.finish_call(f"c{i}", "approved", None, 5.0, hook(f"c{i}", next_attempt_at=due))
    assert [w.call_id for w in await store.due_webhooks(25.0)] == ["c1", "c2"]
    assert [w.call_id for w in await store.due_webhooks(100.0, limit=1)] == ["c1"]
    assert await store.next_webhook_at(after=25.0) == 30.0

    await store.webhook_delivered("c1", 26.0)
    await store.webhook_failed("c2", "HTTP 503", 90.0)
    await store.webhook_failed("c0", "HTTP 400", None, at=27.0)
    assert await store.due_webhooks(50.0) == []
    assert await store.next_webhook_at(after=50.0) == 90.0
    assert await store.get_webhook("c1") == hook("c1", next_attempt_at=10.0, attempts=1,
                                                  delivered_at=26.0)  # fmt: skip
    assert await store.get_webhook("c2") == hook(
        "c2", attempts=1, next_attempt_at=90.0, last_error="HTTP 503"
    )
    gave_up = await store.get_webhook("c0")
    assert gave_up is not None and (gave_up.given_up_at, gave_up.last_error) == (27.0, "HTTP 400")
    assert await store.get_webhook("nope") is None


async def kept_ids(store: Store) -> set[str]:
    return {r.id for r in (await store.list_calls(limit=100))[0]}


async def test_purge_deletes_old_decided_calls_whole_and_keeps_the_rest(store: Store) -> None:
    for call_id, created in (("old", 100.0), ("old-hook-done", 110.0), ("old-hook-pending", 120.0),
                             ("old-undecided", 130.0), ("new", 900.0)):  # fmt: skip
        await store.create_call(record(call_id, created_at=created, timeline=[event(1, "x")]))
        store.append_event(call_id, event(2, "y"))
    await store.finish_call("old", "approved", None, 5.0)
    for call_id in ("old-hook-done", "old-hook-pending", "new"):
        await store.finish_call(call_id, "approved", None, 5.0, hook(call_id))
    await store.webhook_delivered("old-hook-done", 6.0)
    await store.block_user("default", "alice", "fraud_reported", "old", 5.0)

    assert await store.purge_calls(before=500.0, limit=10) == (2, None)
    assert await kept_ids(store) == {"old-hook-pending", "old-undecided", "new"}
    conn = sqlite3.connect(store.path)
    try:
        for table in ("timeline", "webhooks"):  # nothing of theirs left behind
            rows = conn.execute(f"SELECT DISTINCT call_id FROM {table}").fetchall()
            assert {"old", "old-hook-done"}.isdisjoint(r[0] for r in rows)
    finally:
        conn.close()
    assert await store.get_block("default", "alice") is not None  # blocks stay

    await store.webhook_failed("old-hook-pending", "HTTP 400", None, at=7.0)  # given up
    assert await store.purge_calls(before=500.0, limit=10) == (1, None)
    assert await store.get_call("old-hook-pending") is None
    assert await store.get_call("old-undecided") is not None


async def test_purge_takes_the_oldest_first_and_goes_on_past_what_must_stay(
    store: Store,
) -> None:
    for i in range(6):
        await store.create_call(record(f"c{i}", created_at=100.0 - i))
        await store.finish_call(f"c{i}", "denied", None, 5.0, hook(f"c{i}") if i == 5 else None)
    # c5, the oldest, waits for its webhook: skipped, and the next batch starts past c3.
    assert await store.purge_calls(before=500.0, limit=2) == (2, (97.0, "c3"))
    assert await kept_ids(store) == {"c0", "c1", "c2", "c5"}
    await store.webhook_delivered("c5", 6.0)  # deletable now, but behind where we are
    assert await store.purge_calls(before=500.0, limit=2, after=(97.0, "c3")) == (2, (99.0, "c1"))
    assert await store.purge_calls(before=500.0, limit=2, after=(99.0, "c1")) == (1, None)
    assert await kept_ids(store) == {"c5"}  # for the next purge, which starts from the oldest
    assert await store.purge_calls(before=500.0, limit=2) == (1, None)
    with pytest.raises(ValueError, match="limit must be 1-500"):
        await store.purge_calls(before=500.0, limit=501)


# --- durability ----------------------------------------------------------------------------


async def test_reopen_keeps_everything_including_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "db" / "phonemfa.db"  # the folder is created
    s = await Store.open(path)
    await s.create_call(record())
    await s.put_tenant_settings("acme", {"region": "FR"})
    await s.block_user("acme", "bob", "fraud_reported", "call-1", 5.0)
    s.set_status("call-1", "answered", 1003.0, channel_id="ch-1")
    for i in range(20):
        s.append_event("call-1", event(1000.0 + i, f"step{i}"))
    await s.close()  # no flush: close commits what is queued
    await s.close()  # idempotent

    s = await Store.open(path)
    try:
        got = await s.get_call("call-1")
        assert got is not None
        assert (got.status, got.channel_id) == ("answered", "ch-1")
        assert [e.event for e in got.timeline] == [f"step{i}" for i in range(20)]
        assert await s.get_tenant_settings("acme") == {"region": "FR"}
        assert await s.get_block("acme", "bob") is not None
        assert [r.id for r in await s.in_flight()] == ["call-1"]
    finally:
        await s.close()


KILLED_WRITER = """
import asyncio, sys
from phonemfa.store import CallRecord, Store, TimelineEntry, WebhookDelivery

async def main():
    store = await Store.open(sys.argv[1])
    for i in range(50):
        call_id = f"c{i}"
        await store.create_call(CallRecord(call_id, "t", None, "+1***", "h", "direct", "en",
            "queued", None, None, "api", i, i, None, None, None, None))
        for k in range(10):
            store.append_event(call_id, TimelineEntry(k, f"e{k}", {}))
        hook = WebhookDelivery(call_id, "t", "http://x", b"{}", 0, i, None, None)
        assert await store.finish_call(call_id, "approved", None, i, hook)
    print("committed", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_committed_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "phonemfa.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, str(path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"committed\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    s = await Store.open(path)
    try:
        assert await s.count_calls() == {"approved": 50}
        assert len(await s.due_webhooks(100.0, limit=100)) == 50
        got = await s.get_call("c49")
        assert got is not None and [e.event for e in got.timeline] == [f"e{k}" for k in range(10)]
    finally:
        await s.close()


async def synchronous_of(store: Store) -> int:
    """The writer connection's setting, read in the writer's thread (1 NORMAL, 2 FULL)."""
    return int(await store._write("probe", lambda c: c.execute("PRAGMA synchronous").fetchone()[0]))


async def test_synchronous_is_normal_unless_full_is_asked_for(tmp_path: Path) -> None:
    for mode, level in (("normal", 1), ("full", 2)):
        opened = await Store.open(tmp_path / f"{mode}.db", synchronous=mode)
        try:
            assert await synchronous_of(opened) == level
        finally:
            await opened.close()
    with pytest.raises(ValueError, match="synchronous must be normal or full"):
        await Store.open(tmp_path / "x.db", synchronous="off")


async def test_database_file_is_private_and_in_wal_mode(store: Store) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    sync = await store._write("test", lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert sync == 1  # NORMAL


async def _write_a_megabyte(s: Store) -> None:
    """200 commits of about 5 KiB: more WAL pages than SQLite's own checkpoint allows."""
    details = {"pad": "x" * 200}
    for i in range(200):
        rec = record(f"c{i}", timeline=[TimelineEntry(1000.0, f"e{k}", details) for k in range(20)])
        await s.create_call(rec)


def _sizes(s: Store) -> tuple[int, int]:
    """Bytes in the database file and in its WAL."""
    return s.path.stat().st_size, Path(f"{s.path}-wal").stat().st_size


async def test_commits_leave_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    # A checkpointer that never comes: the commits alone must not copy the WAL into the
    # database (a copy and an fsync inside a commit someone waits for).
    s = await Store.open(tmp_path / "x.db", checkpoint_interval=3600)
    try:
        db_before, _ = _sizes(s)
        await _write_a_megabyte(s)
        db_after, wal = _sizes(s)
        assert db_after == db_before
        assert wal > 1_000_000
        assert (await s.get_call("c199")) is not None  # read from the WAL meanwhile
    finally:
        await s.close()


async def test_the_checkpointer_copies_commits_into_the_database(tmp_path: Path) -> None:
    s = await Store.open(tmp_path / "x.db", checkpoint_interval=0.05)
    try:
        db_before, _ = _sizes(s)
        await _write_a_megabyte(s)
        for _ in range(200):  # up to 10 s on a slow machine; a few checkpoints usually
            if _sizes(s)[0] > db_before + 1_000_000:
                break
            await asyncio.sleep(0.05)
        assert _sizes(s)[0] > db_before + 1_000_000
        # Copied while the writer kept the WAL: nothing committed is missing.
        assert await s.count_calls() == {"queued": 200}
    finally:
        await s.close()
    reopened = await Store.open(tmp_path / "x.db")
    try:
        got = await reopened.get_call("c199")
        assert got is not None and len(got.timeline) == 20
    finally:
        await reopened.close()


async def test_the_checkpointer_finishes_what_a_reader_held_back(tmp_path: Path) -> None:
    # A reader's snapshot keeps the checkpoint from copying the pages committed after it;
    # once the reader is done, the rest is copied without waiting for another commit.
    s = await Store.open(tmp_path / "x.db", checkpoint_interval=0.05)
    reader = sqlite3.connect(s.path, isolation_level=None)
    try:
        db_before, _ = _sizes(s)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM calls").fetchone()
        await _write_a_megabyte(s)
        await asyncio.sleep(0.5)  # ten checkpoints' time
        assert _sizes(s)[0] < db_before + 1_000_000
        reader.execute("COMMIT")
        for _ in range(200):
            if _sizes(s)[0] > db_before + 1_000_000:
                break
            await asyncio.sleep(0.05)
        assert _sizes(s)[0] > db_before + 1_000_000
    finally:
        reader.close()
        await s.close()


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    s = await Store.open(tmp_path / "x.db")
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.create_call(record())
    with pytest.raises(StoreUnavailable):
        await s.get_call("call-1")
    s.append_event("call-1", event(1.0, "late"))  # dropped with a warning, never raises


# --- migrations ----------------------------------------------------------------------------


async def test_a_v1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute(
        "INSERT INTO calls (id, tenant, user, phone_masked, phone_hash, mode, language, status,"
        " origin, created_at, updated_at) VALUES"
        " ('old', 'default', 'alice', '+1***', 'h', 'direct', 'en', 'ringing', 'api', 1, 1)"
    )
    conn.close()

    s = await Store.open(path)
    try:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()
        assert [(r.id, r.backup_phones) for r in await s.in_flight()] == [("old", ())]
        assert await s.count_calls() == {"ringing": 1}
        conn = sqlite3.connect(path)
        # v3 dropped v1's running count (three statements per status change).
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == []
        )
        conn.close()
        # The tables added since v1 work.
        assert await s.finish_call("old", "interrupted", "restart", 2.0, hook("old"))
        assert await s.get_webhook("old") == hook("old")
        await s.put_tenant_settings("default", {"region": "US"})
        await s.block_user("default", "alice", "manual", None, 3.0)
    finally:
        await s.close()


async def test_a_v3_database_gets_its_users_in_one_spelling(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=3) == 3
    for call_id, user in (("a", "Alice"), ("b", "alice"), ("c", None)):
        conn.execute(
            "INSERT INTO calls (id, tenant, user, phone_masked, phone_hash, mode, language,"
            " status, outcome, origin, created_at, updated_at) VALUES"
            " (?, 'default', ?, '+1***', 'h', 'direct', 'en', 'approved', 'approved', 'api', 1, 1)",
            (call_id, user),
        )
    for user, at in (("Bob", 1.0), ("BOB", 2.0), ("carol", 3.0)):
        conn.execute(
            "INSERT INTO blocks (tenant, user, reason, call_id, created_at)"
            " VALUES ('default', ?, 'fraud_reported', NULL, ?)",
            (user, at),
        )
    conn.close()

    s = await Store.open(path)
    try:
        records, _ = await s.list_calls(user="alice")
        assert sorted(r.id for r in records) == ["a", "b"]
        blocks = await s.all_blocks()
        assert [(b["user"], b["created_at"]) for b in blocks] == [("bob", 1.0), ("carol", 3.0)]
    finally:
        await s.close()


async def test_a_v5_database_gets_users_with_control_characters_in_one_spelling(
    tmp_path: Path,
) -> None:
    # canonical_user drops control characters (DEL, C1) since schema v5: a block stored for
    # "alice\x7f" before then blocked nobody after it (a call for that spelling is alice's
    # now), nor could it be lifted; and its calls were no longer alice's for the limits.
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=5) == 5
    for call_id, user in (("a", "alice\x7f"), ("b", "ali\x85ce"), ("c", "alice")):
        conn.execute(
            "INSERT INTO calls (id, tenant, user, phone_masked, phone_hash, mode, language,"
            " status, outcome, origin, created_at, updated_at) VALUES"
            " (?, 'default', ?, '+1***', 'h', 'direct', 'en', 'approved', 'approved', 'api', 1, 1)",
            (call_id, user),
        )
    conn.execute(
        "INSERT INTO blocks (tenant, user, reason, call_id, created_at)"
        " VALUES ('default', 'alice\x7f', 'fraud_reported', 'a', 1)"
    )
    conn.close()

    s = await Store.open(path)
    try:
        records, _ = await s.list_calls(user="alice")
        assert sorted(r.id for r in records) == ["a", "b", "c"]
        assert [b["user"] for b in await s.all_blocks()] == ["alice"]
    finally:
        await s.close()


async def test_a_v6_database_gets_the_receiver_of_each_pending_webhook(tmp_path: Path) -> None:
    # v7 reads the outbox past the receivers that have their share in flight (webhooks.py).
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=6) == 6
    rows = [
        ("a", "https://Hooks.Example.:443/x?k=1", None),
        ("b", "http://other:8080/y", None),
        ("c", "https://hooks.example/z", 5.0),  # delivered
    ]
    for due, (call_id, url, delivered) in enumerate(rows):
        conn.execute(
            "INSERT INTO calls (id, tenant, phone_masked, phone_hash, mode, language, status,"
            " outcome, origin, created_at, updated_at) VALUES"
            " (?, 'default', '+1***', 'h', 'direct', 'en', 'approved', 'approved', 'api', 1, 1)",
            (call_id,),
        )
        conn.execute(
            "INSERT INTO webhooks (call_id, tenant, url, body, next_attempt_at, delivered_at)"
            " VALUES (?, 'default', ?, x'7b7d', ?, ?)",
            (call_id, url, 1.0 + due / 10, delivered),
        )
    conn.close()

    s = await Store.open(path)
    try:
        assert [w.call_id for w in await s.due_webhooks(10.0)] == ["a", "b"]
        assert [w.call_id for w in await s.due_webhooks(10.0, but={"https://hooks.example"})] == [
            "b"
        ]
        await s.create_call(record("new", created_at=3.0))
        await s.finish_call("new", "approved", None, 4.0, hook("new", next_attempt_at=3.0))
        skipped = {"https://hooks.example", "http://other:8080"}
        assert [w.call_id for w in await s.due_webhooks(10.0, but=skipped)] == ["new"]
        assert [w.call_id for w in await s.due_webhooks(10.0, but={"https://idp.example"})] == [
            "a", "b",
        ]  # fmt: skip
    finally:
        await s.close()


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    (await Store.open(path)).healthy  # noqa: B018 - create it
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreUnavailable, match="newer"):
        await Store.open(path)


# --- failures ------------------------------------------------------------------------------


async def test_disk_full_surfaces_and_writes_nothing(store: Store) -> None:
    await store.create_call(record())

    # A real SQLITE_FULL: the database may not grow by a single page.
    def no_growth(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._write("test", no_growth)
    big = "x" * 200_000
    with pytest.raises(StoreUnavailable, match="full"):
        await store.create_call(record("call-2", timeline=[event(1.0, "e", blob=big)]))
    assert store.healthy is False
    with pytest.raises(StoreUnavailable):
        await store.finish_call("call-1", "approved", None, 5.0, hook(body=big.encode()))
    assert await store.get_call("call-2") is None
    got = await store.get_call("call-1")
    assert got is not None and got.outcome is None
    assert await store.get_webhook("call-1") is None

    await store._write("test", lambda c: c.execute("PRAGMA max_page_count = 1000000000"))
    assert await store.finish_call("call-1", "approved", None, 5.0, hook(body=big.encode()))
    assert store.healthy is True
    assert store._writer.is_alive()


async def test_a_read_only_database_surfaces_and_recovers(store: Store) -> None:
    await store.create_call(record())
    # SQLite's own read-only refusal (what a read-only file or mount gives: SQLITE_READONLY).
    # Set on the writer's connection between batches (the writer is idle, nothing queued).
    await store.flush()
    store._writer.conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable, match="readonly"):
        await store.finish_call("call-1", "approved", None, 5.0, hook())
    assert store.healthy is False
    got = await store.get_call("call-1")
    assert got is not None and got.outcome is None
    store._writer.conn.execute("PRAGMA query_only = OFF")
    assert await store.finish_call("call-1", "approved", None, 5.0, hook())
    assert store.healthy is True


async def test_a_probe_tells_the_store_can_write_again(store: Store) -> None:
    # Found by review: only a batch of writes set `healthy` again; with no call to write
    # (a load balancer draining us on /healthz), it said `unavailable` for good.
    await store.flush()
    store._writer.conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable):
        await store.probe()
    assert store.healthy is False
    store._writer.conn.execute("PRAGMA query_only = OFF")
    await store.flush()  # writes nothing: tells nothing
    assert store.healthy is False
    await store.probe()
    assert store.healthy is True


async def test_failed_commit_leaves_no_half_written_outcome(store: Store) -> None:
    await store.create_call(record())
    faulty = make_faulty(store, "INSERT INTO webhooks")
    with pytest.raises(StoreUnavailable):
        await store.finish_call("call-1", "approved", None, 5.0, hook())
    assert store.healthy is False and faulty.times == 0
    got = await store.get_call("call-1")
    assert got is not None and (got.status, got.outcome) == ("queued", None)
    assert await store.get_webhook("call-1") is None
    # The caller may try again, and now it holds.
    assert await store.finish_call("call-1", "approved", None, 5.0, hook()) is True
    assert store.healthy is True


async def test_fire_and_forget_write_is_retried_once(store: Store) -> None:
    await store.create_call(record())
    make_faulty(store, "INSERT INTO timeline", times=1)
    async with one_batch(store):
        store.append_event("call-1", event(1.0, "ringing"))
        flushed = asyncio.ensure_future(store.flush())
    with pytest.raises(StoreUnavailable):
        await flushed
    assert store.healthy is False
    await store.flush()  # the next batch: the retry, which commits
    assert store.healthy is True
    got = await store.get_call("call-1")
    assert got is not None and [e.event for e in got.timeline] == ["ringing"]


async def test_fire_and_forget_write_is_dropped_after_two_failures(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.create_call(record())
    make_faulty(store, "INSERT INTO timeline", times=2)
    async with one_batch(store):
        store.append_event("call-1", event(1.0, "lost"))
        flushed = asyncio.ensure_future(store.flush())
    with caplog.at_level(logging.ERROR, logger="phonemfa.store"):
        with pytest.raises(StoreUnavailable):
            await flushed
        with pytest.raises(StoreUnavailable):
            await store.flush()
    assert "append_event dropped" in caplog.text
    assert store.dropped_writes == 1
    assert store._writer.is_alive()
    store.append_event("call-1", event(2.0, "kept"))
    await store.flush()
    assert store.healthy is True
    got = await store.get_call("call-1")
    assert got is not None and [e.event for e in got.timeline] == ["kept"]


class FullDiskFor(FaultyConnection):
    """Every COMMIT after a statement containing `trigger` fails until `seconds` from now."""

    def __init__(self, conn: sqlite3.Connection, trigger: str, seconds: float) -> None:
        super().__init__(conn, trigger, times=1_000_000)
        self.until = time.monotonic() + seconds

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if time.monotonic() >= self.until:
            self.times = 0
        return super().execute(sql, *args)


async def test_a_failed_write_waits_out_retry_delay_however_busy_the_store_is(
    tmp_path: Path,
) -> None:
    # A full disk for a moment, while steps keep coming: the second try of the first step
    # must come after retry_delay, not with the next step (then within the same moment).
    store = await Store.open(tmp_path / "phonemfa.db", linger=0, retry_delay=0.5)
    try:
        await store.create_call(record())
        full = FullDiskFor(store._writer.conn, "INSERT INTO timeline", 0.25)
        store._writer.conn = full  # type: ignore[assignment]
        store.append_event("call-1", event(1.0, "answered"))
        await asyncio.sleep(0.05)
        store.append_event("call-1", event(2.0, "prompting"))
        await store.flush()
        got = await store.get_call("call-1")
        assert got is not None and [e.event for e in got.timeline] == ["answered", "prompting"]
        assert store.dropped_writes == 0
    finally:
        await store.close()


async def test_one_bad_write_does_not_spoil_its_batch(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.create_call(record())
    with caplog.at_level(logging.ERROR, logger="phonemfa.store"):
        async with one_batch(store):
            store.append_event("no-such-call", event(1.0, "orphan"))  # foreign key
            duplicate = asyncio.ensure_future(store.create_call(record()))
            store.append_event("call-1", event(2.0, "kept"))
            finished = asyncio.ensure_future(store.finish_call("call-1", "approved", None, 3.0))
    with pytest.raises(ValueError):
        await duplicate
    assert await finished is True
    assert "append_event failed" in caplog.text
    assert store.dropped_writes == 1
    assert store.healthy is True
    got = await store.get_call("call-1")
    assert got is not None and [e.event for e in got.timeline] == ["kept"]


async def test_reads_do_not_wait_for_the_writer(store: Store) -> None:
    await store.create_call(record())
    async with one_batch(store):
        store.append_event("call-1", event(1.0, "queued-behind"))
        got = await asyncio.wait_for(store.get_call("call-1"), 2)
        assert got is not None and got.timeline == []
    await store.flush()


# --- load ----------------------------------------------------------------------------------


async def test_many_concurrent_calls(store: Store) -> None:
    async def one(i: int) -> None:
        call_id = f"c{i:03d}"
        await store.create_call(record(call_id, created_at=float(i)))
        store.set_status(call_id, "dialing", 1.0, channel_id=f"ch-{i}")
        for k in range(12):
            store.append_event(call_id, event(float(k), f"e{k}"))
            await asyncio.sleep(0)
        assert await store.finish_call(call_id, "approved", None, 2.0, hook(call_id))

    await asyncio.gather(*(one(i) for i in range(200)))
    assert await store.count_calls() == {"approved": 200}
    assert await store.in_flight() == []
    assert len(await store.due_webhooks(2000.0, limit=1000)) == 200
    for call_id in ("c000", "c137", "c199"):
        got = await store.get_call(call_id)
        assert got is not None and [e.event for e in got.timeline] == [f"e{k}" for k in range(12)]


async def test_a_user_s_calls_are_listed_by_an_index(store: Store) -> None:
    # Found by review: `?user=` read the tenant's whole history, newest first, to find a user
    # with few calls (0.15 s with 500,000 rows), holding one of the shared readers.
    for i in range(3):
        await store.create_call(record(f"c{i}", user="alice" if i else "bob", created_at=i))
    page, _ = await store.list_calls(tenants=["default", "acme"], user="alice")
    assert [r.id for r in page] == ["c2", "c1"]
    conn = sqlite3.connect(store.path)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM calls WHERE tenant IN (?, ?) AND user = ?"
            " ORDER BY created_at DESC, id DESC LIMIT 51",
            ("default", "acme", "alice"),
        ).fetchall()
    finally:
        conn.close()
    assert "calls_user" in " ".join(str(row) for row in plan), plan
