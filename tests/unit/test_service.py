"""CallService's bookkeeping around a call, on a real store and no Asterisk: what is shown
when another process settled the call first, what a call settled at start-up sends, and a
dialplan entry that hangs up while its call is being set up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import phonemfa.server as server_module
import phonemfa.service as service_module
from phonemfa.ari import AriError, AriNotFound, AriUnavailable, Event
from phonemfa.config import Config, FraudSettings, Limits
from phonemfa.numbers import parse_number
from phonemfa.outcomes import Outcome
from phonemfa.service import (
    CallService,
    LiveCall,
    LiveCalls,
    RateLimited,
    ServiceUnavailable,
    StartCall,
)
from phonemfa.store import CallRecord, Store, StoreUnavailable, TimelineEntry
from phonemfa.tollfraud import RefusalCode
from tests.unit.test_store import record


def _config(db: Path) -> Config:
    return Config.model_validate(
        {
            "ari": {"password": "x", "url": "http://127.0.0.1:9"},  # never connected
            "api": {"tokens": ["t"]},
            "tenants": {"default": {"region": "US"}},
            "storage": {"path": str(db)},
        }
    )


@contextlib.asynccontextmanager
async def _cli_call_settled_by_a_starting_service(
    tmp_path: Path,
) -> AsyncIterator[tuple[CallService, CallRecord, Store]]:
    """`phonemfa call` shares the service's store: its call is in progress when a service
    starts on that store and settles it as interrupted (a service that does not see the
    CLI's lock: an older version's). Yields the CLI's service, its call and the starting
    service's store."""
    db = tmp_path / "phonemfa.db"
    cli_store = await Store.open(db)
    service_store = await Store.open(db)
    try:
        cli = CallService(_config(db), cli_store)
        call = record("cli-call", origin="cli")
        await cli_store.create_call(call)
        await CallService(_config(db), service_store)._settle_previous_run()
        yield cli, call, service_store
    finally:
        await cli_store.close()
        await service_store.close()


async def test_an_outcome_the_store_already_has_is_the_one_shown(tmp_path: Path) -> None:
    # The person then presses '#'. The CLI must not print (and exit with) `approved` while
    # the record, the API and any webhook say `interrupted`.
    async with _cli_call_settled_by_a_starting_service(tmp_path) as (cli, call, service_store):
        live = LiveCall(call)

        await cli._finish(live, Outcome.APPROVED, None)

        stored = await service_store.get_call("cli-call")
        assert stored is not None
        assert (stored.outcome, stored.reason) == ("interrupted", "service_restarted")
        assert (call.outcome, call.reason) == (stored.outcome, stored.reason)
        assert live.done.is_set()


async def test_a_fraud_report_blocks_the_user_even_when_the_record_kept_another_outcome(
    tmp_path: Path,
) -> None:
    async with _cli_call_settled_by_a_starting_service(tmp_path) as (cli, call, service_store):
        await cli._finish(LiveCall(call), Outcome.FRAUD_REPORTED, None)

        assert call.outcome == "interrupted"  # the record's outcome is the one shown
        assert [b["user"] for b in await service_store.all_blocks()] == ["alice"]


async def test_a_starting_service_leaves_the_calls_of_a_running_cli_to_it(tmp_path: Path) -> None:
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    try:
        await store.create_call(record("cli-call", origin="cli"))
        await store.create_call(record("api-call", origin="api"))

        await CallService(_config(db), store)._settle_previous_run(leave_cli_calls=True)

        cli_call, api_call = await store.get_call("cli-call"), await store.get_call("api-call")
        assert cli_call is not None and cli_call.outcome is None
        assert api_call is not None and api_call.outcome == "interrupted"
    finally:
        await store.close()


async def test_a_block_holds_for_every_spelling_of_the_user(tmp_path: Path) -> None:
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    try:
        service = CallService(_config(db), store)
        service.accepting = True
        await service.block_user("default", "Alice", "fraud_reported", None)

        call = await service.start_call(StartCall(phone="+1 425 555 0100", user="ALI\u200bCE "))

        assert (call.user, call.outcome, call.reason) == ("alice", "blocked", "user_blocked")
        assert await service.get_block("default", "aLiCe") is not None
        assert await service.unblock_user("default", "ALICE")
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _service_beside_a_cli(tmp_path: Path) -> AsyncIterator[tuple[CallService, Store]]:
    """A service taking calls (not started: no ARI) and the store of a `phonemfa call
    --config` process on the same database. Calls it placed are cancelled afterwards."""
    db = tmp_path / "phonemfa.db"
    store, cli_store = await Store.open(db), await Store.open(db)
    service = CallService(_config(db), store)
    service.accepting = True
    try:
        yield service, cli_store
    finally:
        service.engine.stop_all(Outcome.CANCELLED, "test")
        await asyncio.gather(*(lc.task for lc in service.live.values() if lc.task))
        await store.close()
        await cli_store.close()


def _counting_reads(
    store: Store, then: Callable[[int], Awaitable[None]] | None = None
) -> list[int]:
    """Count `store.all_blocks` reads (the list's one item); `then(n)` runs after read n."""
    reads = [0]
    all_blocks = store.all_blocks

    async def counted() -> list[dict[str, Any]]:
        reads[0] += 1
        blocks = await all_blocks()
        if then is not None:
            await then(reads[0])
        return blocks

    store.all_blocks = counted  # type: ignore[method-assign]
    return reads


async def test_a_block_made_by_another_process_refuses_the_next_call(tmp_path: Path) -> None:
    # `phonemfa call --config` runs a service of its own on the same database: a fraud
    # reported there blocks the user for the running service too, whose API would otherwise
    # place the next call and let '#' approve it.
    async with _service_beside_a_cli(tmp_path) as (serve, cli_store):
        cli = CallService(_config(tmp_path / "phonemfa.db"), cli_store)
        await cli.block_user("default", "alice", "fraud_reported", "c1")

        call = await serve.start_call(StartCall(phone="+1 425 555 0100", user="Alice"))

        assert (call.outcome, call.reason) == ("blocked", "user_blocked")
        assert serve.live == {} and serve.engine.flows == {}  # nothing dialled


async def test_blocks_that_cannot_be_read_refuse_the_call(tmp_path: Path) -> None:
    async with _service_beside_a_cli(tmp_path) as (service, cli_store):
        await cli_store.block_user("default", "bob", "fraud_reported", None, 0.0)

        async def unreadable() -> None:
            raise StoreUnavailable("database read failed: disk I/O error")

        service.store.all_blocks = unreadable  # type: ignore[assignment]
        with pytest.raises(ServiceUnavailable) as refused:
            await service.start_call(StartCall(phone="+1 425 555 0100", user="alice"))

        assert refused.value.reason == "store_unavailable"
        assert service.live == {} and await service.store.list_calls() == ([], None)


async def test_blocks_are_read_again_only_when_one_was_added(tmp_path: Path) -> None:
    async with _service_beside_a_cli(tmp_path) as (service, cli_store):
        reads = _counting_reads(service.store)
        for user in ("u1", "u2"):
            await service.start_call(StartCall(phone="+1 425 555 0100", user=user))
        assert reads == [0]  # no block anywhere: no read

        await cli_store.block_user("default", "carol", "fraud_reported", None, 0.0)
        await service.start_call(StartCall(phone="+1 425 555 0100", user="u3"))
        call = await service.start_call(StartCall(phone="+1 425 555 0100", user="carol"))

        assert reads == [1] and (call.outcome, call.reason) == ("blocked", "user_blocked")


