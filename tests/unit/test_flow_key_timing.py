"""Keys told twice for one press, and keys held up past a jump of the lag: sequences that
approved, or lost a fraud report (found by review). Fakes from test_flow.py; no I/O."""

from __future__ import annotations

from typing import Any

import pytest

import phonemfa.flow as flow_module
import tests.unit.test_flow as test_flow
from phonemfa.outcomes import Outcome
from tests.unit.test_flow import (
    EXTENSION,
    MOBILE,
    TINY,
    FakeAsterisk,
    Recorder,
    _stalled_key,
    run,
    tenant,
)


def _press_twice(fake: FakeAsterisk, keys: str, start: float = 0.15) -> None:
    """Each key told twice, as an Asterisk that detects it both in band and as RFC 4733 (or
    gets it as SIP INFO too) does: two events 4 ms apart for one press held 80 ms."""
    for i, key in enumerate(keys):
        at = start + 0.03 * i
        for extra in (0.0, 0.004):
            fake.later(
                at + extra,
                lambda k=key: fake.emit("ChannelDtmfReceived", digit=k, duration_ms=80),
            )


def _twice_at_prompt(keys: dict[int, str], start: float = 0.15) -> Any:
    def script(fake: FakeAsterisk, event: str, details: dict[str, Any], rec: Recorder) -> None:
        n = rec.count("prompting")
        if event == "prompting" and n in keys:
            _press_twice(fake, keys[n], start)

    return script


async def test_duplicated_keys_fraud_code_cut_by_a_pause_is_not_approved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "0", a pause to find '#', then '#' during the retry prompt: a fraud report
    # (test_flow::test_a_fraud_code_cut_by_a_pause_still_reports_fraud). With each key told
    # twice the first entry reads "00", which begins no fraud code: nothing is carried, and
    # the '#' approves the call of a person reporting fraud.
    monkeypatch.setattr(test_flow, "PROMPT_SECONDS", 0.4)  # keys during each prompt
    got, _, _, rec = await run(MOBILE, _twice_at_prompt({1: "0", 2: "#"}))
    assert got is Outcome.FRAUD_REPORTED, [(n, d) for n, d in rec.timeline if n != "prompting"]


async def test_duplicated_keys_fraud_code_typed_at_once_reports_fraud(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "0#" typed at once, each key told twice: "00#" is read as a wrong entry (its second '#'
    # the tail), so a fraud report is asked again, and after calls.attempts ends `denied`.
    monkeypatch.setattr(test_flow, "PROMPT_SECONDS", 0.4)
    # (each time well after the tail of the last entry: a person who heard "not right")
    got, _, _, rec = await run(MOBILE, _twice_at_prompt({1: "0#", 2: "0#", 3: "0#"}, 0.3))
    assert got is Outcome.FRAUD_REPORTED, [(n, d) for n, d in rec.timeline if n != "prompting"]


async def test_a_key_held_up_past_key_late_limit_in_the_greeting_guard_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # test_flow::test_a_key_pressed_in_the_greeting_guard_and_handled_after_it_is_dropped,
    # with a hold-up longer than KEY_LATE_LIMIT (3 s; 0.3 s here to keep the test fast):
    # `_pressed` takes the lag jump for Asterisk's clock set back and judges the key by `now`,
    # after the guard: the second '#' of a "##" at the extension prompt approves a greeting
    # nobody heard (its fraud option unheard). Same with the real 3 s and a 3.2 s hold-up.
    monkeypatch.setattr(flow_module, "KEY_LATE_LIMIT", 0.3)

    def script(fake: FakeAsterisk, event: str, details: dict[str, Any], rec: Recorder) -> None:
        if event == "extension_prompt" and details["attempt"] == 1:
            fake.press("#")
        if event == "prompting" and rec.count("prompting") == 1:
            _stalled_key(fake, 0.1, "#", stall=0.6)

    calls = {**TINY, "greeting_key_guard": 0.5, "first_digit_timeout": 1}
    got, _, _, rec = await run(EXTENSION, script, settings=tenant(calls=calls))
    assert got is not Outcome.APPROVED


@pytest.mark.parametrize("pause_ms", [50, 0, -20])
async def test_a_key_pressed_again_quickly_counts_twice(pause_ms: int) -> None:
    # A real "00", each press held 80 ms: the next 50 ms after the release (faster than a
    # person), right after it (a phone that queues a fast double press), or, by the jitter
    # of Asterisk's timestamps, seemingly 20 ms before. Two presses, not one told twice: the
    # code "00" approves.
    def script(fake: FakeAsterisk, event: str, details: dict[str, Any], rec: Recorder) -> None:
        if event == "prompting" and rec.count("prompting") == 1:
            for i, key in enumerate("00#"):
                fake.later(
                    0.1 + (0.08 + pause_ms / 1000) * (i + 1),
                    lambda k=key: fake.emit("ChannelDtmfReceived", digit=k, duration_ms=80),
                )

    calls = {**TINY, "inter_digit_timeout": 1, "first_digit_timeout": 1}
    got, _, _, rec = await run(MOBILE, script, settings=tenant(calls=calls), code="00")
    assert got is Outcome.APPROVED
    assert rec.count("key_duplicate") == 0
