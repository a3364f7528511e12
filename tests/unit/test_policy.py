"""phonemfa.policy: dial mode, dial profile choice, trunk formats and DTMF steps."""

from __future__ import annotations

from typing import Any

import pytest

from phonemfa.config import DialProfile, TenantSettings, TrunkSettings
from phonemfa.numbers import parse_number
from phonemfa.policy import (
    DEFAULT_PROFILE,
    DialMode,
    Digits,
    Wait,
    dial_mode,
    dtmf_steps,
    format_for_trunk,
    plan_call,
    render_dtmf,
    select_profile,
)


def profile(name: str, *match: str, **settings: Any) -> DialProfile:
    return DialProfile.model_validate({"name": name, "match": list(match), **settings})


# --- dial mode -------------------------------------------------------------------

MODES = [
    # number, tenant operator_assistance, mode
    ("425-555-1234", False, DialMode.DIRECT),
    ("425-555-1234", True, DialMode.DIRECT),
    ("425-555-1234x5678", False, DialMode.AUTO_EXTENSION),
    ("425-555-1234x5678", True, DialMode.OPERATOR),
    ("425-555-1234x@5678", False, DialMode.OPERATOR),
    ("425-555-1234x@5678", True, DialMode.OPERATOR),
]


@pytest.mark.parametrize(("text", "assistance", "mode"), MODES)
def test_dial_mode(text: str, assistance: bool, mode: DialMode) -> None:
    assert dial_mode(parse_number(text, "US"), assistance) is mode
    tenant = TenantSettings(operator_assistance=assistance)
    assert plan_call(parse_number(text, "US"), tenant, TrunkSettings()).mode is mode


# --- profiles ----------------------------------------------------------------------

PROFILES = [
    profile("nanp", "+1"),
    profile("seattle", "+1 425"),
    profile("seattle-555", "+1 425 555"),
    profile("france", "FR"),
    profile("uk-and-de", "GB", "DE"),
    profile("london", "+44 20"),
]


@pytest.mark.parametrize(
    ("number", "name"),
    [
        ("+1 425 555 1234", "seattle-555"),  # longest prefix wins
        ("+1 425 881 1234", "seattle"),
        ("+1 206 555 1234", "nanp"),
        ("+1 604 555 1234", "nanp"),  # Canada: the +1 prefix, no country profile
        ("+33 1 23 45 67 89", "france"),
        ("+44 20 7946 0000", "london"),  # a prefix beats a country
        ("+44 161 496 0000", "uk-and-de"),
        ("+49 30 12345678", "uk-and-de"),
        ("+39 06 1234 5678", "default"),  # nothing matches: built-in default
    ],
)
def test_select_profile(number: str, name: str) -> None:
    assert select_profile(PROFILES, parse_number(number)).name == name


def test_first_listed_wins_a_tie() -> None:
    profiles = [profile("a", "+1", "FR"), profile("b", "+1", "FR")]
    assert select_profile(profiles, parse_number("+1 425 555 1234")).name == "a"
    assert select_profile(profiles, parse_number("+33 1 23 45 67 89")).name == "a"


def test_builtin_default_profile() -> None:
    assert select_profile([], parse_number("+1 425 555 1234")) is DEFAULT_PROFILE
    assert DEFAULT_PROFILE.name == "default"
    assert DEFAULT_PROFILE.number_format == "e164"
    assert DEFAULT_PROFILE.pre_delay == 2.0
    assert (DEFAULT_PROFILE.dtmf_duration_ms, DEFAULT_PROFILE.dtmf_gap_ms) == (100, 100)
    assert DEFAULT_PROFILE.extension_prefix == DEFAULT_PROFILE.extension_suffix == ""


@pytest.mark.parametrize(
    ("number", "settings", "dialled"),
    [
        ("+1 425 555 1234", {}, "+14255551234"),
        ("+1 425 555 1234", {"number_format": "e164_digits"}, "14255551234"),
        ("+1 425 555 1234", {"number_format": "national"}, "4255551234"),
        ("+1 425 555 1234", {"number_format": "national", "add_prefix": "1"}, "14255551234"),
        ("+33 1 23 45 67 89", {"number_format": "national"}, "0123456789"),
        ("+44 20 7946 0000", {"number_format": "national"}, "02079460000"),
        ("+49 30 12345678", {"number_format": "national"}, "03012345678"),
        ("+33 1 23 45 67 89", {"number_format": "international"}, "01133123456789"),
        (
            "+44 20 7946 0000",
            {"number_format": "international", "international_prefix": "00"},
            "00442079460000",
        ),
        ("+1 425 555 1234", {"strip_prefix": "+1"}, "4255551234"),
        ("+1 425 555 1234", {"strip_prefix": "+1", "add_prefix": "9"}, "94255551234"),
        ("+1 425 555 1234", {"strip_prefix": "+33"}, "+14255551234"),  # absent: kept
        ("+1 425 555 1234", {"number_format": "e164_digits", "add_prefix": "+"}, "+14255551234"),
    ],
)
def test_format_for_trunk(number: str, settings: dict[str, Any], dialled: str) -> None:
    assert format_for_trunk(parse_number(number), profile("p", "FR", **settings)) == dialled