async def test_the_service_does_not_announce_its_own_blocks_a_cli_does(tmp_path: Path) -> None:
    # Announcing its own would make the service read every block again at each next call:
    # under a wave of fraud reports, once per call (make bench's mix: 1.7 ms more per call).
    async with _service_beside_a_cli(tmp_path) as (service, cli_store):
        await service.start()  # ARI is never reached (127.0.0.1:9): start does not need it
        try:
            await service.block_user("default", "frank", "fraud_reported", None)
            assert service.store.blocks_stamp() is None

            cli = CallService(_config(tmp_path / "phonemfa.db"), cli_store)
            await cli.block_user("default", "gina", "fraud_reported", None)
            assert service.store.blocks_stamp() is not None
        finally:
            await service.shutdown(grace=0)


async def test_an_unblock_during_the_read_of_the_blocks_is_not_undone(tmp_path: Path) -> None:
    # The blocks are read (another process added one) while an operator unblocks dave: what
    # the read found for dave is no longer so, and his next call is placed.
    async with _service_beside_a_cli(tmp_path) as (service, cli_store):
        await service.block_user("default", "dave", "fraud_reported", None)
        await cli_store.block_user("default", "erin", "fraud_reported", None, 0.0)

        async def unblock_dave(read: int) -> None:
            if read == 1:
                await service.unblock_user("default", "dave")

        reads = _counting_reads(service.store, then=unblock_dave)
        erin = await service.start_call(StartCall(phone="+1 425 555 0100", user="erin"))
        dave = await service.start_call(StartCall(phone="+1 425 555 0100", user="dave"))

        assert reads == [2]  # read again after the unblock
        assert (erin.outcome, dave.outcome) == ("blocked", None)


