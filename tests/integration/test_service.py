"""The service as a real process on the sandbox: API, dialplan entry, webhooks, restarts.

One `phonemfa serve` per module (a fresh one for the restart tests). The people on the phone
are softphones or the sandbox's load bots.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from phonemfa.webhooks import SIGNATURE_HEADER, verify
from tests.conftest import Sandbox
from tests.support.ari_raw import RawAri
from tests.support.service import (
    WEBHOOK_SECRET,
    Api,
    ServiceProcess,
    run_cli,
    service_config,
)
from tests.support.softphone import SoftphoneNetwork
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.integration

BOT_APPROVES = "+1 425 555 0170"
BOT_FRAUD = "+1 425 555 0171"


@pytest.fixture(scope="module")
async def service(
    asterisk: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("service")
    proc = ServiceProcess(folder, service_config(folder))
    await proc.start()
    yield proc
    await proc.stop()


async def no_channels_of(ari: RawAri, app: str = "phonemfa", timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while (await ari.request("GET", f"/applications/{app}"))["channel_ids"]:
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("phone", "tenant", "outcome"),
    [
        (BOT_APPROVES, "default", "approved"),
        (BOT_FRAUD, "default", "fraud_reported"),
        (f"{BOT_APPROVES} x1234", "default", "approved"),  # auto attendant keys 1234
        (f"{BOT_APPROVES} x1234", "ops", "approved"),  # "operator" presses # itself
        ("+1 425 555 0130", "default", "busy"),
        ("+1 425 555 0140", "default", "no_answer"),
        ("+1 425 555 0150", "default", "unreachable"),
        ("+1 425 555 0160", "default", "no_answer"),  # its voicemail
    ],
)
async def test_calls_through_the_api_end_with_the_right_outcome(
    api: Api, ari: RawAri, phone: str, tenant: str, outcome: str
) -> None:
    # A user of their own: a fraud report blocks its user.
    call = await api.start_call(phone, tenant=tenant, user=f"u-{uuid.uuid4().hex[:8]}")
    assert call["status"] == "queued" and call["outcome"] is None
    assert "*" in call["phone"]
    done = await api.wait(call["id"], 60)
    assert (done["status"], done["outcome"]) == (outcome, outcome), done
    events = [e["event"] for e in done["timeline"]]
    assert events[0] == "dialing"
    assert all(e["at"].endswith("Z") for e in done["timeline"])
    await no_channels_of(ari)


async def test_softphones_through_the_api(api: Api, phones: SoftphoneNetwork) -> None:
    desk = await phones.register("5678")
    call = await api.start_call("+1 425 555 0110 x5678", user="bob")
    ring = await desk.next_call(timeout=20)
    ring.answer()
    await ring.send_dtmf("#")
    await api.until_status(call["id"], "prompting")
    await ring.send_dtmf("#")
    done = await api.wait(call["id"])
    assert done["outcome"] == "approved"
    assert done["mode"] == "auto_extension"


async def test_wait_returns_as_soon_as_the_call_ends(api: Api) -> None:
    call = await api.start_call("+1 425 555 0130")
    started = time.monotonic()
    done = await api.wait(call["id"], 30)
    assert done["outcome"] == "busy"
    assert time.monotonic() - started < 15  # not the full 30 s wait


async def test_delete_hangs_up_a_ringing_call(api: Api, ari: RawAri) -> None:
    call = await api.start_call("+1 425 555 0140")
    await api.until_status(call["id"], "ringing")
    status, body = await api.request("DELETE", f"/v1/calls/{call['id']}")
    assert status == 200, body
    assert body["outcome"] == "cancelled"
    status, again = await api.request("DELETE", f"/v1/calls/{call['id']}")
    assert status == 409 and again["error"] == "not_in_progress"
    await no_channels_of(ari)


async def test_the_dialplan_entry_sets_the_outcome_on_the_calling_channel(
    api: Api, ari: RawAri, asterisk: Sandbox
) -> None:
    await ari.set_global_var("PHONEMFA_LAST_OUTCOME", "")
    asterisk.cli(
        f"channel originate Local/{BOT_APPROVES.replace(' ', '')}@phonemfa-example "
        "application Wait 30"
    )
    async with asyncio.timeout(30):
        while (await ari.global_var("PHONEMFA_LAST_OUTCOME")) == "":
            await asyncio.sleep(0.2)
    assert await ari.global_var("PHONEMFA_LAST_OUTCOME") == "approved"
    call_id = await ari.global_var("PHONEMFA_LAST_CALL_ID")
    status, call = await api.request("GET", f"/v1/calls/{call_id}")
    assert status == 200 and call["origin"] == "dialplan" and call["user"] == "cli-user"
    await no_channels_of(ari)


async def test_one_signed_webhook_per_call(api: Api, hooks: WebhookReceiver) -> None:
    calls = [
        await api.start_call(BOT_APPROVES, callback_url=hooks.url),
        await api.start_call("+1 425 555 0130", callback_url=hooks.url),
    ]
    for call in calls:
        await api.wait(call["id"])
        await hooks.wait_for(call["id"])
    await asyncio.sleep(1)  # room for a duplicate to show up
    for call in calls:
        deliveries = hooks.for_call(call["id"])
        assert len(deliveries) == 1
        headers, body = deliveries[0]
        assert verify(WEBHOOK_SECRET, body, headers[SIGNATURE_HEADER])
        assert not verify("another-secret", body, headers[SIGNATURE_HEADER])


async def test_a_call_list_with_filters_and_paging(api: Api) -> None:
    for _ in range(3):
        await api.wait((await api.start_call("+1 425 555 0150", user="paged-user"))["id"])
    status, page = await api.request("GET", "/v1/calls?user=paged-user&limit=2")
    assert status == 200 and len(page["calls"]) == 2 and page["next_cursor"]
    status, rest = await api.request(
        "GET", f"/v1/calls?user=paged-user&limit=2&cursor={page['next_cursor']}"
    )
    ids = {c["id"] for c in page["calls"]} | {c["id"] for c in rest["calls"]}
    assert len(ids) >= 3
    status, busy = await api.request("GET", "/v1/calls?status=unreachable&user=paged-user")
    assert all(c["status"] == "unreachable" for c in busy["calls"])


async def test_fraud_blocks_the_user_until_unblocked(api: Api) -> None:
    call = await api.start_call(BOT_FRAUD, user="mallory-victim")
    assert (await api.wait(call["id"]))["outcome"] == "fraud_reported"
    status, block = await api.request("GET", "/v1/users/mallory-victim/block")
    assert status == 200 and block["blocked"] and block["call_id"] == call["id"]
    refused = await api.start_call(BOT_APPROVES, user="mallory-victim")
    assert (refused["outcome"], refused["reason"]) == ("blocked", "user_blocked")
    status, _ = await api.request("DELETE", "/v1/users/mallory-victim/block")
    assert status == 204
    again = await api.start_call(BOT_APPROVES, user="mallory-victim")
    assert (await api.wait(again["id"]))["outcome"] == "approved"


async def test_a_fraud_report_ends_the_user_s_other_call_in_progress(
    api: Api, phones: SoftphoneNetwork
) -> None:
    # An MFA-fatigue attack: two sign-ins, two calls; the user reports fraud on one. The
    # other, still at its greeting, ends blocked and hung up: it can no longer be approved
    # (found by review: only new calls were refused).
    mobile = await phones.register("mobile")
    other = await api.start_call("+1 425 555 0100", user="fatigue-victim")
    ring = await mobile.next_call()
    ring.answer()
    await api.until_status(other["id"], "prompting")
    fraud = await api.start_call(BOT_FRAUD, user="fatigue-victim")
    assert (await api.wait(fraud["id"]))["outcome"] == "fraud_reported"
    ended = await api.wait(other["id"])
    assert (ended["outcome"], ended["reason"]) == ("blocked", "user_blocked"), ended
    await ring.wait_disconnected(timeout=15)
    status, _ = await api.request("DELETE", "/v1/users/fatigue-victim/block")
    assert status == 204


async def test_metrics_and_health(api: Api) -> None:
    status, health = await api.request("GET", "/healthz", token="")
    assert status == 200 and health["ari_connected"] is True
    status, text = await api.request("GET", "/metrics")
    assert status == 200 and "phonemfa_calls_finished_total" in text


# --- restarts: each test gets its own service ------------------------------------------------
# Services besides the module's own use an app of their own: a second websocket on the same
# ARI app takes its events over (ApplicationReplaced), and the module's service would go deaf.
OTHER_APP = "phonemfa-other"


@pytest.fixture
async def fresh_service(asterisk: Sandbox, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    proc = ServiceProcess(tmp_path, service_config(tmp_path, app=OTHER_APP))
    yield proc
    await proc.stop()


async def test_settings_change_the_next_call_and_survive_a_restart(
    fresh_service: ServiceProcess, ari: RawAri
) -> None:
    await fresh_service.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, fresh_service.url)
        before = await api.start_call(f"{BOT_APPROVES} x1234")
        assert before["mode"] == "auto_extension"
        await api.wait(before["id"])
        status, body = await api.request(
            "PUT", "/v1/tenants/default/settings", json={"operator_assistance": True}
        )
        assert status == 200 and body["settings"]["operator_assistance"] is True
        assert body["settings"]["webhook_secret"] == "***"
        after = await api.start_call(f"{BOT_APPROVES} x1234")
        assert after["mode"] == "operator"
        await api.wait(after["id"])
    await fresh_service.terminate()
    await fresh_service.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, fresh_service.url)
        status, body = await api.request("GET", "/v1/tenants/default/settings")
        assert body["settings"]["operator_assistance"] is True
        call = await api.start_call(f"{BOT_APPROVES} x1234")
        assert call["mode"] == "operator"
        assert (await api.wait(call["id"]))["outcome"] == "approved"


async def test_sigkill_during_a_call_then_restart_leaves_it_terminal_and_no_channel(
    fresh_service: ServiceProcess, ari: RawAri, phones: SoftphoneNetwork, hooks: WebhookReceiver
) -> None:
    mobile = await phones.register("mobile")
    await fresh_service.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, fresh_service.url)
        call = await api.start_call("+1 425 555 0100", callback_url=hooks.url)
        ring = await mobile.next_call()
        ring.answer()
        await api.until_status(call["id"], "prompting")
    fresh_service.kill()
    await fresh_service.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, fresh_service.url)
        status, body = await api.request("GET", f"/v1/calls/{call['id']}")
        assert status == 200
        assert (body["outcome"], body["reason"]) == ("interrupted", "service_restarted")
    await ring.wait_disconnected(timeout=15)
    await no_channels_of(ari, OTHER_APP)
    await hooks.wait_for(call["id"])
    await asyncio.sleep(1)
    assert len(hooks.for_call(call["id"])) == 1


async def test_a_restart_deletes_the_calls_past_their_retention(
    fresh_service: ServiceProcess,
) -> None:
    await fresh_service.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, fresh_service.url)
        calls = [await api.start_call(BOT_APPROVES, user=f"u{i}") for i in range(2)]
        for call in calls:
            assert (await api.wait(call["id"]))["outcome"] == "approved"
    await fresh_service.terminate()
    # The first call as if made 91 days ago (retention_days: 90 by default).
    db = sqlite3.connect(fresh_service.folder / "phonemfa.db")
    with db:
        db.execute(
            "UPDATE calls SET created_at = created_at - 91 * 86400 WHERE id = ?", (calls[0]["id"],)
        )
    db.close()
    await fresh_service.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, fresh_service.url)
        async with asyncio.timeout(10):
            while (await api.request("GET", f"/v1/calls/{calls[0]['id']}"))[0] != 404:
                await asyncio.sleep(0.1)
        status, kept = await api.request("GET", f"/v1/calls/{calls[1]['id']}")
        assert status == 200 and kept["outcome"] == "approved" and kept["timeline"]
    db = sqlite3.connect(fresh_service.folder / "phonemfa.db")
    try:
        rows = db.execute("SELECT count(*) FROM timeline WHERE call_id = ?", (calls[0]["id"],))
        assert rows.fetchone()[0] == 0
    finally:
        db.close()
    messages = [r.get("message", "") for r in fresh_service.log_records()]
    assert any(m.startswith("deleted 1 decided calls created before ") for m in messages)


async def test_the_cli_talks_to_a_running_service(service: ServiceProcess) -> None:
    approved = await asyncio.to_thread(
        run_cli, "call", "+1 425 555 0170 x1234", "--server", service.url, "--user", "cli-remote"
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "extension_sent" in approved.stdout and "OUTCOME: approved" in approved.stdout
    busy = await asyncio.to_thread(run_cli, "call", "+1 425 555 0130", "--server", service.url)
    assert busy.returncode == 1 and "OUTCOME: busy" in busy.stdout
    listed = await asyncio.to_thread(
        run_cli, "calls", "--server", service.url, "list", "--user", "cli-remote"
    )
    assert listed.returncode == 0 and "approved" in listed.stdout
    call_id = listed.stdout.split()[1]
    shown = await asyncio.to_thread(run_cli, "calls", "--server", service.url, "show", call_id)
    assert shown.returncode == 0 and "dialing" in shown.stdout and call_id in shown.stdout
    refused = await asyncio.to_thread(run_cli, "call", "not a number", "--server", service.url)
    assert refused.returncode == 2 and "invalid_number" in refused.stderr


# --- lines: trunk.max_calls ------------------------------------------------------------------
ONE_LINE = {"endpoint": "PJSIP/{number}@trunk", "dial_timeout": 20, "max_calls": 1}
StartService = Callable[..., Awaitable[ServiceProcess]]


@pytest.fixture
async def other_services(asterisk: Sandbox, tmp_path: Path) -> AsyncIterator[StartService]:
    """Start services with config overrides (on OTHER_APP); all are stopped after the test."""
    started: list[ServiceProcess] = []

    async def start(**overrides: Any) -> ServiceProcess:
        folder = tmp_path / f"service-{len(started)}"
        folder.mkdir()
        proc = ServiceProcess(folder, service_config(folder, app=OTHER_APP, **overrides))
        started.append(proc)
        await proc.start()
        return proc

    yield start
    for proc in started:
        await proc.stop()


async def test_calls_past_max_calls_wait_their_turn_and_one_waiting_too_long_fails_undialled(
    other_services: StartService, ari: RawAri
) -> None:
    proc = await other_services(trunk={**ONE_LINE, "queue_timeout": 30})
    async with aiohttp.ClientSession() as session:
        api = Api(session, proc.url)
        first = await api.start_call(BOT_APPROVES)
        second = await api.start_call(BOT_FRAUD)
        async with asyncio.timeout(5):
            while (await api.request("GET", "/healthz"))[1]["calls_waiting_for_line"] != 1:
                await asyncio.sleep(0.05)
        assert (await api.wait(first["id"]))["outcome"] == "approved"
        done = await api.wait(second["id"])
        assert done["outcome"] == "fraud_reported"
        events = [e["event"] for e in done["timeline"]]
        assert events[0] == "waiting_for_line" and "dialing" in events
        # The second was dialled only once the first had hung up. Read the first again: its
        # outcome is visible before its closing words and hang-up.
        first_done = await api.wait(first["id"])
        hung_up = next(e["at"] for e in first_done["timeline"] if e["event"] == "hung_up")
        dialing = next(e["at"] for e in done["timeline"] if e["event"] == "dialing")
        assert dialing >= hung_up
    await proc.stop()  # one service on OTHER_APP at a time (ApplicationReplaced)

    # Now a queue time-out shorter than a call: the waiting call fails, never dialled.
    proc = await other_services(trunk={**ONE_LINE, "queue_timeout": 0.5})
    async with aiohttp.ClientSession() as session:
        api = Api(session, proc.url)
        first = await api.start_call(BOT_APPROVES)
        second = await api.start_call(BOT_APPROVES)
        done = await api.wait(second["id"])
        assert (done["outcome"], done["reason"]) == ("failed", "no_free_line")
        assert "dialing" not in [e["event"] for e in done["timeline"]]
        assert (await api.wait(first["id"]))["outcome"] == "approved"
    await no_channels_of(ari, OTHER_APP)


async def test_sigterm_ends_calls_still_waiting_for_a_line_without_dialling_them(
    other_services: StartService,
) -> None:
    proc = await other_services(trunk=ONE_LINE)
    async with aiohttp.ClientSession() as session:
        api = Api(session, proc.url)
        first = await api.start_call(BOT_APPROVES)
        second = await api.start_call(BOT_APPROVES)
        await api.until_status(first["id"], "prompting")
        assert await proc.terminate() == 0
    await proc.start()
    async with aiohttp.ClientSession() as session:
        api = Api(session, proc.url)
        # The call in progress finished within the grace period; the waiting one never rang.
        assert (await api.wait(first["id"]))["outcome"] == "approved"
        waiting = await api.wait(second["id"])
        assert (waiting["outcome"], waiting["reason"]) == ("interrupted", "shutdown")
        assert "dialing" not in [e["event"] for e in waiting["timeline"]]