def test_dial_string_fills_the_trunk_endpoint() -> None:
    plan = plan_call(
        parse_number("+33 1 23 45 67 89"),
        TenantSettings(),
        TrunkSettings(endpoint="PJSIP/{number}@carrier"),
        [profile("fr", "FR", number_format="international")],
    )
    assert plan.dialled == "01133123456789"
    assert plan.dial_string == "PJSIP/01133123456789@carrier"
    assert plan.profile.name == "fr"


# --- DTMF ------------------------------------------------------------------------------


def test_dtmf_steps_with_pauses() -> None:
    assert dtmf_steps("W1w5678", duration_ms=80, gap_ms=120, pre_delay=2.0) == (
        Wait(3.0),
        Digits("1", 80, 120),
        Wait(0.5),
        Digits("5678", 80, 120),
    )
    assert dtmf_steps("5678", duration_ms=100, gap_ms=100) == (Digits("5678", 100, 100),)
    assert dtmf_steps("ww", duration_ms=100, gap_ms=100) == (Wait(1.0),)
    assert dtmf_steps("", duration_ms=100, gap_ms=100, pre_delay=0) == ()


@pytest.mark.parametrize(
    ("steps", "text"),
    [
        ((Wait(2.0), Digits("5678", 100, 100)), "WW5678"),
        ((Wait(2.5), Digits("5678", 100, 100)), "WWw5678"),
        ((Wait(0.5), Digits("1", 100, 100), Wait(1.0), Digits("23#", 100, 100)), "w1W23#"),
        ((Wait(1.2), Digits("9", 100, 100)), "Ww9"),  # rounded up to the next 0.5 s
        ((Wait(0.1),), "w"),
        ((Wait(0.0), Digits("1", 100, 100)), "1"),
        ((), ""),
    ],
)
def test_render_dtmf(steps: tuple[Wait | Digits, ...], text: str) -> None:
    assert render_dtmf(steps) == text


def test_auto_extension_plan_default_profile() -> None:
    plan = plan_call(parse_number("425-555-1234x5678", "US"), TenantSettings(), TrunkSettings())
    assert plan.mode is DialMode.AUTO_EXTENSION
    assert plan.dial_string == "PJSIP/+14255551234@trunk"
    assert plan.extension == "5678"
    assert plan.dtmf == (Wait(2.0), Digits("5678", 100, 100))
    assert plan.dtmf_string == "WW5678"
    assert plan.describe_dtmf() == "wait 2 s, then 5678 (100 ms tones, 100 ms gaps)"


def test_auto_extension_plan_with_profile_rules() -> None:
    attendant = profile(
        "attendant",
        "+1 425",
        pre_delay=3.5,
        dtmf_duration_ms=200,
        dtmf_gap_ms=150,
        extension_prefix="W",
        extension_suffix="w#",
    )
    plan = plan_call(
        parse_number("425-555-1234x5678", "US"), TenantSettings(), TrunkSettings(), [attendant]
    )
    assert plan.dtmf == (
        Wait(4.5),  # pre-delay and the prefix's W merge
        Digits("5678", 200, 150),
        Wait(0.5),
        Digits("#", 200, 150),
    )
    assert plan.dtmf_string == "WWWWw5678w#"
    assert plan.dtmf_masked == "WWWWw***w#"


@pytest.mark.parametrize(
    ("prefix", "text", "masked"), [("5", "x55", "WW5***"), ("9w", "x9", "WW9w***")]
)
def test_the_timeline_s_dtmf_masks_the_extension_not_the_profile_s_prefix(
    prefix: str, text: str, masked: str
) -> None:
    # Found by review: the extension was replaced in the string sent, hitting the prefix
    # when it held the same digits: "WW***5" showed one of the extension's.
    attendant = profile("attendant", "+1 425", pre_delay=2, extension_prefix=prefix)
    number = parse_number(f"425-555-1234{text}", "US")
    plan = plan_call(number, TenantSettings(), TrunkSettings(), [attendant])
    assert plan.dtmf_masked == masked
    assert plan.dtmf_string == masked.replace("***", text[1:])


@pytest.mark.parametrize(
    ("text", "assistance"), [("425-555-1234x@5678", False), ("425-555-1234x5678", True)]
)
def test_operator_and_direct_plans_send_no_dtmf(text: str, assistance: bool) -> None:
    tenant = TenantSettings(operator_assistance=assistance)
    plan = plan_call(parse_number(text, "US"), tenant, TrunkSettings())
    assert plan.mode is DialMode.OPERATOR
    assert plan.extension == "5678"
    assert plan.dtmf == () and plan.dtmf_string == "" and plan.describe_dtmf() == "none"
    direct = plan_call(parse_number("425-555-1234", "US"), tenant, TrunkSettings())
    assert (direct.mode, direct.dtmf, direct.extension) == (DialMode.DIRECT, (), None)
