"""What `phonemfa serve` and `phonemfa call --config` open before taking calls: the store and a
service on it. A config value that cannot be used there is a StartupError naming its field, so
the operator reads one line saying what to fix, not a traceback."""

from __future__ import annotations

from phonemfa.config import Config
from phonemfa.engine import Engine
from phonemfa.prompts import AudioError
from phonemfa.service import CallService
from phonemfa.store import Store, StoreUnavailable

__all__ = ["StartupError", "open_service"]

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
