"""Fallback chains on the real Asterisk (DESIGN §2): a number that reaches nobody is followed
by the next one, each leg a real call of its own; softphones and load bots answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from phonemfa.outcomes import Outcome
from tests.conftest import Sandbox
from tests.support.ari_raw import RawAri
from tests.support.flows import FlowHarness
from tests.support.service import Api, ServiceProcess, run_cli, service_config
from tests.support.softphone import SoftphoneNetwork

pytestmark = pytest.mark.integration

MOBILE = "+1 425 555 0100"
BUSY = "+1 425 555 0130"
NO_ANSWER_FAST = "+1 425 555 0150"  # unreachable at once
VOICEMAIL = "+1 425 555 0160"
BOT_APPROVES = "+1 425 555 0170"
ATTENDANT_THEN_OPERATOR = "+1 425 555 0115"
DESK = "sip:5678@127.0.0.2:5060"


def fallback_steps(call: Any) -> list[dict[str, Any]]:
    return [d for n, d in call.timeline if n == "fallback"]


async def test_a_busy_number_falls_back_to_the_backup(flows: FlowHarness) -> None:
    call = flows.start(BUSY, backup_phones=(NO_ANSWER_FAST, BOT_APPROVES))
    assert await call.finished(timeout=60) == (Outcome.APPROVED, None)
    assert [(d["after"], d["reason"], d["to"], d["field"]) for d in fallback_steps(call)] == [
        ("busy", "cause_17", "backup", "backup_phones[0]"),
        ("unreachable", "cause_1", "backup", "backup_phones[1]"),
    ]
    dialled = [d["number"] for n, d in call.timeline if n == "dialing"]
    assert dialled == ["+1*******30", "+1*******50", "+1*******70"]
    assert call.count("hung_up") == 3  # every leg's channel, each once


async def test_a_voicemail_is_left_for_the_mobile(
    flows: FlowHarness, phones: SoftphoneNetwork, ari: RawAri
) -> None:
    # The tenant hangs up on a voicemail (voicemail_detection: hang_up): the mobile rings
    # within seconds, and nothing is left in the mailbox.
    await ari.set_global_var("VM_LAST_RECORDING", "")
    mobile = await phones.register("mobile")
    call = flows.start(VOICEMAIL, tenant="fallback", backup_phones=(MOBILE,))
    ring = await mobile.next_call(timeout=30)
    assert [(d["after"], d["reason"]) for d in fallback_steps(call)] == [("no_answer", "voicemail")]
    ring.answer()
    await call.reached("prompting", times=2)  # the voicemail heard the first greeting
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)


async def test_an_auto_attendant_that_misses_is_called_again_through_its_operator(
    flows: FlowHarness, phones: SoftphoneNetwork, ari: RawAri
) -> None:
    operator = await phones.register("operator")
    desk = await phones.register("5678")
    await ari.set_global_var("AA_LAST_DIGITS", "")
    call = flows.start(f"{ATTENDANT_THEN_OPERATOR} x5678", tenant="fallback")
    # The attendant puts the call through to the desk, which is busy: the attendant lets go.
    first = await desk.next_call(timeout=30)
    assert await ari.global_var("AA_LAST_DIGITS") == "5678"
    first.answer(486)
    # Called again, keying nothing: the attendant hands the call to its operator, who hears
    # the transfer request and puts the call through to the desk, free now.
    op = await operator.next_call(timeout=30)
    assert [(d["after"], d["reason"], d["to"]) for d in fallback_steps(call)] == [
        ("unreachable", "hung_up_before_greeting", "operator")
    ]
    assert await ari.global_var("AA_LAST_DIGITS") == ""
    op.answer()
    await call.reached("operator_prompt")
    await asyncio.sleep(3)
    assert await op.blind_transfer(DESK) == 200
    ring = await desk.next_call()
    ring.answer()
    await ring.send_dtmf("#")  # "if already at this extension, press pound"
    await call.reached("prompting")
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)
    modes = [d["mode"] for n, d in call.timeline if n == "dialing"]
    assert modes == ["auto_extension", "operator"]
    assert call.count("extension_sent") == 1


async def test_a_cancel_on_the_next_leg_ends_the_chain(flows: FlowHarness) -> None:
    # (A stop between two legs is pinned down by the unit tests, where it can be timed.)
    call = flows.start(BUSY, backup_phones=(VOICEMAIL, BOT_APPROVES))
    await call.reached("answered")  # the voicemail, second of three
    flows.engine.flows[call.call_id].stop(Outcome.CANCELLED, "cancelled_by_request")
    assert await call.finished() == (Outcome.CANCELLED, "cancelled_by_request")
    assert call.count("dialing") == call.count("hung_up") == 2


# --- through the service: the API and the command line ---------------------------------------


@pytest.fixture(scope="module")
async def service(
    asterisk: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("fallback")
    proc = ServiceProcess(folder, service_config(folder, app="phonemfa-fallback-test"))
    await proc.start()
    yield proc
    await proc.stop()


async def test_a_chain_through_the_api(service: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as session:
        api = Api(session, service.url)
        call = await api.start_call(BUSY, backup_phones=[BOT_APPROVES], user="chain-api")
        assert call["backup_phones"] == ["+1*******70"]
        done = await api.wait(call["id"], 60)
        assert (done["outcome"], done["reason"]) == ("approved", None)
        fallback = [e for e in done["timeline"] if e["event"] == "fallback"]
        assert [(e["after"], e["field"]) for e in fallback] == [("busy", "backup_phones[0]")]
        # Read back from the store (the list does not read memory): the same numbers.
        status, listed = await api.request("GET", "/v1/calls?user=chain-api")
        assert status == 200 and listed["calls"][0]["backup_phones"] == ["+1*******70"]


async def test_the_cli_takes_backup_numbers(service: ServiceProcess) -> None:
    for where in (["--server", service.url], ["--config", str(service.config_path)]):
        done = await asyncio.to_thread(run_cli, "call", BUSY, "--backup", BOT_APPROVES, *where)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "fallback" in done.stdout and "OUTCOME: approved" in done.stdout
        bad = await asyncio.to_thread(run_cli, "call", BUSY, "--backup", "12", *where)
        assert bad.returncode == 2 and "backup_phones[0]" in bad.stderr, bad.stderr
