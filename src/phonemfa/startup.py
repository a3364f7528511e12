"""What `phonemfa serve` and `phonemfa call --config` open before taking calls: the store and a
service on it. A config value that cannot be used there is a StartupError naming its field, so
the operator reads one line saying what to fix, not a traceback."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from phonemfa.config import Config
from phonemfa.engine import Engine
from phonemfa.prompts import AudioError
from phonemfa.service import CallService
from phonemfa.store import Store, StoreUnavailable

__all__ = ["StartupError", "hold_serve_lock", "open_service"]

_SHIPPED_HINT = "run `make prompts`; install asterisk/sounds as <sounds.dir>/phonemfa"


class StartupError(Exception):
    """A config field whose value cannot be used: ``field: problem``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


async def open_service(config: Config) -> CallService:
    """The store at storage.path and a service on it (not started); close ``service.store``
    when done. Raises StartupError for an unusable sounds.dir or storage.path."""
    # The engine first: an unusable sounds.dir does not leave a new database behind.
    try:
        engine = Engine(config)
    except AudioError as exc:  # the shipped prompts' manifest, read from sounds.dir
        raise StartupError("sounds.dir", f"{exc} ({_SHIPPED_HINT})") from exc
    try:
        store = await Store.open(config.storage.path)
    except StoreUnavailable as exc:
        raise StartupError("storage.path", f"cannot open the database {exc}") from exc
    return CallService(config, store, engine)


def hold_serve_lock(database: Path) -> IO[str]:
    """One `phonemfa serve` per database: a second one would settle the first one's calls as
    interrupted when it starts, and send their webhooks too. The lock lasts while the
    returned file is open, and goes with the process however it ends (SIGKILL included).
    `phonemfa call` shares the database on purpose and takes no lock."""
    database = database.resolve()  # one lock per file, however the path reaches it
    path = database.with_name(database.name + ".serve-lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.open("a")
    except OSError as exc:
        raise StartupError("storage.path", f"cannot create {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StartupError(
            "storage.path", f"another `phonemfa serve` is using {database} (it holds {path})"
        ) from None
    return lock
