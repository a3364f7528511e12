"""Call records, timelines, tenant settings, fraud blocks and the webhook outbox, in SQLite.

One writer thread owns the only write connection and applies writes in the order they were
issued, committing everything queued when it wakes in one transaction (a batch). Awaited writes
(`create_call`, `finish_call`, ...) return once their batch is committed; `append_event` and
`set_status` are queued and not awaited, so a call never waits for the disk (a batch of those
alone waits up to `LINGER`, 100 ms, for more, and runs of the same statement share one
executemany: under load a call's dozen steps cost one commit among many). A write that fails
on its own (a constraint) fails alone: its batch is run again with a savepoint per write.
Reads run on a small pool of threads with their own connections (WAL: readers never wait for
the writer).

WAL with synchronous=NORMAL (storage.synchronous): a committed batch survives the process
being killed (SIGKILL); only a power loss can take the last few batches (none with FULL).
The writer never checkpoints the WAL (copies it into the database file and syncs it): a
thread of its own does, every second, so that the copy and its fsync are never inside a
commit someone waits for.

Phone numbers are never stored in clear: a record has the masked number and a keyed hash of
the E.164 number (`number_key`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from phonemfa import jsoncodec
from phonemfa.callback_policy import receiver_of
from phonemfa.users import canonical_user

log = logging.getLogger("phonemfa.store")

T = TypeVar("T")

# Beside the database: replaced whenever a block is announced (Store.blocks_stamp).
_BLOCKS = ".blocks"
# A batch is everything queued when the writer wakes, up to this many writes.
MAX_BATCH = 1000
READERS = 4
# After a failed batch, its fire-and-forget writes are tried once more this much later, and
# nothing is committed meanwhile: writes that come wait with them, an outcome included (a
# failing disk gets a moment; a healthy one never pays it).
RETRY_DELAY = 0.5
# How long a batch of fire-and-forget writes waits for company before it is committed. Each
# wake of the writer costs a thread switch and a GIL hand-over: at 15 calls/s, 10 ms cost the
# writer 1.9 ms of CPU per call (`make bench`), 100 ms 1.1 ms. Nobody reads these rows
# sooner: a call in progress is served from memory, and an outcome (an awaited write)
# commits everything queued before it at once.
LINGER = 0.1
BUSY_TIMEOUT = 5.0
# How often the checkpointer moves what was committed from the WAL into the database file.
# SQLite's own default (by the committing connection, once the WAL passes 1000 pages) put a
# copy and an fsync inside one commit in a few hundred: at 50 calls/s, that was the p99 of
# the commit that records an outcome (8-9 ms, 2 ms without). A second of commits is a few MB
# of WAL at the most this service writes.
CHECKPOINT_INTERVAL = 1.0


# The timeline step of a dialplan entry's call once the dialplan took its answer: that channel
# entering Stasis again (a retry in its dialplan) is a new verification, never this one's
# outcome handed over again by a sweep that missed its StasisStart (found by review).
ENTRY_ANSWERED = "dialplan_answered"


class StoreUnavailable(Exception):
    """The database cannot be written (disk full, read-only, I/O error) or is closed."""


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    event: str
    details: dict[str, Any]


@dataclass
class CallRecord:
    id: str
    tenant: str
    user: str | None
    phone_masked: str
    phone_hash: str
    mode: str
    language: str
    status: str
    outcome: str | None
    reason: str | None
    origin: str
    created_at: float
    updated_at: float
    ended_at: float | None
    channel_id: str | None
    origin_channel: str | None
    callback_url: str | None
    code_used: bool = False
    token_name: str | None = None
    # A fallback chain's backup numbers, masked, and their keyed hashes (velocity limits).
    backup_phones: tuple[str, ...] = ()
    backup_hashes: tuple[str, ...] = ()
    timeline: list[TimelineEntry] = field(default_factory=list)


@dataclass(frozen=True)
class WebhookDelivery:
    call_id: str
    tenant: str
    url: str
    body: bytes
    attempts: int
    next_attempt_at: float
    delivered_at: float | None
    last_error: str | None
    given_up_at: float | None = None


# --- schema ------------------------------------------------------------------------------

Migration = Callable[[sqlite3.Connection], None]


def _sql(*statements: str) -> Migration:
    def migrate(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return migrate


def _canonical_users(conn: sqlite3.Connection) -> None:
    # One pass over the calls (no index on user: one UPDATE per spelling would scan them all
    # for each, minutes for a large table inside the start-up's migration transaction).
    conn.create_function(
        "canonical_user", 1, lambda u: canonical_user(u) or None, deterministic=True
    )
    conn.execute(
        "UPDATE calls SET user = canonical_user(user)"
        " WHERE user IS NOT NULL AND user IS NOT canonical_user(user)"
    )
    blocks = conn.execute("SELECT tenant, user FROM blocks ORDER BY created_at").fetchall()
    for tenant, user in blocks:
        if (canonical := canonical_user(user)) != user:
            # Several spellings blocked: one block stands for all of them.
            conn.execute(
                "INSERT OR IGNORE INTO blocks (tenant, user, reason, call_id, created_at)"
                " SELECT tenant, ?, reason, call_id, created_at FROM blocks"
                " WHERE tenant = ? AND user = ?",
                (canonical, tenant, user),
            )
            conn.execute("DELETE FROM blocks WHERE tenant = ? AND user = ?", (tenant, user))


def _webhook_receivers(conn: sqlite3.Connection) -> None:
    # Each delivery's receiver (callback_policy.receiver_of), so that the outbox can be read
    # past the receivers that have their share in flight (webhooks.PER_RECEIVER): a receiver
    # that hangs with a backlog hid every other receiver's deliveries due after it. Only the
    # pending ones need it; the index serves that read without the rows' bodies.
    conn.execute("ALTER TABLE webhooks ADD COLUMN receiver TEXT NOT NULL DEFAULT ''")
    pending = conn.execute(
        "SELECT call_id, url FROM webhooks WHERE delivered_at IS NULL AND given_up_at IS NULL"
    ).fetchall()
    conn.executemany(
        "UPDATE webhooks SET receiver = ? WHERE call_id = ?",
        [(receiver_of(url), call_id) for call_id, url in pending],
    )
    conn.execute("DROP INDEX webhooks_pending")
    conn.execute(
        "CREATE INDEX webhooks_pending ON webhooks (next_attempt_at, receiver)"
        " WHERE delivered_at IS NULL AND given_up_at IS NULL"
    )


# Applied in order; `PRAGMA user_version` is how many have been. Never edit a released one:
# append a new one (SQL statements, or a function for data migrations).
MIGRATIONS: list[Migration] = [
    # v1: the call records of DESIGN §3.
    _sql(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            user TEXT,
            phone_masked TEXT NOT NULL,
            phone_hash TEXT NOT NULL,
            mode TEXT NOT NULL,
            language TEXT NOT NULL,
            status TEXT NOT NULL,
            outcome TEXT,
            reason TEXT,
            origin TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            ended_at REAL,
            channel_id TEXT,
            origin_channel TEXT,
            callback_url TEXT,
            code_used INTEGER NOT NULL DEFAULT 0,
            token_name TEXT
        )""",
        "CREATE INDEX calls_created ON calls (created_at, id)",
        "CREATE INDEX calls_tenant_created ON calls (tenant, created_at, id)",
        "CREATE INDEX calls_in_flight ON calls (created_at) WHERE outcome IS NULL",
        """CREATE TABLE timeline (
            seq INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL REFERENCES calls (id),
            at REAL NOT NULL,
            event TEXT NOT NULL,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX timeline_call ON timeline (call_id, seq)",
        # Calls by status, kept by triggers so that metrics never scan the calls table.
        "CREATE TABLE call_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL)",
        """CREATE TRIGGER call_counts_insert AFTER INSERT ON calls BEGIN
            INSERT OR IGNORE INTO call_counts VALUES (NEW.status, 0);
            UPDATE call_counts SET n = n + 1 WHERE status = NEW.status;
        END""",
        """CREATE TRIGGER call_counts_update AFTER UPDATE OF status ON calls
            WHEN OLD.status IS NOT NEW.status BEGIN
            UPDATE call_counts SET n = n - 1 WHERE status = OLD.status;
            INSERT OR IGNORE INTO call_counts VALUES (NEW.status, 0);
            UPDATE call_counts SET n = n + 1 WHERE status = NEW.status;
        END""",
        """CREATE TRIGGER call_counts_delete AFTER DELETE ON calls BEGIN
            UPDATE call_counts SET n = n - 1 WHERE status = OLD.status;
        END""",
    ),
    # v2: what the service keeps beside the calls.
    _sql(
        """CREATE TABLE tenant_settings (
            tenant TEXT PRIMARY KEY,
            settings TEXT NOT NULL
        )""",
        """CREATE TABLE blocks (
            tenant TEXT NOT NULL,
            user TEXT NOT NULL,
            reason TEXT NOT NULL,
            call_id TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (tenant, user)
        )""",
        """CREATE TABLE webhooks (
            call_id TEXT PRIMARY KEY REFERENCES calls (id),
            tenant TEXT NOT NULL,
            url TEXT NOT NULL,
            body BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            delivered_at REAL,
            last_error TEXT,
            given_up_at REAL
        )""",
        """CREATE INDEX webhooks_pending ON webhooks (next_attempt_at)
            WHERE delivered_at IS NULL AND given_up_at IS NULL""",
    ),
    # v3: no running count of calls by status. Its triggers ran three statements on every
    # status change (five changes a call) for a count nothing used; `count_calls` scans.
    _sql(
        "DROP TRIGGER call_counts_insert",
        "DROP TRIGGER call_counts_update",
        "DROP TRIGGER call_counts_delete",
        "DROP TABLE call_counts",
    ),
    # v4: user ids in one spelling (phonemfa.users), so limits and blocks hold for a user.
    _canonical_users,
    # v5: backup numbers of fallback chains (JSON lists; NULL when none), masked and hashed.
    _sql(
        "ALTER TABLE calls ADD COLUMN backup_phones TEXT",
        "ALTER TABLE calls ADD COLUMN backup_hashes TEXT",
    ),
    # v6: v4 again, as user ids lost their control characters (DEL, C1) too: a block stored
    # with one would block nobody, and could not be lifted.
    _canonical_users,
    # v7: each webhook delivery's receiver, for reading the outbox past a crowded one.
    _webhook_receivers,
    # v8: a user's calls found without a walk through the tenant's whole history (found by
    # review: `?user=` of a user with few calls read every row, on the shared readers).
    _sql("CREATE INDEX calls_user ON calls (user, created_at, id) WHERE user IS NOT NULL"),
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to `target` one migration per transaction; returns the version.
    A database newer than this code is refused rather than misread."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"database schema v{version} is newer than this phonemfa (v{SCHEMA_VERSION})"
                )
            if version >= target:
                conn.execute("COMMIT")
                return version
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("database migrated to schema v%d", version + 1)


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    # Autocommit mode: we say BEGIN and COMMIT ourselves. check_same_thread is off because
    # connections are made in one thread and used (and closed) in another, never at once.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


def _open_writer(path: Path, synchronous: str) -> tuple[sqlite3.Connection, bytes]:
    if synchronous not in ("normal", "full"):  # before any file is made
        raise ValueError(f"synchronous must be normal or full, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # The database holds the number-hash key: readable by us only (SQLite gives the
        # -wal and -shm files the same permissions).
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = _connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"{path}: cannot use WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job (_Checkpointer)
        migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('number_key', ?)", (secrets.token_hex(32),)
        )
        key = conn.execute("SELECT value FROM meta WHERE key = 'number_key'").fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn, bytes.fromhex(key)


# --- the writer --------------------------------------------------------------------------


@dataclass(eq=False)
class _Write:
    # None: a flush marker. A run may run twice (when any write of its batch failed, see
    # _Writer._apply): it touches only the connection and gives the same result each time.
    run: Callable[[sqlite3.Connection], Any] | None
    what: str
    future: asyncio.Future[Any] | None = None  # None: fire and forget
    # Someone waits for this write and it cannot wait for the linger (see _Writer.run).
    urgent: bool = False
    retried: bool = False
    # A fire-and-forget write that is one statement: neighbours with the same statement run
    # as one executemany (a call's timeline is a dozen such rows).
    sql: str | None = None
    args: tuple[Any, ...] = ()

    @classmethod
    def statement(cls, what: str, sql: str, args: tuple[Any, ...]) -> _Write:
        return cls(lambda c: c.execute(sql, args), what, sql=sql, args=args)


_STOP = _Write(None, "stop", urgent=True)

# Errors that belong to one write (a bug in it, a constraint): that write alone fails.
# Every other sqlite3 error (disk full, I/O, read-only, locked) fails the whole batch.
_OWN_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
)


def _fails_the_batch(exc: Exception) -> bool:
    """An error of the database itself (not of one write, see _OWN_ERRORS)."""
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, _OWN_ERRORS)


def _execute_in_runs(conn: sqlite3.Connection, writes: Sequence[_Write]) -> None:
    """Single-statement writes, in order, consecutive equal statements as one executemany."""
    i = 0
    while i < len(writes):
        sql = writes[i].sql
        j = i + 1
        while j < len(writes) and writes[j].sql == sql:
            j += 1
        assert sql is not None
        if j - i == 1:
            conn.execute(sql, writes[i].args)
        else:
            conn.executemany(sql, [w.args for w in writes[i:j]])
        i = j


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, exc in results:
        if future.done():  # the caller was cancelled; the write happened anyway
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


class _Writer(threading.Thread):
    def __init__(self, store: Store, conn: sqlite3.Connection) -> None:
        super().__init__(name="phonemfa-store-writer", daemon=True)
        self.store = store
        self.conn = conn
        self.queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        # Set with every urgent write (and to stop): it cuts a linger short.
        self.urgent = threading.Event()
        self.commits = 0  # counted here alone; the checkpointer reads it
        self.dropped = 0  # fire-and-forget writes given up on; counted here alone

    def put(self, write: _Write) -> None:
        self.queue.put(write)
        if write.urgent:
            self.urgent.set()

    def run(self) -> None:
        retry: list[_Write] = []
        stopping = False
        while not stopping:
            batch, retry = retry, []
            if batch:  # a failed batch: its second try after retry_delay, not the next write
                stopping = self._wait_out(batch, self.store.retry_delay)
            else:
                first = self.queue.get()
                if first is _STOP:
                    stopping = True
                else:
                    batch.append(first)
            self.urgent.clear()  # before taking what is queued: a later urgent write sets it
            stopping = self._take(batch) or stopping
            # A batch of fire-and-forget writes only (timeline rows, status changes) waits
            # up to `linger` before its commit, and what comes meanwhile does not wake us:
            # under load that is one commit (and one hand-over of the GIL) for many calls'
            # steps instead of one each. An urgent write (a new call's record, an outcome)
            # ends the wait at once; a non-urgent flush (`settled`) waits with the rest.
            # A batch being tried again has waited `retry_delay` already.
            lingering = self.store.linger > 0 and not stopping and not any(w.retried for w in batch)
            if lingering and not any(w.urgent for w in batch):
                self.urgent.wait(self.store.linger)
                stopping = self._take(batch) or stopping
            try:
                retry = self._apply(batch)
            except Exception as exc:  # a bug of ours: fail these writes, keep the writer
                log.exception("store: writer error")
                retry = self._failed(batch, exc)
            if stopping and retry:
                self._apply(retry)
        self.conn.close()

    def _wait_out(self, batch: list[_Write], seconds: float) -> bool:
        """Let `seconds` pass, taking what is queued meanwhile into `batch` (up to
        max_batch); True when told to stop. Under load a write comes every few ms: waking
        for it would make the second try as immediate as the first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if len(batch) >= self.store.max_batch:
                time.sleep(left)
                break
            try:
                item = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _take(self, batch: list[_Write]) -> bool:
        """Move what is queued into `batch` (up to max_batch); True when told to stop."""
        while len(batch) < self.store.max_batch:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _apply(self, batch: list[_Write]) -> list[_Write]:
        """Commit one batch; returns the fire-and-forget writes to try again."""
        if not any(w.run is not None for w in batch):
            self._settle([(w, None, None) for w in batch])
            return []
        try:
            try:
                done = self._transaction(batch, careful=False)
            except Exception as exc:
                if _fails_the_batch(exc):
                    raise
                # A write of the batch was wrong (a constraint, a bug of ours): the batch
                # again, each write under a savepoint of its own, so that it alone fails.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                done = self._transaction(batch, careful=True)
        except Exception as exc:
            return self._failed(batch, exc)
        if not self.store.healthy:
            log.warning("database writable again")
        self.store.healthy = True
        self._settle(done)
        return []

    def _transaction(
        self, batch: list[_Write], careful: bool
    ) -> list[tuple[_Write, Any, BaseException | None]]:
        """Run the batch in one transaction and commit it. Not careful (the usual case), no
        savepoints: they were 40 % of the writer's statements, for errors that almost
        never happen; a write that fails then fails the transaction, and `_apply` runs the
        batch again, careful."""
        conn = self.conn
        done: list[tuple[_Write, Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        i = 0
        while i < len(batch):
            w = batch[i]
            if w.future is not None or w.sql is None:
                done.append((w, *self._run_one(conn, w, careful)))
                i += 1
                continue
            # A run of queued statements (timeline rows, status changes).
            j = i + 1
            while j < len(batch) and batch[j].future is None and batch[j].sql is not None:
                j += 1
            self._run_statements(conn, batch[i:j], careful)
            i = j
        conn.execute("COMMIT")
        self.commits += 1
        return done

    def _run_statements(
        self, conn: sqlite3.Connection, writes: list[_Write], careful: bool
    ) -> None:
        """Queued single-statement writes, in order, consecutive equal statements as one
        executemany. Careful: under one savepoint and, if one of them is wrong, each on its
        own (they are rarely wrong)."""
        if not careful:
            _execute_in_runs(conn, writes)
            return
        if len(writes) == 1:
            self._run_one(conn, writes[0], careful)
            return
        conn.execute("SAVEPOINT s")
        try:
            _execute_in_runs(conn, writes)
        except Exception as exc:
            if _fails_the_batch(exc):
                raise
            conn.execute("ROLLBACK TO s")
            conn.execute("RELEASE s")
            for w in writes:
                self._run_one(conn, w, careful)
            return
        conn.execute("RELEASE s")

    def _run_one(
        self, conn: sqlite3.Connection, w: _Write, careful: bool
    ) -> tuple[Any, BaseException | None]:
        if w.run is None:
            return None, None
        if not careful:
            return w.run(conn), None
        # A savepoint per write, so that one bad write leaves the rest of the batch intact.
        conn.execute("SAVEPOINT w")
        try:
            value = w.run(conn)
        except Exception as exc:
            if _fails_the_batch(exc):
                raise
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
            if w.future is None:
                self.dropped += 1
                log.error("store: %s failed and was dropped: %s", w.what, exc)
            return None, exc
        conn.execute("RELEASE w")
        return value, None

    def _failed(self, batch: list[_Write], exc: Exception) -> list[_Write]:
        try:
            if self.conn.in_transaction:  # SQLite rolls back by itself on some errors
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("store: rollback failed")
        if self.store.healthy:
            log.error("database write failed: %s", exc)
        self.store.healthy = False
        retry, results = [], []
        for w in batch:
            if w.future is not None:
                results.append((w, None, StoreUnavailable(f"database write failed: {exc}")))
            elif w.run is not None and not w.retried:
                w.retried = True
                retry.append(w)
            elif w.run is not None:
                self.dropped += 1
                log.error("store: %s dropped after a second failure", w.what)
        self._settle(results)
        return retry

    def _settle(self, done: Sequence[tuple[_Write, Any, BaseException | None]]) -> None:
        # One hop into each waiting event loop per batch.
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for w, value, exc in done:
            if w.future is not None:
                by_loop.setdefault(w.future.get_loop(), []).append((w.future, value, exc))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, results)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


class _Checkpointer(threading.Thread):
    """Checkpoints the WAL every `interval` when something was committed meanwhile, with a
    connection of its own: a WAL checkpoint runs beside the writer and the readers and takes
    nothing from what is committed (it only copies it; a checkpoint cut short resumes)."""

    def __init__(self, path: Path, writer: _Writer, interval: float) -> None:
        super().__init__(name="phonemfa-store-checkpoint", daemon=True)
        self.path = path
        self.writer = writer
        self.interval = interval
        self.stopping = threading.Event()
        self.checkpointed = -1  # the writer's commit count at the last checkpoint

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        while not self.stopping.wait(self.interval):
            commits = self.writer.commits
            if commits == self.checkpointed:
                continue
            try:
                if conn is None:
                    conn = _connect(self.path)
                # PASSIVE: copies what no reader still needs, waits for nobody.
                _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:  # the WAL keeps every commit; try again next time
                if not failing:
                    log.warning("store: WAL checkpoint failed (will retry): %s", exc)
                failing = True
                continue
            if failing:
                log.warning("store: WAL checkpoint works again")
            failing = False
            if copied == frames:  # else a reader held some back: again next time
                self.checkpointed = commits
        if conn is not None:
            conn.close()


# --- the store ---------------------------------------------------------------------------

_CALL_COLUMNS = (
    "id, tenant, user, phone_masked, phone_hash, mode, language, status, outcome, reason, "
    "origin, created_at, updated_at, ended_at, channel_id, origin_channel, callback_url, "
    "code_used, token_name, backup_phones, backup_hashes"
)
_BLOCK_SQL = (
    "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)"  # a second block replaces the first
)
_WEBHOOK_COLUMNS = (
    "call_id, tenant, url, body, attempts, next_attempt_at, delivered_at, last_error, given_up_at"
)


def _call(row: Sequence[Any]) -> CallRecord:
    values = list(row)
    values[17] = bool(values[17])  # code_used
    values[19] = _strings(values[19])  # backup_phones
    values[20] = _strings(values[20])  # backup_hashes
    return CallRecord(*values)


def _strings(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def _json_list(values: Sequence[str]) -> str | None:
    return json.dumps(list(values)) if values else None


def _webhook(row: Sequence[Any]) -> WebhookDelivery:
    values = list(row)
    values[3] = bytes(values[3])  # body
    return WebhookDelivery(*values)


def _encode_cursor(created_at: float, call_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, call_id]).encode()).decode()