async def test_a_call_settled_at_start_up_sends_its_whole_timeline(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db")
    try:
        call = record("old", callback_url="https://hooks.example/x")
        call.timeline = [TimelineEntry(1.0, "dialing", {}), TimelineEntry(2.0, "answered", {})]
        await store.create_call(call)

        await CallService(_config(tmp_path / "phonemfa.db"), store)._settle_previous_run()

        hook = await store.get_webhook("old")
        assert hook is not None
        sent = [entry["event"] for entry in json.loads(hook.body)["timeline"]]
        assert sent == ["dialing", "answered"]
    finally:
        await store.close()


class _WaitingFlow:
    """Stands in for a flow: records stop() and runs until stopped."""

    def __init__(self) -> None:
        self.channel_id = "callee"
        self.dialled = False
        self.stopped: list[tuple[Outcome, str]] = []
        self._done = asyncio.Event()

    def stop(self, outcome: Outcome, reason: str) -> None:
        self.stopped.append((outcome, reason))
        self._done.set()

    async def run(self) -> Outcome:
        await self._done.wait()
        return Outcome.CANCELLED


async def test_an_entry_hanging_up_while_its_call_is_set_up_cancels_it(tmp_path: Path) -> None:
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    service = CallService(_config(db), store)
    service.accepting = True
    flows: list[_WaitingFlow] = []

    def make_flow(request: Any, observer: Any, **_: Any) -> _WaitingFlow:
        flow = _WaitingFlow()
        service.engine.flows[request.call_id] = flow  # type: ignore[assignment]
        flows.append(flow)
        return flow

    service.engine.flow = make_flow  # type: ignore[method-assign]
    create_call = store.create_call

    async def create_then_hang_up(call: Any) -> None:
        await create_call(call)
        # The caller in the dialplan hangs up while its call's record is being written.
        for kind in ("StasisEnd", "ChannelDestroyed"):
            service._on_unrouted(Event({"type": kind, "channel": {"id": "entry-1"}}))

    store.create_call = create_then_hang_up  # type: ignore[method-assign]
    try:
        start = Event(
            {
                "type": "StasisStart",
                "channel": {"id": "entry-1"},
                "args": ["verify", "+1 425 555 0100", "alice"],
            }
        )
        service._on_unrouted(start)
        async with asyncio.timeout(5):
            while not flows or not flows[0].stopped:
                await asyncio.sleep(0.01)
        assert flows[0].stopped == [(Outcome.CANCELLED, "caller_hung_up")]
        assert "entry-1" not in service._entries
    finally:
        for flow in flows:
            flow.stop(Outcome.CANCELLED, "test over")
        await asyncio.sleep(0.05)
        await store.close()


@contextlib.asynccontextmanager
async def _taking_calls(
    tmp_path: Path, config: Config | None = None
) -> AsyncIterator[tuple[CallService, Store]]:
    """A service taking calls on a store of its own, with no Asterisk: its calls wait for
    one, and are stopped (and the store closed) at the end."""
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    service = CallService(config or _config(db), store)
    service.accepting = True
    try:
        yield service, store
    finally:
        for flow in list(service.engine.flows.values()):
            flow.stop(Outcome.CANCELLED, "test over")
        await asyncio.sleep(0.05)
        await store.close()


async def test_backup_numbers_are_on_record_and_still_count_after_a_restart(
    tmp_path: Path,
) -> None:
    async with _taking_calls(tmp_path) as (service, store):
        call = await service.start_call(
            StartCall(phone="+1 425 555 0130", user="alice", backup_phones=("425 555 0177",))
        )
        assert call.backup_phones == ("+1*******77",)
        stored = await store.get_call(call.id)
        assert stored is not None
        assert stored.backup_phones == ("+1*******77",)
        assert stored.backup_hashes == (store.number_key("+14255550177"),)
        # The call waits for an Asterisk that never answers: cancel it.
        await service.cancel_call(call.id, wait=5)

        # A new process on the same store: the backup number was counted (default per-number
        # limit: 5 calls in 5 minutes), so four more calls to it pass and the sixth does not.
        restarted = CallService(service.config, store)
        await restarted._seed_limits()
        backup = parse_number("+1 425 555 0177")
        now = time.time()
        for _ in range(4):
            assert restarted.guard.admit("default", backup, None, now) is None
        refusal = restarted.guard.check("default", backup, None, now)
        assert refusal is not None and refusal.code is RefusalCode.RATE_LIMITED_NUMBER


async def test_after_a_restart_refused_calls_lock_nobody_out_and_long_windows_still_hold(
    tmp_path: Path,
) -> None:
    # Found by review: calls the policy refused (a premium-rate number) counted for the
    # user's limits once the service restarted; and a week's limit forgot calls older than a
    # day.
    config = _config(tmp_path / "phonemfa.db")
    week = [{"count": 1, "window": 7 * 86400}]
    limits = {"per_user": [{"count": 2, "window": 86400}], "per_number": week, "per_tenant": []}
    config.tenants["default"] = config.tenants["default"].model_copy(
        update={"limits": Limits.model_validate(limits)}
    )
    async with _taking_calls(tmp_path, config) as (service, store):
        for _ in range(3):
            refused = await service.start_call(StartCall(phone="+1 900 555 0199", user="bob"))
            assert refused.outcome == "blocked"
        placed = record(
            "two-days-ago",
            user="carol",
            phone_hash=store.number_key("+14255550130"),
            created_at=time.time() - 2 * 86400,
            outcome="approved",
        )
        await store.create_call(placed)
        restarted = CallService(config, store)
        await restarted._seed_limits()
        now = time.time()
        assert restarted.guard.check("default", parse_number("+1 425 555 0140"), "bob", now) is None
        refusal = restarted.guard.check("default", parse_number("+1 425 555 0130"), "dan", now)
        assert refusal is not None and refusal.code is RefusalCode.RATE_LIMITED_NUMBER


async def test_limits_changed_at_run_time_still_count_the_calls_already_placed(
    tmp_path: Path,
) -> None:
    # An operator who tightens the limits (toll fraud under way) must not hand out a fresh
    # allowance: the new limits count the calls already placed, as after a restart.
    async with _taking_calls(tmp_path) as (service, _):
        for i in range(3):
            await service.start_call(StartCall(phone=f"+1 425 555 01{i}0", user="alice"))
        three = Limits.model_validate({"per_user": [{"count": 3, "window": 300}]})
        tighter = service.tenants["default"].model_copy(update={"limits": three})
        await service.update_tenant("default", tighter)
        with pytest.raises(RateLimited) as refused:
            await service.start_call(StartCall(phone="+1 425 555 0190", user="alice"))
        assert refused.value.code == RefusalCode.RATE_LIMITED_USER.value


async def test_limits_changed_while_calls_are_being_recorded_count_them_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: the new limits counted the calls the store had; calls admitted whose
    # records were still on their way to it counted in neither the old limits (dropped)
    # nor the new ones: tightening them during toll fraud let those through again.
    async with _taking_calls(tmp_path) as (service, _):
        release = asyncio.Event()
        create = Store.create_call

        async def slow_create(self: Store, record: CallRecord) -> None:
            await release.wait()
            await create(self, record)

        monkeypatch.setattr(Store, "create_call", slow_create)
        starting = [
            asyncio.ensure_future(
                service.start_call(StartCall(phone=f"+1 425 555 01{i}0", user="alice"))
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.05)  # admitted, their records waiting for the store
        three = Limits.model_validate({"per_user": [{"count": 3, "window": 300}]})
        tighter = service.tenants["default"].model_copy(update={"limits": three})
        await service.update_tenant("default", tighter)
        release.set()
        await asyncio.gather(*starting)
        with pytest.raises(RateLimited) as refused:
            await service.start_call(StartCall(phone="+1 425 555 0190", user="alice"))
        assert refused.value.code == RefusalCode.RATE_LIMITED_USER.value


async def test_a_stored_fraud_code_the_prompts_do_not_announce_gives_way_to_theirs(
    tmp_path: Path,
) -> None:
    # Settings saved before such a code was refused: the callers are told 0#, so 0# it is
    # (a 0# read as a wrong answer would lose their fraud report).
    async with _taking_calls(tmp_path) as (service, _):
        stored = service.tenants["default"].model_copy(update={"fraud": FraudSettings(code="9#")})
        assert service._usable("default", stored).fraud.code == "0#"
        off = stored.model_copy(update={"fraud": FraudSettings(code="9#", enabled=False)})
        assert service._usable("default", off).fraud.code == "9#"
        # With its own fraud prompts in some language, those callers are told 9#: it stays
        # (found by review: 0# made their 9# a wrong answer).
        recorded = {m: f"sound:custom/{m}" for m in ("greeting_fraud", "code_prompt_fraud")}
        partial = stored.model_copy(update={"prompts": {"en": recorded}})
        assert service._usable("default", partial).fraud.code == "9#"


async def test_a_backup_over_its_limit_is_left_out_of_the_chain(tmp_path: Path) -> None:
    config = _config(tmp_path / "phonemfa.db")
    one_a_minute = [{"count": 1, "window": 60}]
    limits = {"per_number": one_a_minute, "per_user": [], "per_tenant": []}
    tenant = config.tenants["default"].model_copy(
        update={"limits": type(config.tenants["default"].limits).model_validate(limits)}
    )
    config = config.model_copy(update={"tenants": {"default": tenant}})
    async with _taking_calls(tmp_path, config) as (service, store):
        await service.start_call(StartCall(phone="+1 425 555 0110"))  # the office's line
        call = await service.start_call(
            StartCall(phone="+1 425 555 0130", backup_phones=("+1 425 555 0110", "425 555 0177"))
        )
        # Not refused: the office's line is left out, the other backup stays.
        assert call.backup_phones == ("+1*******77",)
        skipped = [e.details for e in call.timeline if e.event == "backup_skipped"]
        assert skipped == [{"field": "backup_phones[0]", "reason": "rate_limited_number"}]
        legs = service.engine.flows[call.id]._legs
        assert [leg.field for leg in legs] == ["backup_phones[1]"]
        stored = await store.get_call(call.id)
        assert stored is not None and [e.event for e in stored.timeline] == ["backup_skipped"]


async def test_a_chain_dials_no_next_leg_for_a_user_blocked_meanwhile(tmp_path: Path) -> None:
    async with _taking_calls(tmp_path) as (service, _):
        call = await service.start_call(
            StartCall(phone="+1 425 555 0130", user="alice", backup_phones=("425 555 0177",))
        )
        flow = service.engine.flows[call.id]
        assert flow.next_leg_refused is not None and flow.next_leg_refused() is None
        # A fraud report on another call of alice's blocks her: this call's next number is
        # not dialled (flow._next_leg ends the call with this outcome).
        await service.block_user("default", "Alice", "fraud_reported", None)
        assert flow.next_leg_refused() == (Outcome.BLOCKED, "user_blocked")
        service.engine.stop_all(Outcome.INTERRUPTED, "shutdown", dialled=False)
        assert flow.next_leg_refused() == (Outcome.INTERRUPTED, "shutdown")


class _EntryAri:
    """The ARI requests a dialplan entry's answer takes; `timeouts` of them time out."""

    def __init__(self, channels: list[str], timeouts: int = 0) -> None:
        self.channels = channels
        self.timeouts = timeouts
        self.requests: list[tuple[str, ...]] = []
        # Where Asterisk shows each channel (app, data); by default an outbound leg of ours.
        self.dialplan: dict[str, tuple[str, str]] = {}

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        self.requests.append(("set", channel_id, name, value))
        if self.timeouts:
            self.timeouts -= 1
            raise AriUnavailable("POST", "/channels/x/variable", 0, "timed out")

    async def continue_in_dialplan(self, channel_id: str) -> None:
        self.requests.append(("continue", channel_id))

    async def get_application(self) -> dict[str, Any]:
        return {"channel_ids": self.channels}

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        self.requests.append(("get", channel_id))
        if channel_id not in self.channels:
            raise AriNotFound("GET", f"/channels/{channel_id}", 404, "Channel not found")
        app_name, app_data = self.dialplan.get(channel_id, ("Stasis", "phonemfa,call,c0"))
        return _in_dialplan(app_name, app_data) | {"id": channel_id}

    async def hangup(self, channel_id: str) -> bool:
        self.requests.append(("hangup", channel_id))
        return True


@contextlib.asynccontextmanager
async def _entries_served(
    tmp_path: Path, channels: list[str], timeouts: int = 0, calls: tuple[CallRecord, ...] = ()
) -> AsyncIterator[tuple[CallService, _EntryAri]]:
    """A service whose ARI is `_EntryAri`, on a store holding `calls` (settled at start)."""
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    try:
        for call in calls:
            await store.create_call(call)
        service = CallService(_config(db), store)
        await service._settle_previous_run()
        ari = _EntryAri(channels, timeouts)
        service.engine.ari = ari  # type: ignore[assignment]
        yield service, ari
    finally:
        await store.close()


async def test_an_answer_asterisk_did_not_take_is_given_at_the_next_connect(
    tmp_path: Path,
) -> None:
    # Found by review: the entry was forgotten, and the next connect hung the caller up
    # instead of giving the dialplan its (approved) answer.
    call = record("c1", origin="dialplan", origin_channel="entry-1", outcome="approved")
    async with _entries_served(tmp_path, ["entry-1"], timeouts=1, calls=(call,)) as (service, ari):
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)  # Asterisk times out (not connected: no retry)
        assert ari.requests == [("set", "entry-1", "PHONEMFA_OUTCOME", "approved")]
        ari.requests.clear()
        await service._on_connected(2, False)
        assert ari.requests[0] == ("set", "entry-1", "PHONEMFA_OUTCOME", "approved")
        assert ari.requests[-1] == ("continue", "entry-1")


async def test_an_answer_asterisk_did_not_take_is_asked_again_while_connected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: a loaded Asterisk timed out the answer's requests while the websocket
    # stayed up; only a connect's sweep asked again, so the caller waited in silence.
    monkeypatch.setattr(service_module, "ENTRY_ANSWER_RETRIES", (0.01, 0.01, 0.01))
    monkeypatch.setattr(service_module, "REQUEST_RETRY_PAUSES", (0.01, 0.01))
    call = record("c1", origin="dialplan", origin_channel="entry-1", outcome="denied")
    async with _entries_served(tmp_path, ["entry-1"], timeouts=5, calls=(call,)) as (service, ari):
        monkeypatch.setattr(type(service.engine), "connected", property(lambda _: True))
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)  # three tries, all timed out
        async with asyncio.timeout(5):
            while ("continue", "entry-1") not in ari.requests:
                await asyncio.sleep(0.01)
        assert "entry-1" not in service._entries
        assert ari.requests.count(("continue", "entry-1")) == 1
        assert ari.requests[-4] == ("set", "entry-1", "PHONEMFA_OUTCOME", "denied")


