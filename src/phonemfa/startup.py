"""What `phonemfa serve` and `phonemfa call --config` open before taking calls: the store and a
service on it. A config value that cannot be used there is a StartupError naming its field, so
the operator reads one line saying what to fix, not a traceback."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from phonemfa.config import Config, config_line
from phonemfa.engine import Engine
from phonemfa.prompts import AudioError
from phonemfa.service import CallService
from phonemfa.store import Store, StoreUnavailable

__all__ = [
    "StartupError",
    "cli_calls_running",
    "hold_cli_lock",
    "hold_serve_lock",
    "open_service",
    "start_service",
    "raise_open_files_limit",
]

# Beyond this many open files a process gains nothing here (and Linux refuses more than
# fs.nr_open, 1048576 by default).
OPEN_FILES_CAP = 1 << 20
# Below this, say so at start: each API client waiting for an outcome holds a socket, and so
# does each ARI request in flight.
OPEN_FILES_ENOUGH = 4096

_SHIPPED_HINT = "run `make prompts`; install asterisk/sounds as <sounds.dir>/phonemfa"


class StartupError(Exception):
    """A config field whose value cannot be used: ``field: problem``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def located(self, config_file: str | os.PathLike[str]) -> str:
        """``file:line: field: problem``, the line where the file sets the field (or its
        section's, for a default), as a config error is written."""
        line = config_line(config_file, self.field.split("."))
        return f"{os.fspath(config_file)}:{line}: {self}" if line is not None else str(self)


async def start_service(service: CallService, **options: bool) -> None:
    """`service.start(**options)`; a store that cannot be read then (its tenants, blocks,
    calls left in progress) is a StartupError naming storage.path, one line to fix, not a
    traceback (found by review)."""
    try:
        await service.start(**options)
    except StoreUnavailable as exc:
        raise StartupError("storage.path", f"cannot read the database: {exc}") from exc


async def open_service(config: Config, *, holding: IO[str] | None = None) -> CallService:
    """The store at storage.path and a service on it (not started); close ``service.store``
    when done. Raises StartupError for an unusable sounds.dir or storage.path. `holding`: a
    lock taken for it (`hold_serve_lock`, `hold_cli_lock`), let go if it cannot be opened."""
    try:
        # The engine first: an unusable sounds.dir does not leave a new database behind.
        try:
            engine = Engine(config)
        except AudioError as exc:  # the shipped prompts' manifest, read from sounds.dir
            raise StartupError("sounds.dir", f"{exc} ({_SHIPPED_HINT})") from exc
        try:
            store = await Store.open(config.storage.path, synchronous=config.storage.synchronous)
        except StoreUnavailable as exc:
            raise StartupError("storage.path", f"cannot open the database {exc}") from exc
    except BaseException:
        if holding is not None:
            holding.close()
        raise
    return CallService(config, store, engine)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit, and return it.
    Service managers start processes at 1024 (systemd's default soft limit, with a hard
    one of 524288): at about a thousand clients waiting for outcomes, the API would drop
    connections and the ARI requests of calls in progress would fail ("Too many open
    files"), interrupting them. Raising the soft limit is what the hard one is for (Go's
    runtime does the same at start); epoll, which asyncio and uvloop use, has no limit of
    its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_CAP)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):  # beyond fs.nr_open: keep what we have
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


def hold_serve_lock(database: Path) -> IO[str]:
    """One `phonemfa serve` per database: a second one would settle the first one's calls as
    interrupted when it starts, and send their webhooks too. The lock lasts while the
    returned file is open, and goes with the process however it ends (SIGKILL included).
    `phonemfa call` shares the database on purpose (see `hold_cli_lock`)."""
    database, path, lock = _lock_file(database, ".serve-lock")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StartupError(
            "storage.path", f"another `phonemfa serve` is using {database} (it holds {path})"
        ) from None
    return lock


def hold_cli_lock(database: Path) -> IO[str]:
    """Held (shared) by `phonemfa call --config` while its call runs, so that a `phonemfa
    serve` starting on the same database leaves that call to it instead of settling it as
    interrupted while the person is still on the line (`cli_calls_running`). Waits while a
    starting service settles the calls left in progress (milliseconds)."""
    _, _, lock = _lock_file(database, ".cli-lock")
    fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


@contextlib.contextmanager
def cli_calls_running(database: Path) -> Iterator[bool]:
    """For a starting service, around the settling of calls left in progress: True when a
    `phonemfa call` holds `hold_cli_lock` (its calls are its own to finish). When False, no
    `phonemfa call` can start a call until the block ends, so none is settled by mistake."""
    _, _, lock = _lock_file(database, ".cli-lock")
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield True
        else:
            yield False  # the lock goes with the file


def _lock_file(database: Path, suffix: str) -> tuple[Path, Path, IO[str]]:
    database = database.resolve()  # one lock per file, however the path reaches it
    path = database.with_name(database.name + suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return database, path, path.open("a")
    except OSError as exc:
        raise StartupError("storage.path", f"cannot create {path}: {exc.strerror}") from exc