# A cursor we give out is a time and a call id: far below this. Longer is not ours, and is
# refused before it is decoded (nested deep, it would overflow json's recursion: a 500).
MAX_CURSOR_LENGTH = 512


def _decode_cursor(cursor: str) -> tuple[float, str]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise ValueError("invalid cursor")
    try:
        created_at, call_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        at = float(created_at)
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error) as exc:
        raise ValueError("invalid cursor") from exc
    if not math.isfinite(at):
        raise ValueError("invalid cursor")
    return at, str(call_id)


class Store:
    """Open with `await Store.open(path)`; close with `await store.close()`."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        key: bytes,
        *,
        readers: int = READERS,
        max_batch: int = MAX_BATCH,
        retry_delay: float = RETRY_DELAY,
        linger: float = LINGER,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self.path = path
        # Next to the database, like the locks (startup.py): every process finds the same one.
        self._blocks_marker = Path(f"{Path(path).resolve()}{_BLOCKS}")
        self.healthy = True
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self.linger = linger
        self._key = key
        self._closed = False
        self._writer = _Writer(self, conn)
        self._writer.start()
        self._checkpointer = _Checkpointer(path, self._writer, checkpoint_interval)
        self._checkpointer.start()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="phonemfa-store-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "normal", **options: Any) -> Store:
        """Open (creating and migrating as needed) the database at `path`; `synchronous`
        "full" syncs every commit to disk (storage.synchronous). Options: readers,
        max_batch, retry_delay, linger, checkpoint_interval."""
        path = Path(path)
        try:
            conn, key = await asyncio.to_thread(_open_writer, path, synchronous)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"{path}: {exc}") from exc
        return cls(path, conn, key, **options)

    async def close(self) -> None:
        """Commit everything queued, then close. Later writes raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        self._writer.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        self._checkpointer.stopping.set()
        await asyncio.to_thread(self._checkpointer.join)
        await asyncio.to_thread(self._readers.shutdown)
        for conn in self._reader_conns:
            conn.close()

    def number_key(self, e164: str) -> str:
        """The keyed hash of an E.164 number: equal numbers, equal keys, in this database."""
        return hmac.new(self._key, e164.encode(), hashlib.sha256).hexdigest()

    # --- plumbing ---

    def _queue(self, what: str, run: Callable[[sqlite3.Connection], Any]) -> None:
        self._put(_Write(run, what))

    def _queue_sql(self, what: str, sql: str, args: tuple[Any, ...]) -> None:
        self._put(_Write.statement(what, sql, args))

    def _put(self, write: _Write) -> None:
        if self._closed:
            self._writer.dropped += 1  # the writer has stopped: nothing else counts it now
            log.warning("store closed: %s dropped", write.what)
            return
        self._writer.put(write)

    async def _write(
        self, what: str, run: Callable[[sqlite3.Connection], T] | None, urgent: bool = True
    ) -> T:
        if self._closed:
            raise StoreUnavailable("store closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writer.put(_Write(run, what, future, urgent=urgent))
        return await future

    async def _read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("store closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._read_here, run)
        except sqlite3.Error as exc:
            if isinstance(exc, _OWN_ERRORS):  # a bug of ours, not the database's
                raise
            # I/O, a lock, and a damaged file too ("database disk image is malformed",
            # sqlite3.DatabaseError): a 503 as the writes say, not a 500 (found by review).
            raise StoreUnavailable(f"database read failed: {exc}") from exc

    def _read_here(self, run: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path, readonly=True)
            with self._reader_lock:
                self._reader_conns.append(conn)
        # One read transaction: a record and its timeline come from the same snapshot.
        conn.execute("BEGIN")
        try:
            return run(conn)
        finally:
            conn.execute("COMMIT")

    # --- calls ---

    async def create_call(self, record: CallRecord) -> None:
        """Insert a new call (and any timeline it already has); committed on return.
        ValueError if a call with this id exists."""
        r = record
        row = (
            r.id, r.tenant, r.user, r.phone_masked, r.phone_hash, r.mode, r.language, r.status,
            r.outcome, r.reason, r.origin, r.created_at, r.updated_at, r.ended_at, r.channel_id,
            r.origin_channel, r.callback_url, int(r.code_used), r.token_name,
            _json_list(r.backup_phones), _json_list(r.backup_hashes),
        )  # fmt: skip
        events = [(r.id, e.at, e.event, jsoncodec.dumps_text(e.details)) for e in r.timeline]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({_marks(21)})", row)
            conn.executemany(
                "INSERT INTO timeline (call_id, at, event, details) VALUES (?, ?, ?, ?)", events
            )

        try:
            await self._write("create_call", run)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"call {r.id} already exists") from exc

    def append_event(self, call_id: str, entry: TimelineEntry) -> None:
        """Queue a timeline entry; entries of a call keep the order they were appended in."""
        args = (call_id, entry.at, entry.event, jsoncodec.dumps_text(entry.details))
        self._queue_sql("append_event", _INSERT_TIMELINE, args)

    def set_status(
        self, call_id: str, status: str, at: float, channel_id: str | None = None
    ) -> None:
        """Queue a status change (and our channel id, when given). Ignored once the call has
        its outcome: then the status is the outcome."""
        self._queue_sql("set_status", _SET_STATUS, (status, at, channel_id, call_id))

    async def finish_call(
        self,
        call_id: str,
        outcome: str,
        reason: str | None,
        at: float,
        webhook: WebhookDelivery | None = None,
        block: tuple[str, str, str] | None = None,
    ) -> bool:
        """Record the call's outcome, its webhook and the block it causes (tenant, user,
        reason: a fraud report's) in one transaction: a crash cannot keep the report and
        lose the block. False, and nothing written, when the call already has an outcome
        (or does not exist). Announcing the block is the caller's (`announce_blocks`)."""
        if webhook is not None and webhook.call_id != call_id:
            raise ValueError("the webhook belongs to another call")

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE calls SET status = ?, outcome = ?, reason = ?, ended_at = ?, updated_at = ?"
                " WHERE id = ? AND outcome IS NULL",
                (outcome, outcome, reason, at, at, call_id),
            )
            if cur.rowcount == 0:
                return False
            if webhook is not None:
                w = webhook
                conn.execute(
                    f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}, receiver) VALUES ({_marks(10)})",
                    (w.call_id, w.tenant, w.url, w.body, w.attempts, w.next_attempt_at,
                     w.delivered_at, w.last_error, w.given_up_at, receiver_of(w.url)),
                )  # fmt: skip
            if block is not None:
                tenant, user, why = block
                conn.execute(_BLOCK_SQL, (tenant, user, why, call_id, at))
            return True

        return await self._write("finish_call", run)

    @property
    def dropped_writes(self) -> int:
        """Fire-and-forget writes (timeline steps, status changes) given up on since open:
        failed twice, refused by the database, or made after close. Never an awaited write
        such as an outcome."""
        return self._writer.dropped

    async def flush(self) -> None:
        """Wait until every write issued so far has been committed or given up on
        (StoreUnavailable if the commit it waits for failed; `dropped_writes` counts the
        fire-and-forget writes given up on)."""
        await self._write("flush", None)

    async def probe(self) -> None:
        """Write one row and commit it: only a write tells that the store can write again
        (`healthy`); while it cannot, and no call writes, the service's sweeper asks every
        CLI_SWEEP seconds, else /healthz would say `store: unavailable` until the next call
        (found by review). StoreUnavailable while it still cannot."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('write_probe', ?)",
                (str(time.time()),),
            )

        await self._write("probe", run)

    async def settled(self) -> None:
        """Like `flush`, but without hurrying the writer: returns with the commit that takes
        what is queued anyway (within `linger`). One commit fewer than `flush` for a caller
        that needs its writes on disk soon, not now."""
        await self._write("settled", None, urgent=False)

    async def ended_calls_of_entries(
        self, channel_ids: Sequence[str], since: float, before: float
    ) -> list[CallRecord]:
        """For each dialplan entry (its channel), the last ended call it asked for among those
        created in [since, before), if the dialplan has not taken its answer
        (ENTRY_ANSWERED): an older call's is never given, the last one's answered or not
        (found by review). For the rare sweep at connect time: one scan of those calls."""
        ids = list(channel_ids)

        def run(conn: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for i in range(0, len(ids), 500):  # within SQLite's limit of parameters
                chunk = ids[i : i + 500]
                rows += conn.execute(
                    f"SELECT {_CALL_COLUMNS}, EXISTS (SELECT 1 FROM timeline t"
                    " WHERE t.call_id = calls.id AND t.event = ?) FROM calls"
                    f" WHERE created_at >= ? AND created_at < ?"
                    f" AND origin_channel IN ({_marks(len(chunk))}) AND outcome IS NOT NULL"
                    " ORDER BY created_at, id",
                    (ENTRY_ANSWERED, since, before, *chunk),
                ).fetchall()
            return rows

        last: dict[str | None, tuple[CallRecord, bool]] = {}
        for row in await self._read(run):  # a channel is in one chunk, its calls oldest first
            call = _call(row[:-1])
            last[call.origin_channel] = (call, bool(row[-1]))
        return [call for call, answered in last.values() if not answered]

    async def get_call(self, call_id: str) -> CallRecord | None:
        def run(conn: sqlite3.Connection) -> CallRecord | None:
            row = conn.execute(
                f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id,)
            ).fetchone()
            if row is None:
                return None
            record = _call(row)
            record.timeline = [
                TimelineEntry(at, event, jsoncodec.loads_lenient(details))
                for at, event, details in conn.execute(
                    "SELECT at, event, details FROM timeline WHERE call_id = ? ORDER BY seq",
                    (call_id,),
                )
            ]
            return record

        return await self._read(run)

    async def list_calls(
        self,
        *,
        tenants: Collection[str] | None = None,
        user: str | None = None,
        status: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[CallRecord], str | None]:
        """Newest first, without timelines. Returns a page and the cursor of the next page
        (None on the last). Pass the same filters with the cursor. ValueError: bad cursor."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where: list[str] = []
        args: list[Any] = []
        if tenants is not None:
            where.append(f"tenant IN ({_marks(len(tenants))})" if tenants else "0")
            args.extend(tenants)
        for column, value in (("user", user), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if cursor is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(_decode_cursor(cursor))
        sql = (
            f"SELECT {_CALL_COLUMNS} FROM calls"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        args.append(limit + 1)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        page = [_call(row) for row in rows[:limit]]
        more = len(rows) > limit
        return page, _encode_cursor(page[-1].created_at, page[-1].id) if more else None

    async def in_flight(self, origin: str | None = None) -> list[CallRecord]:
        """Calls without an outcome (placed from `origin` only, when given), oldest first
        (to reconcile with Asterisk at start-up)."""
        where, args = ("AND origin = ?", (origin,)) if origin is not None else ("", ())
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_CALL_COLUMNS} FROM calls WHERE outcome IS NULL {where} "
                "ORDER BY created_at",
                args,
            ).fetchall()
        )
        return [_call(row) for row in rows]

    async def recent_calls(
        self, since: float, tenant: str | None = None
    ) -> list[tuple[str, str | None, str, float, tuple[str, ...]]]:
        """(tenant, user, phone_hash, created_at, backup_hashes) of the calls placed since
        `since` (of `tenant` only, when given). A call refused by the policy (no number key:
        nothing was dialled) is not one: it never counted for the velocity limits, and must
        not after a restart (found by review: anyone naming a user could lock them out with
        refused calls)."""
        sql = (
            "SELECT tenant, user, phone_hash, created_at, backup_hashes FROM calls"
            " WHERE created_at >= ? AND phone_hash != ''"
            + ("" if tenant is None else " AND tenant = ?")
            + " ORDER BY created_at"
        )
        args = (since,) if tenant is None else (since, tenant)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [(t, u, h, at, _strings(b)) for t, u, h, at, b in rows]

    async def purge_calls(
        self, before: float, limit: int, after: tuple[float, str] | None = None
    ) -> tuple[int, tuple[float, str] | None]:
        """Delete up to `limit` decided calls created before `before`, oldest first (past
        `after`, the position a previous batch returned), with their timeline and their
        webhook. Returns how many, and where the next batch starts (None: nothing left). A
        call whose webhook is still being tried stays until it is delivered or given up, and
        a call without an outcome until it has one: the next batches start past them, not
        reading them again. Blocks stay: they only name their call. One transaction, as one
        batch of the writer: a small `limit` keeps it short beside the calls' own writes."""
        if not 1 <= limit <= 500:  # within SQLite's limit of parameters
            raise ValueError(f"limit must be 1-500, not {limit}")
        start = after or (float("-inf"), "")

        def run(conn: sqlite3.Connection) -> tuple[int, tuple[float, str] | None]:
            rows = conn.execute(
                "SELECT created_at, id FROM calls WHERE created_at < ? AND outcome IS NOT NULL"
                " AND (created_at, id) > (?, ?)"
                " AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.call_id = calls.id"
                " AND w.delivered_at IS NULL AND w.given_up_at IS NULL)"
                " ORDER BY created_at, id LIMIT ?",
                (before, *start, limit),
            ).fetchall()
            ids = [call_id for _, call_id in rows]
            if ids:
                marks = _marks(len(ids))
                conn.execute(f"DELETE FROM timeline WHERE call_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM webhooks WHERE call_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM calls WHERE id IN ({marks})", ids)
            return len(ids), ((rows[-1][0], rows[-1][1]) if len(rows) == limit else None)

        return await self._write("purge_calls", run, urgent=False)

    async def count_calls(self) -> dict[str, int]:
        """How many calls have each status (outcomes included). Scans the calls: for checks
        and tools, not for anything that runs per call."""
        rows = await self._read(
            lambda c: c.execute("SELECT status, count(*) FROM calls GROUP BY status").fetchall()
        )
        return dict(rows)

    # --- tenant settings ---

    async def get_tenant_settings(self, tenant: str) -> dict[str, Any] | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT settings FROM tenant_settings WHERE tenant = ?", (tenant,)
            ).fetchone()
        )
        return None if row is None else dict(json.loads(row[0]))

    async def put_tenant_settings(self, tenant: str, settings: dict[str, Any]) -> None:
        text = json.dumps(settings, separators=(",", ":"))  # TypeError here, not in the writer
        await self._write(
            "put_tenant_settings",
            lambda c: c.execute(
                "INSERT INTO tenant_settings VALUES (?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET settings = excluded.settings",
                (tenant, text),
            ),
        )

    async def all_tenant_settings(self) -> dict[str, dict[str, Any]]:
        rows = await self._read(
            lambda c: c.execute("SELECT tenant, settings FROM tenant_settings").fetchall()
        )
        return {tenant: json.loads(settings) for tenant, settings in rows}

    # --- fraud blocks ---

    async def block_user(
        self,
        tenant: str,
        user: str,
        reason: str,
        call_id: str | None,
        at: float,
        *,
        announce: bool = True,
    ) -> None:
        """Block a user (a second block replaces the first: latest reason and time), then
        (`announce`) say so to the other processes on this database (`blocks_stamp`)."""
        await self._write(
            "block_user", lambda c: c.execute(_BLOCK_SQL, (tenant, user, reason, call_id, at))
        )
        if announce:
            await self.announce_blocks(user)

    async def announce_blocks(self, user: str) -> None:
        """Tell the other processes on this database that blocks changed (`blocks_stamp`),
        after the block's commit."""
        try:
            await asyncio.to_thread(self._mark_blocks_changed)
        except OSError as exc:
            log.error("the block of %s is stored, but %s cannot be written: %s", user, _BLOCKS, exc)

    def blocks_stamp(self) -> tuple[int, int] | None:
        """Changes whenever a process on this database has announced a block (None: none
        has yet). One stat, cheap enough for every call: a service beside `phonemfa call
        --config`, which blocks in a process of its own, reads the blocks again only when it
        changed (and does not announce its own: under a fraud wave it would read them all
        again for every call)."""
        try:
            st = os.stat(self._blocks_marker)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _mark_blocks_changed(self) -> None:
        # Replaced by a rename after the block's commit: a new inode each time, so the stamp
        # changes even where file times are coarse.
        marker = self._blocks_marker
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(secrets.token_bytes(8))
        os.replace(tmp, marker)

    async def unblock_user(self, tenant: str, user: str) -> bool:
        """True when the user was blocked."""

        def run(conn: sqlite3.Connection) -> bool:
            sql = "DELETE FROM blocks WHERE tenant = ? AND user = ?"
            return conn.execute(sql, (tenant, user)).rowcount > 0

        return await self._write("unblock_user", run)

    async def get_block(self, tenant: str, user: str) -> dict[str, Any] | None:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE tenant = ? AND user = ?",
                (tenant, user),
            ).fetchall()
        )
        return _block(rows[0]) if rows else None

    async def all_blocks(self) -> list[dict[str, Any]]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_BLOCK_COLUMNS} FROM blocks ORDER BY created_at, tenant, user"
            ).fetchall()
        )
        return [_block(row) for row in rows]

    # --- webhook outbox ---

    async def due_webhooks(
        self,
        now: float,
        limit: int = 100,
        but: Collection[str] = (),
        but_tenants: Collection[str] = (),
    ) -> list[WebhookDelivery]:
        """Pending deliveries whose next attempt is due, earliest first, but those to the
        receivers in `but` (callback_policy.receiver_of) and those of `but_tenants`."""
        skipped, tenants = list(but), list(but_tenants)
        sql = (
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE delivered_at IS NULL"
            " AND given_up_at IS NULL AND next_attempt_at <= ?"
            + (f" AND receiver NOT IN ({_marks(len(skipped))})" if skipped else "")
            + (f" AND tenant NOT IN ({_marks(len(tenants))})" if tenants else "")
            + " ORDER BY next_attempt_at LIMIT ?"
        )
        args = (now, *skipped, *tenants, limit)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [_webhook(row) for row in rows]

    async def next_webhook_at(self, after: float) -> float | None:
        """When the next pending delivery not yet due at `after` is due (None: none is)."""
        row = await self._read(
            lambda c: c.execute(
                "SELECT min(next_attempt_at) FROM webhooks WHERE delivered_at IS NULL"
                " AND given_up_at IS NULL AND next_attempt_at > ?",
                (after,),
            ).fetchone()
        )
        return None if row[0] is None else float(row[0])

    async def webhook_delivered(self, call_id: str, at: float) -> None:
        await self._write(
            "webhook_delivered",
            lambda c: c.execute(
                "UPDATE webhooks SET delivered_at = ?, attempts = attempts + 1,"
                " last_error = NULL WHERE call_id = ?",
                (at, call_id),
            ),
        )

    async def webhook_failed(
        self, call_id: str, error: str, next_attempt_at: float | None, at: float | None = None
    ) -> None:
        """One more failed attempt; `next_attempt_at` None gives up (at `at`, default now)."""
        given_up = (time.time() if at is None else at) if next_attempt_at is None else None
        await self._write(
            "webhook_failed",
            lambda c: c.execute(
                "UPDATE webhooks SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), given_up_at = ?"
                " WHERE call_id = ?",
                (error, next_attempt_at, given_up, call_id),
            ),
        )

    async def get_webhook(self, call_id: str) -> WebhookDelivery | None:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE call_id = ?", (call_id,)
            ).fetchone()
        )
        return None if row is None else _webhook(row)


_BLOCK_COLUMNS = "tenant, user, reason, call_id, created_at"
_INSERT_TIMELINE = "INSERT INTO timeline (call_id, at, event, details) VALUES (?, ?, ?, ?)"
_SET_STATUS = (
    "UPDATE calls SET status = ?, updated_at = ?, channel_id = COALESCE(?, channel_id)"
    " WHERE id = ? AND outcome IS NULL"
)


def _block(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(("tenant", "user", "reason", "call_id", "created_at"), row, strict=True))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


__all__ = [
    "ENTRY_ANSWERED",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CallRecord",
    "Store",
    "StoreUnavailable",
    "TimelineEntry",
    "WebhookDelivery",
    "migrate",
]