async def test_an_answer_never_taken_lets_the_caller_go_and_a_stop_ends_the_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Minutes of silence end in a hang-up, not a caller left waiting for good; a service
    # stopping does not wait for the tries (the next start's sweep answers).
    monkeypatch.setattr(service_module, "ENTRY_ANSWER_RETRIES", (0.01, 0.01))
    monkeypatch.setattr(service_module, "REQUEST_RETRY_PAUSES", (0.01, 0.01))
    call = record("c1", origin="dialplan", origin_channel="entry-1", outcome="denied")
    async with _entries_served(tmp_path, ["entry-1"], timeouts=99, calls=(call,)) as (service, ari):
        monkeypatch.setattr(type(service.engine), "connected", property(lambda _: True))
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)
        async with asyncio.timeout(5):
            while ("hangup", "entry-1") not in ari.requests:
                await asyncio.sleep(0.01)
        assert "entry-1" not in service._entries
        assert ("continue", "entry-1") not in ari.requests
        monkeypatch.setattr(service_module, "ENTRY_ANSWER_RETRIES", (60.0,))
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)
        async with asyncio.timeout(5):  # not the 10 s a background task may take
            await service._drain_background()
        assert not service._entry_answers


async def test_an_entry_whose_call_ended_before_a_kill_gets_its_answer(tmp_path: Path) -> None:
    # The previous run recorded the outcome and was killed before answering the dialplan:
    # the caller is still in Stasis when the next run connects.
    call = record(
        "c1", origin="dialplan", origin_channel="entry-1", outcome="fraud_reported",
        created_at=time.time() - 60,
    )  # fmt: skip
    channels = ["entry-1", "stray", "gone-on"]
    async with _entries_served(tmp_path, channels, calls=(call,)) as (service, ari):
        # Listed in our app, then gone on in the dialplan before we looked at it.
        ari.dialplan["gone-on"] = ("Set", "PHONEMFA_OUTCOME=failed")
        await service._on_connected(1, False)
        assert ("set", "entry-1", "PHONEMFA_OUTCOME", "fraud_reported") in ari.requests
        assert ("continue", "entry-1") in ari.requests
        assert ("hangup", "entry-1") not in ari.requests
        assert ("hangup", "stray") in ari.requests  # no call of ours asked for it
        assert ("hangup", "gone-on") not in ari.requests  # no longer in our app


def _ended_entry_call(call_id: str = "c1", **changes: Any) -> CallRecord:
    """An ended call of the dialplan entry on channel `entry-1`, made by an earlier run."""
    base = record(call_id, origin="dialplan", origin_channel="entry-1", outcome="approved")
    return replace(base, **{"created_at": time.time() - 60, **changes})


def _verifications_started(
    service: CallService, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, list[str]]]:
    """The entries the service starts a verification for from now on (channel, arguments)."""
    started: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(service, "_start_entry", lambda c, args: started.append((c, args)))
    return started


async def test_an_entry_that_had_its_answer_and_comes_back_unheard_is_verified_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: the dialplan took an `approved` and entered `verify` again on the
    # same channel; its StasisStart lost, the next connect's sweep found the first call on
    # record and handed its `approved` over again: nobody was called.
    call = _ended_entry_call()
    async with _entries_served(tmp_path, ["entry-1"], calls=(call,)) as (service, ari):
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)
        assert ari.requests[-1] == ("continue", "entry-1")
        await service.store.flush()
        stored = await service.store.get_call("c1")
        assert stored is not None and stored.timeline[-1].event == "dialplan_answered"
        assert stored.timeline[-1].details == {"outcome": "approved"}
        ari.requests.clear()
        ari.dialplan["entry-1"] = ("Stasis", "phonemfa,verify,+14255550170,alice")
        started = _verifications_started(service, monkeypatch)
        await service._on_connected(2, False)
        assert started == [("entry-1", ["+14255550170", "alice"])]
        assert not [r for r in ari.requests if r[0] in ("set", "continue")]


@pytest.mark.parametrize("newest_answered", [False, True])
async def test_a_sweep_gives_an_entry_only_its_last_call_s_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newest_answered: bool
) -> None:
    # Found by review: of two ended calls of one entry, the oldest's outcome was given; and
    # an older call's answered before the step was written (an earlier version) could be.
    older = _ended_entry_call(created_at=time.time() - 120)
    newer = _ended_entry_call("c2", outcome="denied")
    async with _entries_served(tmp_path, ["entry-1"], calls=(older, newer)) as (service, ari):
        if newest_answered:
            service._entry_answered("c2", "denied")
            await service.store.flush()
            ari.dialplan["entry-1"] = ("Stasis", "phonemfa,verify,+14255550170")
        started = _verifications_started(service, monkeypatch)
        await service._on_connected(1, False)
        given = [r[3] for r in ari.requests if r[:3] == ("set", "entry-1", "PHONEMFA_OUTCOME")]
        assert given == ([] if newest_answered else ["denied"])
        assert [c for c, _ in started] == (["entry-1"] if newest_answered else [])


