"""How the engine tells a restarted Asterisk after a reconnect, and when calls may be dialled
(`Engine.ready`); no I/O: a scripted ARI."""

from __future__ import annotations

from typing import Any

import pytest

from phonemfa.ari import AriError, Event, Mailbox
from phonemfa.config import Config
from phonemfa.engine import Engine

CONFIG = Config.model_validate(
    {"ari": {"password": "x"}, "api": {"tokens": ["t"]}, "tenants": {"default": {}}}
)


class ScriptedAri:
    """The two requests a connect makes before the re-sync; `startup` None fails the second."""

    def __init__(self) -> None:
        self.startup: str | None = "2026-11-26T10:00:00"

    async def filter_events(self, allowed: Any) -> None:
        return None

    async def asterisk_info(self) -> dict[str, Any]:
        if self.startup is None:
            raise AriError("GET", "/asterisk/info", 500, "busy")
        return {"status": {"startup_time": self.startup}}


def scripted_engine() -> tuple[Engine, ScriptedAri]:
    engine = Engine(CONFIG)
    ari = ScriptedAri()
    engine.ari = ari  # type: ignore[assignment]
    return engine, ari


def connected_engine() -> Engine:
    """An engine whose stream has just made its first connection (not caught up yet)."""
    engine, _ = scripted_engine()
    engine.events.generation = 1
    engine.events.connected.set()
    return engine


async def connect(engine: Engine, generation: int) -> bool:
    seen: list[bool] = []

    async def hook(_: int, restarted: bool) -> None:
        seen.append(restarted)

    engine.connect_hooks[:] = [hook]
    engine.events.generation = generation  # as the stream numbers its connections
    await engine._catch_up(generation)
    return seen[0]


async def test_a_changed_start_time_is_a_restart() -> None:
    engine, ari = scripted_engine()
    assert await connect(engine, 1) is False
    ari.startup = "2026-11-26T11:00:00"
    assert await connect(engine, 2) is True
    assert engine.restarts_seen == 1


async def test_an_unread_start_time_is_forgotten_not_compared_later() -> None:
    # Found by review: a connect that could not read the start time kept the old one, and
    # the next connect, reading the new one, took the calls dialled on the new Asterisk
    # meanwhile for calls its restart dropped, and ended them.
    engine, ari = scripted_engine()
    assert await connect(engine, 1) is False
    ari.startup = None  # Asterisk restarted, and its status could not be read
    assert await connect(engine, 2) is False
    ari.startup = "2026-11-26T11:00:00"
    assert await connect(engine, 3) is False
    assert engine.restarts_seen == 0


async def test_calls_may_be_dialled_once_a_connect_has_caught_up() -> None:
    engine = connected_engine()
    assert not engine.ready.is_set()
    await engine._on_connected(1)
    assert engine.ready.is_set()
    engine._not_ready()  # the websocket dropped
    assert not engine.ready.is_set()


async def test_a_stop_said_while_catching_up_keeps_calls_from_being_dialled() -> None:
    # Found by review: Asterisk said it was stopping before the catch-up ended; the catch-up
    # then let queued calls be dialled into it.
    engine = connected_engine()
    engine.asterisk_stopping()
    await engine._on_connected(1)
    assert not engine.ready.is_set()
    engine._still_up(1)  # it kept our connection STOPPING_GRACE later: it did not stop
    assert engine.ready.is_set()


async def test_a_second_stop_on_the_same_connection_still_keeps_calls_from_being_dialled() -> None:
    # Found by review: after a stop that did not happen (STOPPING_GRACE), a real one on the
    # same connection was ignored.
    engine = connected_engine()
    await engine._on_connected(1)
    engine.asterisk_stopping()
    engine._still_up(1)
    assert engine.ready.is_set()
    engine.asterisk_stopping()
    assert not engine.ready.is_set()


@pytest.mark.parametrize("owned", [True, False])
async def test_asterisk_stopping_is_heard_on_any_channel_of_ours(owned: bool) -> None:
    # Found by review: `core stop now` ended a call at once, its line went to a queued call,
    # and that one was dialled into the stopping Asterisk (500: failed). The channel may be a
    # call's, or one no call owns (a dialplan entry).
    engine = connected_engine()
    await engine._on_connected(1)
    if owned:
        engine.router.add_channel("ours", Mailbox())
    hangup = {"type": "ChannelHangupRequest", "soft": True, "channel": {"id": "ours"}}
    engine.router.route(Event({**hangup, "cause": 0}))  # a soft hang-up of another kind
    assert engine.ready.is_set()
    engine.router.route(Event({**hangup, "cause": 4}))  # Asterisk shutting down
    assert not engine.ready.is_set()
