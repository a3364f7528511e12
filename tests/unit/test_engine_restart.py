"""How the engine tells a restarted Asterisk after a reconnect, and when calls may be dialled
(`Engine.ready`); no I/O: a scripted ARI."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import phonemfa.engine as engine_module
from phonemfa.ari import AriError, Event, Mailbox
from phonemfa.config import Config
from phonemfa.engine import Engine
from phonemfa.outcomes import Outcome

CONFIG = Config.model_validate(
    {"ari": {"password": "x"}, "api": {"tokens": ["t"]}, "tenants": {"default": {}}}
)


class ScriptedAri:
    """The two requests a connect makes before the re-sync; `startup` None fails the second.
    And the probe channel (Engine.refuses_channels): refused while `refusing`."""

    def __init__(self) -> None:
        self.startup: str | None = "2026-11-26T10:00:00"
        self.refusing = False
        self.probes: list[str] = []  # channels made, then hung up
        self.hung_up: list[str] = []

    async def create_channel(self, endpoint: str, channel_id: str, **kw: Any) -> dict[str, Any]:
        if self.refusing:
            raise AriError("POST", "/channels/create", 500, "Allocation failed")
        self.probes.append(endpoint)
        return {"id": channel_id}

    async def hangup(self, channel_id: str) -> bool:
        self.hung_up.append(channel_id)
        return True

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
    ari: ScriptedAri = engine.ari  # type: ignore[assignment]
    ari.refusing = True
    engine.asterisk_stopping()
    await engine._on_connected(1)
    assert not engine.ready.is_set()
    assert await engine._accepting_again(1) is False  # still refusing channels: stopping
    assert not engine.ready.is_set()
    ari.refusing = False  # `core abort shutdown`: it takes channels again
    assert await engine._accepting_again(1) is True
    assert engine.ready.is_set()
    assert ari.probes == ["Local/probe@phonemfa-probe"]


async def test_a_stop_called_off_is_noticed_by_asking_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "STOPPING_RECHECK", 0.01)
    engine = connected_engine()
    ari: ScriptedAri = engine.ari  # type: ignore[assignment]
    await engine._on_connected(1)
    ari.refusing = True
    engine.asterisk_stopping()
    await asyncio.sleep(0.05)
    assert not engine.ready.is_set()
    ari.refusing = False
    await asyncio.wait_for(engine.ready.wait(), 5)
    assert not engine._tasks  # the watcher is done


async def test_taking_channels_again_before_the_catch_up_ends_waits_for_it() -> None:
    engine = connected_engine()
    engine.asterisk_stopping()
    assert await engine._accepting_again(1) is True
    assert not engine.ready.is_set()  # the connect has not caught up yet
    await engine._on_connected(1)
    assert engine.ready.is_set()


async def test_a_second_stop_on_the_same_connection_still_keeps_calls_from_being_dialled() -> None:
    # Found by review: after a stop that did not happen, a real one on the same connection
    # was ignored.
    engine = connected_engine()
    await engine._on_connected(1)
    engine.asterisk_stopping()
    assert await engine._accepting_again(1) is True
    assert engine.ready.is_set()
    engine.asterisk_stopping()
    assert not engine.ready.is_set()


@pytest.mark.parametrize("refusing", [True, False])
async def test_a_refused_channel_holds_dialling_only_when_asterisk_refuses_every_channel(
    refusing: bool,
) -> None:
    # `core stop gracefully` lets calls end but refuses new channels, with the 500 that a
    # wrong trunk.endpoint gets too: a probe channel tells the two apart.
    engine = connected_engine()
    ari: ScriptedAri = engine.ari  # type: ignore[assignment]
    await engine._on_connected(1)
    ari.refusing = refusing
    assert await engine.refused_channel() is refusing
    assert engine.ready.is_set() is not refusing


async def test_a_stop_heard_on_a_connection_that_drops_is_left_to_the_next_connect() -> None:
    engine = connected_engine()
    await engine._on_connected(1)
    engine.asterisk_stopping()
    engine.events.connected.clear()  # Asterisk stopped: the websocket dropped
    engine.events.generation = 2
    assert await engine._accepting_again(1) is False
    assert not engine.ready.is_set()
    engine.events.connected.set()
    await engine._on_connected(2)
    assert engine.ready.is_set()


async def test_the_probe_channel_is_nobody_s_business_and_never_left_behind() -> None:
    # Found by review: a probe cancelled between its channel's creation and its hang-up (a
    # call cancelled, a shutdown) left that channel in Stasis, keeping any later graceful
    # stop waiting: nothing else hangs up a channel whose events the engine drops.
    seen: list[Event] = []
    engine = connected_engine()
    ari: ScriptedAri = engine.ari  # type: ignore[assignment]
    engine.on_unrouted = seen.append
    start = {"type": "StasisStart", "args": [], "channel": {"id": "phonemfa-probe-0a1b"}}
    engine.router.route(Event(start))
    engine.router.route(Event({**start, "type": "StasisEnd"}))
    await asyncio.sleep(0)
    assert (seen, ari.hung_up) == ([], ["phonemfa-probe-0a1b"])
    engine.router.route(Event({**start, "channel": {"id": "left-by-an-earlier-run"}}))
    assert [e.channel_id for e in seen] == ["left-by-an-earlier-run"]


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


class StubFlow:
    def __init__(self, dialled: bool, rung: bool, chain_pending: bool = False) -> None:
        self.dialled, self.rung, self.chain_pending = dialled, rung, chain_pending
        self.stopped: tuple[Outcome, str] | None = None

    def stop(self, outcome: Outcome, reason: str) -> None:
        self.stopped = (outcome, reason)


async def test_a_shutdown_stops_every_call_whose_phone_was_not_asked_to_ring() -> None:
    # Found by review: a call making its channel (or asking whether a stopping Asterisk
    # takes channels) counted as dialled, so a shutdown let it be; refused, it waited again
    # and could be dialled during the drain.
    engine, _ = scripted_engine()
    flows = {
        "waiting": StubFlow(dialled=False, rung=False),
        "making_its_channel": StubFlow(dialled=True, rung=False),
        "ringing": StubFlow(dialled=True, rung=True),
    }
    engine.flows = flows  # type: ignore[assignment]
    assert engine.stop_all(Outcome.INTERRUPTED, "shutdown", dialled=False) == 2
    assert [name for name, f in flows.items() if f.stopped] == ["waiting", "making_its_channel"]
    assert engine.stop_all(Outcome.INTERRUPTED, "asterisk_restarted", dialled=True) == 2


async def test_an_asterisk_restart_leaves_a_chain_between_legs_to_go_on() -> None:
    # A fallback chain whose last leg is decided has no channel left for a restart to drop:
    # its next leg waits for Asterisk. A call in a leg is ended.
    engine, _ = scripted_engine()
    flows = {
        "in_a_leg": StubFlow(dialled=True, rung=True),
        "between_legs": StubFlow(dialled=True, rung=True, chain_pending=True),
    }
    engine.flows = flows  # type: ignore[assignment]
    assert engine.stop_all(Outcome.INTERRUPTED, "asterisk_restarted", dialled=True) == 1
    assert [name for name, f in flows.items() if f.stopped] == ["in_a_leg"]
    assert flows["in_a_leg"].stopped == (Outcome.INTERRUPTED, "asterisk_restarted")