async def test_only_the_first_sweep_gives_an_earlier_run_s_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After it, an entry in Stasis we never heard of is a new one, even on a channel whose
    # call ended unanswered before this run: the first sweep listed every such entry.
    async with _entries_served(tmp_path, [], calls=(_ended_entry_call(),)) as (service, ari):
        await service._on_connected(1, False)  # nothing of ours in Stasis then
        ari.channels.append("entry-1")
        ari.dialplan["entry-1"] = ("Stasis", "phonemfa,verify,+14255550170")
        started = _verifications_started(service, monkeypatch)
        await service._on_connected(2, False)
        assert [c for c, _ in started] == ["entry-1"]
        assert not [r for r in ari.requests if r[0] in ("set", "continue")]


async def test_an_answer_asked_again_after_the_entry_came_back_is_not_given_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: Asterisk carried out the continue but timed the request out; the
    # dialplan entered `verify` again at once, and our answer, asked again, ended the new
    # verification with the old outcome. Its StasisStart, heard, tells the first was taken.
    monkeypatch.setattr(service_module, "REQUEST_RETRY_PAUSES", (0.01, 0.01))
    call = record("c1", origin="dialplan", origin_channel="entry-1", outcome="approved")
    async with _entries_served(tmp_path, ["entry-1"], timeouts=1, calls=(call,)) as (service, ari):
        monkeypatch.setattr(type(service.engine), "connected", property(lambda _: True))
        set_variable = ari.set_variable

        async def came_back(channel_id: str, name: str, value: str) -> None:
            try:
                await set_variable(channel_id, name, value)
            except AriUnavailable:
                service._entries["entry-1"] = ""  # its StasisStart, during the pause
                raise

        monkeypatch.setattr(ari, "set_variable", came_back)
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)
        assert ari.requests == [("set", "entry-1", "PHONEMFA_OUTCOME", "approved")]
        await service.store.flush()
        stored = await service.store.get_call("c1")
        assert stored is not None and stored.timeline[-1].event == "dialplan_answered"
        assert stored.timeline[-1].details == {"outcome": "approved", "confirmed": False}


@pytest.mark.parametrize("reconnected", [False, True])
async def test_a_sweep_asterisk_refused_at_connect_time_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reconnected: bool
) -> None:
    # Found by review: when Asterisk would not list our app's channels at connect time, a
    # previous run's callee stayed on the line until its TIMEOUT(absolute), and a dialplan
    # caller waited in silence, until the next reconnect. A reconnect meanwhile sweeps for
    # itself: the retry of the connection before it stops.
    monkeypatch.setattr(service_module, "SWEEP_RETRY", 0.01)
    async with _entries_served(tmp_path, ["stray"]) as (service, ari):
        answers: list[Any] = [AriError("GET", "/applications/phonemfa", 500, "Internal")]
        listed = ari.get_application

        async def get_application() -> dict[str, Any]:
            if answers:
                raise answers.pop()
            return await listed()

        monkeypatch.setattr(ari, "get_application", get_application)
        monkeypatch.setattr(service.engine, "connection", lambda: 2 if reconnected else 1)
        await service._on_connected(1, False)
        assert ari.requests == []  # nothing swept yet
        swept = [("get", "stray"), ("hangup", "stray")]
        async with asyncio.timeout(2):
            while ari.requests != swept and not reconnected:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # ten times the retry's pause: nothing more comes
        assert ari.requests == ([] if reconnected else swept)


