"""The verification call on the real Asterisk, with softphones as the people (issue: call flow).

Each test drives one path of DESIGN §1 end to end; the `flows` fixture then checks that no
channel of ours is left in Asterisk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from phonemfa.flow import VOICEMAIL_TALK
from phonemfa.outcomes import Outcome
from tests.conftest import TRUNK_CALLER_ID
from tests.support.ari_raw import RawAri
from tests.support.flows import FAST_CALLS, SANDBOX_ROOT, FlowHarness
from tests.support.softphone import SoftphoneNetwork, wav_stats

pytestmark = pytest.mark.integration

MOBILE = "+1 425 555 0100"
VOICEMAIL = "+1 425 555 0160"
AUTO_ATTENDANT = "+1 425 555 0110"
OPERATOR_OFFICE = "+1 425 555 0120"
DESK = "sip:5678@127.0.0.2:5060"
BOT_APPROVES = "+1 425 555 0170"  # a load bot: presses '#', records the caller id it got
TRUNK_OWN_NUMBER = "+14255550000"  # the sandbox trunk's from_user
SPOKEN = Path(__file__).parents[2] / "asterisk/sounds/en"  # our prompts: speech to say


def assert_heard_something(path: Path) -> None:
    seconds, level = wav_stats(path)
    assert seconds > 1.0 and level > 0.01, f"{path.name}: {seconds:.1f} s at RMS {level:.3f}"


async def test_direct_call_approved_with_pound(
    flows: FlowHarness, phones: SoftphoneNetwork, tmp_path: Path
) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE)
    ring = await mobile.next_call()
    ring.start_recording(tmp_path / "greeting.wav")
    ring.answer()
    await call.reached("prompting")
    await asyncio.sleep(2.5)  # listens to part of the greeting
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)
    await ring.stop_recording()
    assert_heard_something(tmp_path / "greeting.wav")
    assert call.steps()[:4] == ["dialing", "ringing", "answered", "prompting"]
    assert "greeting_fraud" in (await call.reached("prompting"))["media"][0]


async def test_direct_call_fraud_report(flows: FlowHarness, phones: SoftphoneNetwork) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE)
    ring = await mobile.next_call()
    ring.answer()
    await call.reached("prompting")
    await ring.send_dtmf("0#")
    assert await call.finished() == (Outcome.FRAUD_REPORTED, None)


async def test_auto_attendant_keys_the_extension_then_the_desk_approves(
    flows: FlowHarness, phones: SoftphoneNetwork, ari: RawAri
) -> None:
    desk = await phones.register("5678")
    await ari.set_global_var("AA_LAST_DIGITS", "")
    call = flows.start(f"{AUTO_ATTENDANT} x5678")
    ring = await desk.next_call(timeout=20)
    assert await ari.global_var("AA_LAST_DIGITS") == "5678"  # exactly the extension
    ring.answer()
    await ring.send_dtmf("#")  # at the extension prompt
    await call.reached("prompting")
    await ring.send_dtmf("#")  # at the greeting
    assert await call.finished() == (Outcome.APPROVED, None)
    events = call.events()
    assert events.index("extension_sent") < events.index("extension_prompt")
    assert events.index("pound_received") < events.index("prompting")


async def test_a_double_pound_at_the_extension_prompt_does_not_approve(
    flows: FlowHarness, phones: SoftphoneNetwork
) -> None:
    # The second '#' reaches the greeting's first moment: it answers the extension prompt,
    # not the greeting, whose fraud option nobody has heard. Only a later '#' approves.
    desk = await phones.register("5678")
    call = flows.start(f"{AUTO_ATTENDANT} x5678", tenant="guarded")
    ring = await desk.next_call(timeout=20)
    ring.answer()
    await ring.send_dtmf("##", gap=0.15)
    await call.reached("key_ignored")
    assert call.result is None
    # The dropped key's tail lasts the inter-digit time-out; then a '#' is an answer.
    await asyncio.sleep(FAST_CALLS["inter_digit_timeout"] + 0.5)
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)
    events = call.events()
    assert events.index("pound_received") < events.index("prompting")
    assert events.index("prompting") < events.index("key_ignored")


@pytest.mark.parametrize(
    ("number", "tenant"),
    [(f"{OPERATOR_OFFICE} x5678", "ops"), (f"{OPERATOR_OFFICE} x@5678", "default")],
    ids=["tenant-setting", "at-override"],
)
async def test_operator_transfers_to_the_desk_which_approves(
    flows: FlowHarness, phones: SoftphoneNetwork, tmp_path: Path, number: str, tenant: str
) -> None:
    operator = await phones.register("operator")
    desk = await phones.register("5678")
    call = flows.start(number, tenant=tenant)
    op = await operator.next_call()
    op.start_recording(tmp_path / "operator.wav")
    op.answer()
    prompt = await call.reached("operator_prompt")
    assert "digits:***" in prompt["media"]  # the extension is masked as the number is
    await asyncio.sleep(4)  # the operator listens to the request
    assert await op.blind_transfer(DESK) == 200
    await op.stop_recording()
    assert_heard_something(tmp_path / "operator.wav")
    ring = await desk.next_call()
    ring.answer()
    await ring.send_dtmf("#")  # "if already at this extension, press pound"
    await call.reached("prompting")
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)
    assert "extension_sent" not in call.events()


async def test_operator_who_never_transfers_gives_no_input(
    flows: FlowHarness, phones: SoftphoneNetwork
) -> None:
    operator = await phones.register("operator")
    call = flows.start(f"{OPERATOR_OFFICE} x5678", tenant="ops")
    op = await operator.next_call()
    op.answer()
    assert await call.finished(timeout=90) == (Outcome.NO_INPUT, "operator_did_not_transfer")
    assert call.count("operator_prompt") == 3  # the tenant's repeats


@pytest.mark.parametrize(
    ("number", "outcome"),
    [
        ("+1 425 555 0130", Outcome.BUSY),
        ("+1 425 555 0140", Outcome.NO_ANSWER),
        ("+1 425 555 0150", Outcome.UNREACHABLE),
    ],
)
async def test_unreached_numbers(flows: FlowHarness, number: str, outcome: Outcome) -> None:
    call = flows.start(number)
    got, reason = await call.finished(timeout=60)
    assert got is outcome
    assert reason is not None and reason.startswith("cause_")


async def test_voicemail_is_no_answer(flows: FlowHarness) -> None:
    # calls.voicemail_detection "report" (the default): the call goes on as for a silent
    # person; its outcome says what answered.
    call = flows.start(VOICEMAIL)
    assert await call.finished(timeout=90) == (Outcome.NO_ANSWER, "voicemail")
    assert call.count("voicemail_detected") == 1
    assert call.count("prompting") == 2


async def test_hang_up_mode_leaves_nothing_in_the_voicemail(
    flows: FlowHarness, ari: RawAri
) -> None:
    await ari.set_global_var("VM_LAST_RECORDING", "")
    call = flows.start(VOICEMAIL, tenant="vm-hang-up")
    assert await call.finished(timeout=30) == (Outcome.NO_ANSWER, "voicemail")
    assert call.count("prompting") == 1
    # Hung up during the voicemail's own greeting, before its beep: it recorded nothing.
    path = await ari.global_var("VM_LAST_RECORDING")
    assert path.startswith("/var/spool/asterisk/recording/voicemail-"), path
    await asyncio.sleep(1)
    assert not (SANDBOX_ROOT / path.lstrip("/")).exists()


async def test_a_person_saying_hello_is_no_voicemail(
    flows: FlowHarness, phones: SoftphoneNetwork
) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE, tenant="vm-hang-up")
    ring = await mobile.next_call()
    ring.answer()
    await ring.say(SPOKEN / "goodbye.wav")  # "Goodbye" stands for "Hello?": 0.7 s of voice
    await call.reached("talking_finished")  # talk detection heard it, and its end
    await call.reached("prompting")
    await asyncio.sleep(VOICEMAIL_TALK + 1)  # past the time a greeting would have been judged
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)
    assert call.count("voicemail_detected") == 0


async def test_an_extension_nobody_is_registered_at_is_unreachable_not_denied(
    flows: FlowHarness,
) -> None:
    # Found by review: the auto attendant answers, finds no desk at 5679 and hangs up; the
    # person never heard the question, and the call read `denied`.
    call = flows.start(f"{AUTO_ATTENDANT} x5679")
    assert await call.finished(timeout=60) == (Outcome.UNREACHABLE, "hung_up_before_greeting")
    assert "answered" in call.events() and "prompting" not in call.events()


async def test_hanging_up_during_the_greeting_denies(
    flows: FlowHarness, phones: SoftphoneNetwork
) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE)
    ring = await mobile.next_call()
    ring.answer()
    await call.reached("prompting")
    await asyncio.sleep(1)
    ring.hangup()
    assert await call.finished() == (Outcome.DENIED, "hung_up")
    # The greeting the hang-up cut ends "failed" in Asterisk: not a broken prompt.
    assert "playback_failed" not in call.events(), call.timeline


async def test_a_wrong_key_then_pound_is_approved_after_a_retry(
    flows: FlowHarness, phones: SoftphoneNetwork
) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE)
    ring = await mobile.next_call()
    ring.answer()
    await call.reached("prompting")
    await ring.send_dtmf("5#")
    await call.reached("wrong_input")
    await call.reached("prompting", times=2)
    # A person hears the retry prompt first: keys in its first moment are the wrong entry's tail.
    await asyncio.sleep(FAST_CALLS["retry_key_guard"] + 0.5)
    await ring.send_dtmf("#")
    assert await call.finished() == (Outcome.APPROVED, None)
    retry = [d for n, d in call.timeline if n == "prompting"][1]
    assert "retry" in retry["media"][0]


@pytest.mark.parametrize(("typed", "outcome"), [("42", Outcome.APPROVED), ("24", Outcome.DENIED)])
async def test_number_matching(
    flows: FlowHarness, phones: SoftphoneNetwork, typed: str, outcome: Outcome
) -> None:
    mobile = await phones.register("mobile")
    call = flows.start(MOBILE, code="42", tenant="slow")
    ring = await mobile.next_call()
    ring.answer()
    prompt = await call.reached("prompting")
    assert "code_prompt" in prompt["media"][0]
    for attempt in range(1, 4 if outcome is Outcome.DENIED else 2):
        await call.reached("prompting", times=attempt)
        if attempt > 1:  # a person hears the retry prompt before typing again
            await asyncio.sleep(FAST_CALLS["retry_key_guard"] + 0.5)
        await ring.send_dtmf(typed + "#")
    got, _ = await call.finished()
    assert got is outcome
    # The code is a secret of the sign-in: the timeline never shows its digits.
    assert all(d.get("digit") in ("*", "#") for n, d in call.timeline if n == "key")


async def test_the_configured_caller_id_reaches_the_far_end(
    presenting_flows: FlowHarness, ari: RawAri
) -> None:
    await ari.set_global_var("BOT_LAST_CALLER_ID", "-")
    call = presenting_flows.start(BOT_APPROVES)
    assert await call.finished() == (Outcome.APPROVED, None)
    assert await ari.global_var("BOT_LAST_CALLER_ID") == TRUNK_CALLER_ID
    # Presented as the connected line: our own channel's caller id never changed, so there is
    # no false hint of a transfer.
    assert "caller_id_changed" not in call.events()


async def test_without_a_caller_id_the_trunk_presents_its_own_number(
    flows: FlowHarness, ari: RawAri
) -> None:
    assert flows.engine.config.trunk.caller_id is None
    await ari.set_global_var("BOT_LAST_CALLER_ID", "-")
    call = flows.start(BOT_APPROVES)
    assert await call.finished() == (Outcome.APPROVED, None)
    assert await ari.global_var("BOT_LAST_CALLER_ID") == TRUNK_OWN_NUMBER