async def test_a_stop_does_not_wait_for_the_sweep_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: the retry (sleeping 5 s to a minute, on a connection still up while
    # the service drains) held every stop 10 s, and swept once more during it.
    async with _entries_served(tmp_path, ["stray"]) as (service, ari):

        async def get_application() -> dict[str, Any]:
            raise AriError("GET", "/applications/phonemfa", 500, "Internal")

        monkeypatch.setattr(ari, "get_application", get_application)
        monkeypatch.setattr(service.engine, "connection", lambda: 1)
        await service._on_connected(1, False)
        [retry] = service._sweep_retries
        await service._drain_background()
        assert retry.cancelled() and not service._sweep_retries and ari.requests == []


async def test_a_sweep_starts_an_entry_we_never_heard_of_with_its_own_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its StasisStart was lost: the sweep starts its verification with the arguments after
    # `verify` (number, user, tenant); an outbound leg nobody owns is no entry: hung up.
    channels = ["lost-entry", "stray"]
    async with _entries_served(tmp_path, channels) as (service, ari):
        ari.dialplan["lost-entry"] = ("Stasis", "phonemfa,verify,+14255550170,alice,default")
        started: list[tuple[str, list[str]]] = []
        monkeypatch.setattr(service, "_start_entry", lambda c, args: started.append((c, args)))
        await service._on_connected(1, False)
        assert started == [("lost-entry", ["+14255550170", "alice", "default"])]
        assert ("hangup", "lost-entry") not in ari.requests
        assert ("hangup", "stray") in ari.requests


@pytest.mark.parametrize("still_there", [False, True])
async def test_an_entry_that_hung_up_while_we_were_away_cancels_its_call(
    tmp_path: Path, still_there: bool
) -> None:
    # Found by review: the caller in the dialplan hangs up while the websocket is down (its
    # StasisEnd and ChannelDestroyed lost); after the reconnect its call went on, ringing the
    # user for a caller nobody waits for. One not yet listed in our app but still there is
    # left be.
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    service = CallService(_config(db), store)
    service.accepting = True
    ari = _EntryAri(["entry-1", "entry-2"])
    service.engine.ari = ari  # type: ignore[assignment]
    flows: dict[str, _WaitingFlow] = {}

    def make_flow(request: Any, observer: Any, **_: Any) -> _WaitingFlow:
        flow = flows[request.call_id] = _WaitingFlow()
        service.engine.flows[request.call_id] = flow  # type: ignore[assignment]
        return flow

    service.engine.flow = make_flow  # type: ignore[method-assign]
    try:
        for channel in ("entry-1", "entry-2"):
            service._on_unrouted(
                Event(
                    {
                        "type": "StasisStart",
                        "channel": {"id": channel},
                        "args": ["verify", "+1 425 555 0100", f"user-{channel}"],
                    }
                )
            )
        async with asyncio.timeout(5):
            while len(flows) < 2 or "" in service._entries.values():
                await asyncio.sleep(0.01)
        calls = dict(service._entries)
        ari.channels = ["entry-2"] + (["entry-1"] if still_there else [])
        listed = ["entry-2"]  # entry-1 is not in our app's list
        ari.get_application = lambda: _listed(listed)  # type: ignore[method-assign]
        await service._on_connected(2, False)
        gone = flows[calls["entry-1"]].stopped
        assert gone == ([] if still_there else [(Outcome.CANCELLED, "caller_hung_up")])
        assert ("entry-1" in service._entries) is still_there
        assert flows[calls["entry-2"]].stopped == []
        assert ("get", "entry-2") not in ari.requests  # listed: not asked for
    finally:
        for flow in flows.values():
            flow.stop(Outcome.CANCELLED, "test over")
        await asyncio.sleep(0.05)
        await store.close()


async def _listed(channels: list[str]) -> dict[str, Any]:
    return {"channel_ids": channels}


class _DiskFull:
    """The writer's connection, as on a full disk: every commit fails."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("COMMIT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_a_stop_on_a_full_disk_still_says_what_was_not_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by review: the failed flush raised out of shutdown before the NOT RECORDED lines.
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    service = CallService(_config(db), store)
    call = record("c1")
    await store.create_call(call)
    writer_conn = store._writer.conn
    store._writer.conn = _DiskFull(writer_conn)  # type: ignore[assignment]
    live = LiveCall(call)
    service.live["c1"] = live
    finishing = asyncio.create_task(service._finish(live, Outcome.FRAUD_REPORTED, None))
    try:
        await asyncio.sleep(0.1)
        store.append_event("c1", TimelineEntry(time.time(), "hung_up", {}))  # a late step
        await service.shutdown(grace=0)  # does not raise
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("fraud_reported NOT RECORDED" in m for m in errors), errors
    finally:
        finishing.cancel()
        store._writer.conn = writer_conn
        await store.close()


async def test_an_entry_whose_call_cannot_start_for_a_bug_still_gets_an_answer(
    tmp_path: Path,
) -> None:
    # Found by review: an unexpected error left the caller in Stasis, owned for good.
    async with _entries_served(tmp_path, []) as (service, ari):

        async def broken(request: StartCall) -> CallRecord:
            raise RuntimeError("a bug")

        service.start_call = broken  # type: ignore[method-assign]
        service._entries["entry-1"] = ""
        await service._dialplan_entry("entry-1", ["+1 425 555 0100"])
        assert ("set", "entry-1", "PHONEMFA_OUTCOME", "failed") in ari.requests
        assert ("set", "entry-1", "PHONEMFA_REASON", "internal_error") in ari.requests
        assert ari.requests[-1] == ("continue", "entry-1") and "entry-1" not in service._entries


async def test_a_connect_sweep_asks_again_for_our_channels_when_asterisk_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: one timed-out GET /applications at connect skipped the whole sweep
    # for that connection: the previous run's callee stayed on the line (until its
    # TIMEOUT(absolute), minutes) and a dialplan caller whose call was settled at start-up
    # waited in Stasis, in silence, for its answer.
    monkeypatch.setattr(service_module, "REQUEST_RETRY_PAUSES", (0.01, 0.01))
    call = record("c1", origin="dialplan", origin_channel="entry-1")  # left in progress
    async with _entries_served(tmp_path, ["entry-1", "callee"], calls=(call,)) as (service, ari):
        monkeypatch.setattr(type(service.engine), "connected", property(lambda _: True))
        listed = ari.get_application
        timeouts = [1]

        async def loaded() -> dict[str, Any]:
            if timeouts[0]:
                timeouts[0] -= 1
                raise AriUnavailable("GET", "/applications/phonemfa", 0, "timed out")
            return await listed()

        ari.get_application = loaded  # type: ignore[method-assign]
        await service._on_connected(1, False)
        assert ("hangup", "callee") in ari.requests
        assert ("set", "entry-1", "PHONEMFA_OUTCOME", "interrupted") in ari.requests
        assert ("continue", "entry-1") in ari.requests


def _in_dialplan(app_name: str, app_data: str) -> Any:
    return {
        "id": "c1",
        "dialplan": {"context": "c", "exten": "s", "priority": 1, "app_name": app_name}
        | ({"app_data": app_data} if app_data else {}),
    }


@pytest.mark.parametrize(
    ("app_name", "app_data", "args"),
    [
        # Dialplan entries, with their arguments as StasisStart gives them.
        (
            "Stasis",
            "phonemfa,verify,+14255550170,alice,default",
            ["verify", "+14255550170", "alice", "default"],
        ),
        ("Stasis", "phonemfa,verify,+14255550170", ["verify", "+14255550170"]),
        ("Stasis", "phonemfa,verify,+14255550170,,ops", ["verify", "+14255550170", "", "ops"]),
        ("Stasis", "phonemfa,verify", ["verify"]),
        # As Asterisk splits them for StasisStart: quotes, a backslash, parentheses.
        (
            "Stasis",
            'phonemfa,verify,"+1 425 555 0170",al\\,ice,"a,b"',
            ["verify", "+1 425 555 0170", "al,ice", "a,b"],
        ),
        ("Stasis", "phonemfa,verify,+14255550170,f(a,b)", ["verify", "+14255550170", "f(a,b)"]),
        # Our own outbound legs: in the app too (Asterisk shows their arguments as well).
        ("Stasis", "phonemfa,call,5d1c0c1e", ["call", "5d1c0c1e"]),
        # Another application's channel, or a prefix of ours.
        ("Stasis", "phonemfa-other,verify,+14255550170", None),
        ("Stasis", "phonemfaX,verify,+14255550170", None),
        ("Stasis", "", None),
        # Gone on in the dialplan (found by review: the connect sweep hung such a one up).
        ("Set", "PHONEMFA_OUTCOME=failed", None),
        ("Wait", "30", None),
        ("AppDial", "(Outgoing Line)", None),
    ],
)
def test_a_channel_is_in_our_app_while_asterisk_shows_it_in_stasis_with_our_app(
    app_name: str, app_data: str, args: list[str] | None
) -> None:
    # What the connect sweep verifies (an entry whose StasisStart was lost) or hangs up.
    assert service_module.stasis_args(_in_dialplan(app_name, app_data), "phonemfa") == args


def test_a_channel_asterisk_shows_no_dialplan_for_is_not_in_our_app() -> None:
    assert service_module.stasis_args({"id": "c1"}, "phonemfa") is None


class _StopRecorder:
    """A flow as `CallService._stop_calls_of` sees it: asked to stop, or not."""

    def __init__(self, stopped: list[tuple[str, Outcome, str]], call_id: str) -> None:
        self.stopped, self.call_id = stopped, call_id

    def stop(self, outcome: Outcome, reason: str) -> None:
        self.stopped.append((self.call_id, outcome, reason))


async def test_a_block_ends_only_that_user_s_undecided_calls(tmp_path: Path) -> None:
    # The user's other call at its greeting ends blocked; not the one that reported fraud,
    # not one already ended, not the same user id in another tenant, not another user.
    store = await Store.open(tmp_path / "phonemfa.db")
    try:
        service = CallService(_config(tmp_path / "phonemfa.db"), store)
        calls = {
            "reporting": record("reporting", user="alice"),
            "greeting": record("greeting", user="alice"),
            "ended": record("ended", user="alice"),
            "acme": record("acme", user="alice", tenant="acme"),
            "bob": record("bob", user="bob"),
        }
        stopped: list[tuple[str, Outcome, str]] = []
        for call_id, call in calls.items():
            service.live[call_id] = LiveCall(call)
            service.engine.flows[call_id] = _StopRecorder(stopped, call_id)  # type: ignore[assignment]
        service.live["ended"].done.set()
        service._block_in_memory("default", "Alice", "fraud_reported", "reporting")
        assert stopped == [("greeting", Outcome.BLOCKED, RefusalCode.USER_BLOCKED.value)]
        assert service.guard.is_blocked("default", "alice")
    finally:
        await store.close()


async def test_an_entry_being_answered_is_left_alone_by_a_connect_sweep(tmp_path: Path) -> None:
    # Found by review: a refused entry (no record) is out of the entries while its answer is
    # given; a connect's sweep meanwhile found it still in Stasis(...,verify,...) and started
    # its verification again, ringing the user for a caller about to leave.
    async with _entries_served(tmp_path, ["entry-1"]) as (service, ari):
        ari.dialplan["entry-1"] = ("Stasis", "phonemfa,verify,+14255550170")
        taken = asyncio.Event()
        set_variable = ari.set_variable

        async def slow(channel_id: str, name: str, value: str) -> None:
            await taken.wait()
            await set_variable(channel_id, name, value)

        ari.set_variable = slow  # type: ignore[method-assign]
        answer = asyncio.create_task(
            service._continue_entry("entry-1", "failed", "", "invalid_number")
        )
        await asyncio.sleep(0)  # the answer is on its way
        await service._on_connected(1, False)
        assert ("get", "entry-1") not in ari.requests and not service.live
        taken.set()
        await asyncio.wait_for(answer, 5)
        assert ari.requests[-1] == ("continue", "entry-1")


async def test_a_running_service_settles_the_calls_of_a_killed_cli(tmp_path: Path) -> None:
    # A `phonemfa call --config` killed mid-call left its call in progress: once no CLI runs
    # (the caller's lock), the running service ends it and hangs its channel up, which is in
    # the CLI's own ARI app, out of our sweeps' reach. Calls of other origins are not its.
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    try:
        await store.create_call(record("cli-1", origin="cli", channel_id="ch-1"))
        await store.create_call(record("api-1", origin="api", channel_id="ch-2"))
        service = CallService(_config(db), store)
        ari = _EntryAri(["ch-1", "ch-2"])
        service.engine.ari = ari  # type: ignore[assignment]
        assert await service.settle_dead_cli_calls() == 1
        await service._drain_background()
        ended = await store.get_call("cli-1")
        assert ended is not None and (ended.outcome, ended.reason) == ("interrupted", "cli_ended")
        assert ari.requests == [("hangup", "ch-1")]
        still = await store.get_call("api-1")
        assert still is not None and still.outcome is None
        assert await service.settle_dead_cli_calls() == 0  # once
    finally:
        await store.close()


async def _alice_reporting(service: CallService) -> LiveCall:
    """A call of alice's in flight on the service, about to report fraud."""
    call = record("reporting", user="alice")
    await service.store.create_call(call)
    live = service.live["reporting"] = LiveCall(call)
    return live


def _before_the_report_is_written(
    store: Store, monkeypatch: pytest.MonkeyPatch, first: Callable[[], Awaitable[None]]
) -> None:
    """`first()` runs (and may raise) before each write of that report's outcome."""
    finish_call = store.finish_call

    async def finish(call_id: str, *args: Any) -> bool:
        if call_id == "reporting":
            await first()
        return await finish_call(call_id, *args)

    monkeypatch.setattr(store, "finish_call", finish)


async def test_no_refusal_is_on_record_before_the_fraud_report_the_store_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: a fraud report decided while the disk failed blocks its user in
    # memory at once, its outcome and block wait in _finish's back-off (0.5 s to 5 s). The
    # disk back, a new call for the user was refused and that refusal committed while the
    # block still waited: a kill then left the refusal on record and the user unblocked.
    monkeypatch.setattr(service_module, "OUTCOME_RETRY", 0.3)
    async with _service_beside_a_cli(tmp_path) as (service, _):
        store, live = service.store, await _alice_reporting(service)
        failed: list[str] = []

        async def failing_once() -> None:
            if not failed:  # as the writer says of a failed commit
                failed.append("reporting")
                store.healthy = False
                raise StoreUnavailable("database write failed: disk I/O error")

        _before_the_report_is_written(store, monkeypatch, failing_once)
        finishing = asyncio.create_task(service._finish(live, Outcome.FRAUD_REPORTED, None))
        while not failed:
            await asyncio.sleep(0.01)
        assert service.guard.is_blocked("default", "alice")  # in memory at once
        with pytest.raises(ServiceUnavailable):  # no refusal on record before the block
            await service.start_call(StartCall(phone="+1 425 555 0100", user="alice"))
        await asyncio.wait_for(finishing, 5)  # tried again: the disk is back
        assert await store.get_block("default", "alice") is not None
        refused = await service.start_call(StartCall(phone="+1 425 555 0100", user="alice"))
        assert (refused.outcome, refused.reason) == ("blocked", "user_blocked")


async def test_a_fraud_report_being_written_refuses_the_user_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While its write is merely on its way (not failed), a call of the user is refused as
    # usual, on record: the writer takes that refusal after the fraud report, in order.
    async with _service_beside_a_cli(tmp_path) as (service, _):
        store, live = service.store, await _alice_reporting(service)
        writing, go_on = asyncio.Event(), asyncio.Event()

        async def slow() -> None:
            writing.set()
            await go_on.wait()

        _before_the_report_is_written(store, monkeypatch, slow)
        finishing = asyncio.create_task(service._finish(live, Outcome.FRAUD_REPORTED, None))
        await writing.wait()
        refused = await service.start_call(StartCall(phone="+1 425 555 0100", user="alice"))
        assert (refused.outcome, refused.reason) == ("blocked", "user_blocked")
        go_on.set()
        await finishing


async def test_a_running_service_reads_a_block_a_killed_cli_never_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: `phonemfa call --config` commits a fraud report with its block, then
    # announces it (<database>.blocks); killed in between, or unable to write the marker,
    # its block held nowhere but on record: the running service went on calling the user
    # (a '#' approving) until its restart. Its sweep now reads the blocks on record.
    monkeypatch.setattr(server_module, "CLI_SWEEP", 0.05)
    async with _service_beside_a_cli(tmp_path) as (service, cli_store):
        stamp = service.store.blocks_stamp()
        await cli_store.create_call(record("cli-1", origin="cli", user="alice"))
        block = ("default", "alice", "fraud_reported")
        await cli_store.finish_call("cli-1", "fraud_reported", "fraud_code", 1.0, None, block)
        assert service.store.blocks_stamp() == stamp  # never announced
        sweeps = asyncio.create_task(
            server_module._settle_dead_cli_calls(service, tmp_path / "phonemfa.db")
        )
        try:
            async with asyncio.timeout(5):
                while not service.guard.is_blocked("default", "alice"):
                    await asyncio.sleep(0.01)
        finally:
            sweeps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeps
        call = await service.start_call(StartCall(phone="+1 425 555 0100", user="alice"))
        assert (call.outcome, call.reason) == ("blocked", "user_blocked")


async def test_the_channel_of_each_leg_is_put_on_record_before_it_is_dialled(
    tmp_path: Path,
) -> None:
    # Found by review: only the first leg's channel was on record, and a killed CLI's call
    # on its backup number was settled without its channel being hung up. Then (found by
    # review again): it was on record only with the writer's next commit, up to 100 ms
    # (Store.linger) after the channel was made; a CLI killed meanwhile left it unnamed.
    database = tmp_path / "phonemfa.db"
    store = await Store.open(database, linger=5.0)  # a commit only when asked for one
    reader = await Store.open(database)  # what the service settling it later reads
    try:
        service = CallService(_config(database), store)  # a CLI's: not the primary
        call = record("c1", channel_id="leg-1", origin="cli")
        await store.create_call(call)
        observer = service_module._Observer(service, LiveCall(call))
        observer.channel = lambda: "leg-2"
        observer.step("dialing", {"mode": "direct"})
        await observer.dialling()  # what the flow awaits before it makes the channel
        stored = await reader.get_call("c1")
        assert stored is not None and (stored.status, stored.channel_id) == ("dialing", "leg-2")
        assert call.channel_id == "leg-2"
    finally:
        await reader.close()
        await store.close()


def test_the_calls_in_flight_are_found_by_user_whatever_way_they_leave() -> None:
    live = LiveCalls()
    for call_id, tenant, user in [("a", "t", "alice"), ("b", "t", "alice"), ("c", "u", "alice")]:
        live[call_id] = LiveCall(record(call_id, user=user, tenant=tenant))
    live["n"] = LiveCall(record("n", user=None))
    assert [cid for cid, _ in live.of_user("t", "alice")] == ["a", "b"]
    live["b"] = LiveCall(record("b", user="bob", tenant="t"))  # replaced: indexed anew
    assert [cid for cid, _ in live.of_user("t", "alice")] == ["a"]
    assert [cid for cid, _ in live.of_user("t", "bob")] == ["b"]
    del live["a"]
    assert live.pop("b").record.id == "b" and live.pop("b", None) is None
    assert live.of_user("t", "alice") == live.of_user("t", "bob") == []
    assert [cid for cid, _ in live.of_user("u", "alice")] == ["c"] and len(live) == 2
    assert live._by_user.keys() == {("u", "alice")}  # nothing left behind for the gone


class _ContinueAnswerLost(_EntryAri):
    """Asterisk carries out the first `continue` (the dialplan goes on), but its answer is
    lost: the connection dropped (or a loaded Asterisk timed the request out)."""

    def __init__(self, channels: list[str]) -> None:
        super().__init__(channels)
        self.lost = 1

    async def continue_in_dialplan(self, channel_id: str) -> None:
        await super().continue_in_dialplan(channel_id)
        if self.lost:
            self.lost -= 1
            raise AriUnavailable("POST", f"/channels/{channel_id}/continue", 0, "timed out")


def _stasis_start(channel_id: str, *args: str) -> Event:
    return Event({"type": "StasisStart", "channel": {"id": channel_id}, "args": list(args)})


async def test_an_entry_back_in_verify_after_an_answer_lost_is_verified_not_answered_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # c1 ends approved; the dialplan takes the answer, but the answer to `continue` is lost
    # as the websocket drops: c1's answer is kept to be asked again (service._entries). The
    # websocket comes back; the dialplan enters `verify` again on the same channel (a second
    # verification) and its StasisStart is heard. It must start a verification of its own,
    # and c1's `approved` must never be handed to it.
    monkeypatch.setattr(service_module, "ENTRY_ANSWER_RETRIES", (0.05,))
    db = tmp_path / "phonemfa.db"
    store = await Store.open(db)
    service = CallService(_config(db), store)
    try:
        call = record("c1", origin="dialplan", origin_channel="entry-1", outcome="approved")
        await store.create_call(call)
        ari = _ContinueAnswerLost(["entry-1"])
        service.engine.ari = ari  # type: ignore[assignment]
        connected = [False]
        monkeypatch.setattr(type(service.engine), "connected", property(lambda _: connected[0]))
        started: list[tuple[str, list[str]]] = []

        async def dialplan_entry(channel_id: str, args: list[str]) -> None:
            started.append((channel_id, args))
            service._entries[channel_id] = "c2"  # its own call, in progress

        monkeypatch.setattr(service, "_dialplan_entry", dialplan_entry)
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)  # carried out; its answer lost with the websocket
        connected[0] = True  # the websocket is back
        service._on_unrouted(_stasis_start("entry-1", "verify", "+14255550171", "bob"))
        await asyncio.sleep(0.3)  # past the time c1's answer is asked again

        given = [r[3] for r in ari.requests if r[:3] == ("set", "entry-1", "PHONEMFA_OUTCOME")]
        assert given == ["approved"], "c1's approved was given to the second verification too"
        assert started == [("entry-1", ["+14255550171", "bob"])]
    finally:
        await service._drain_background()
        await store.close()


async def test_a_stasis_start_during_the_last_try_of_an_answer_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connected, a loaded Asterisk carries out `continue` but times it out; the next tries
    # time out too. The dialplan enters `verify` again during the last try: its StasisStart
    # starts call c2. The failed try then puts c1 back in _entries over c2, and c1's answer,
    # asked again, ends the verification c2 is running (and c2 is cut off from its entry).
    monkeypatch.setattr(service_module, "REQUEST_RETRY_PAUSES", (0.01, 0.01))
    monkeypatch.setattr(service_module, "ENTRY_ANSWER_RETRIES", (0.05,))
    call = record("c1", origin="dialplan", origin_channel="entry-1", outcome="denied")
    async with _entries_served(tmp_path, ["entry-1"], calls=(call,)) as (service, _):
        ari = _ContinueAnswerLost(["entry-1"])
        service.engine.ari = ari  # type: ignore[assignment]
        monkeypatch.setattr(type(service.engine), "connected", property(lambda _: True))
        sets = [0]

        async def loaded(channel_id: str, name: str, value: str) -> None:
            ari.requests.append(("set", channel_id, name, value))
            sets[0] += 1
            if sets[0] <= 3:  # the first try's: carried out
                return
            if sets[0] == 5:  # the last try: the dialplan is back in verify meanwhile
                service._on_unrouted(_stasis_start("entry-1", "verify", "+14255550171"))
                await asyncio.sleep(0.01)
            raise AriUnavailable("POST", f"/channels/{channel_id}/variable", 0, "timed out")

        monkeypatch.setattr(ari, "set_variable", loaded)

        async def dialplan_entry(channel_id: str, args: list[str]) -> None:
            service._entries[channel_id] = "c2"  # its own call, in progress

        monkeypatch.setattr(service, "_dialplan_entry", dialplan_entry)
        service._entries["entry-1"] = "c1"
        await service._release_entry(call)
        assert service._entries.get("entry-1") == "c2", "c2's entry was overwritten by c1"
        await service._drain_background()


async def test_a_connect_sweep_a_store_read_broke_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A previous run left a dialplan entry in Stasis; its call is settled `interrupted` at
    # start. At the connect sweep one read of the store fails (a moment of I/O error): the
    # sweep raises, nothing tries it again (only a listing Asterisk refused is), and the
    # caller waits in silence until the next reconnect, which may never come.
    monkeypatch.setattr(service_module, "SWEEP_RETRY", 0.01)
    call = record("c1", origin="dialplan", origin_channel="entry-1")  # in progress
    async with _entries_served(tmp_path, ["entry-1"], calls=(call,)) as (service, ari):
        get_call = service.store.get_call
        failures = [1]

        async def flaky(call_id: str) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise StoreUnavailable("database read failed: disk I/O error")
            return await get_call(call_id)

        monkeypatch.setattr(service.store, "get_call", flaky)
        monkeypatch.setattr(service.engine, "connection", lambda: 1)
        with contextlib.suppress(StoreUnavailable):
            await service._on_connected(1, False)
        async with asyncio.timeout(2):
            while ("continue", "entry-1") not in ari.requests:
                await asyncio.sleep(0.01)
        await service._drain_background()


async def test_a_fraud_report_waiting_for_the_store_is_found_by_its_user(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "phonemfa.db")
    try:
        service = CallService(_config(tmp_path / "phonemfa.db"), store)
        live = service.live["c1"] = LiveCall(record("c1", user="alice"))
        service.live["c2"] = LiveCall(record("c2", user="bob"))
        live.unrecorded = Outcome.FRAUD_REPORTED
        assert not service._block_unrecorded("default", "alice")  # not failed yet: in order
        live.write_failed = True
        assert service._block_unrecorded("default", "alice")
        assert not service._block_unrecorded("default", "bob")
        assert not service._block_unrecorded("acme", "alice")
        assert not service._block_unrecorded("default", None)
    finally:
        await store.close()
