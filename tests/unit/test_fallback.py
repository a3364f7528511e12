"""Fallback chains without I/O: which leg follows which outcome (fallback.py), how a request
becomes a chain (calls.prepare_call), and how its numbers count for the velocity limits."""

from __future__ import annotations

from typing import Any

import pytest

from phonemfa.calls import CallRefused, prepare_call
from phonemfa.config import Config, RateLimit, TenantSettings
from phonemfa.fallback import Fallback, LegKind, next_leg, not_reached
from phonemfa.numbers import NumberError, parse_number
from phonemfa.outcomes import Outcome
from phonemfa.policy import DialMode, plan_call
from phonemfa.prompts import PromptCatalog, Shipped
from phonemfa.tollfraud import PastCall, RefusalCode, TollFraudGuard

CONFIG = Config.model_validate(
    {"ari": {"password": "x"}, "api": {"tokens": ["t"]}, "tenants": {"default": {}}}
)
CATALOG = PromptCatalog(Shipped(messages={"en": frozenset({"greeting"})}))
T0 = 1_800_000_000.0


def tenant(**settings: Any) -> TenantSettings:
    return TenantSettings.model_validate({"region": "US", **settings})


def leg(kind: LegKind, phone: str = "+1 425 555 0100") -> Fallback:
    plan = plan_call(parse_number(phone), tenant(), CONFIG.trunk)
    return Fallback(kind, plan, "backup_phones[0]")


def prepare(phone: str, backups: list[str], settings: TenantSettings | None = None) -> Any:
    return prepare_call(
        CONFIG,
        settings or tenant(),
        CATALOG,
        call_id="c",
        phone=phone,
        backup_phones=backups,
    )


# --- which outcomes go on to the next leg ----------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "reason", "goes_on"),
    [
        (Outcome.BUSY, "cause_17", True),
        (Outcome.NO_ANSWER, "cause_19", True),
        (Outcome.NO_ANSWER, "voicemail", True),
        (Outcome.UNREACHABLE, "cause_1", True),
        (Outcome.UNREACHABLE, "hung_up_before_greeting", True),
        (Outcome.NO_INPUT, "extension_did_not_answer", True),
        (Outcome.NO_INPUT, "operator_did_not_transfer", True),
        # The person was reached: what they did (or did not) is the answer.
        (Outcome.APPROVED, None, False),
        (Outcome.DENIED, "wrong_input", False),
        (Outcome.DENIED, "hung_up", False),
        (Outcome.FRAUD_REPORTED, None, False),
        (Outcome.NO_INPUT, "no_key_pressed", False),
        # Not about the person at all.
        (Outcome.CANCELLED, "cancelled_by_request", False),
        (Outcome.INTERRUPTED, "shutdown", False),
        (Outcome.INTERRUPTED, "asterisk_unavailable", False),
        (Outcome.FAILED, "no_free_line", False),
        (Outcome.FAILED, "max_duration", False),
    ],
)
def test_only_a_leg_that_reached_nobody_goes_on(
    outcome: Outcome, reason: str | None, goes_on: bool
) -> None:
    assert not_reached(outcome, reason) is goes_on
    backup = leg(LegKind.BACKUP)
    assert next_leg((backup,), outcome, reason) == ((backup, ()) if goes_on else None)


def test_an_operator_leg_follows_only_a_switchboard_that_missed() -> None:
    operator, backup = leg(LegKind.OPERATOR), leg(LegKind.BACKUP)
    legs = (operator, backup)
    for reason in ("extension_did_not_answer",):
        assert next_leg(legs, Outcome.NO_INPUT, reason) == (operator, (backup,))
    assert next_leg(legs, Outcome.UNREACHABLE, "hung_up_before_greeting") == (operator, (backup,))
    # The main line busy, not answering or not there: its operator cannot help.
    for outcome, reason in (
        (Outcome.BUSY, "cause_17"),
        (Outcome.NO_ANSWER, "cause_19"),
        (Outcome.UNREACHABLE, "cause_1"),
    ):
        assert next_leg(legs, outcome, reason) == (backup, ())
        assert next_leg((operator,), outcome, reason) is None
    assert next_leg((), Outcome.BUSY, "cause_17") is None


# --- a request becomes a chain -----------------------------------------------------------


def test_backups_are_legs_in_the_order_given() -> None:
    request = prepare("+1 425 555 0130", ["+1 425 555 0170", "425-555-0100"])
    assert [(f.kind, f.plan.number.e164, f.field) for f in request.fallbacks] == [
        (LegKind.BACKUP, "+14255550170", "backup_phones[0]"),
        (LegKind.BACKUP, "+14255550100", "backup_phones[1]"),
    ]
    assert prepare("+1 425 555 0130", []).fallbacks == ()


def test_operator_fallback_adds_an_operator_leg_after_each_auto_attendant_leg() -> None:
    settings = tenant(operator_fallback=True)
    request = prepare("+1 425 555 0110x5678", ["+1 425 555 0120x5679", "+1 425 555 0100"], settings)
    assert request.plan.mode is DialMode.AUTO_EXTENSION
    legs = [(f.kind, f.plan.mode, f.plan.number.format(), f.field) for f in request.fallbacks]
    assert legs == [
        (LegKind.OPERATOR, DialMode.OPERATOR, "+14255550110x@5678", "phone"),
        (LegKind.BACKUP, DialMode.AUTO_EXTENSION, "+14255550120x5679", "backup_phones[0]"),
        (LegKind.OPERATOR, DialMode.OPERATOR, "+14255550120x@5679", "backup_phones[0]"),
        (LegKind.BACKUP, DialMode.DIRECT, "+14255550100", "backup_phones[1]"),
    ]
    # Off (the default), or a number already called through its operator: no operator leg.
    assert prepare("+1 425 555 0110x5678", []).fallbacks == ()
    assert prepare("+1 425 555 0110x@5678", [], settings).fallbacks == ()
    assert prepare("+1 425 555 0110x5678", [], tenant(operator_assistance=True)).fallbacks == ()


def test_a_backup_that_cannot_be_dialled_names_its_field() -> None:
    with pytest.raises(NumberError) as err:
        prepare("+1 425 555 0130", ["+1 425 555 0170", "12"])
    assert err.value.field == "backup_phones[1]"
    with pytest.raises(NumberError) as err:
        prepare("12", ["+1 425 555 0170"])
    assert err.value.field == "phone"


def test_a_backup_refused_by_policy_names_its_field() -> None:
    with pytest.raises(CallRefused) as err:
        prepare("+1 425 555 0130", ["+33 6 12 34 56 78"])
    assert err.value.code == "country_not_allowed"
    assert err.value.field == "backup_phones[0]"
    assert err.value.refusal is not None  # a policy decision: the call is on record, blocked
    with pytest.raises(CallRefused) as err:
        prepare("+1 425 555 0130", ["+1 900 555 1234"], tenant(allowed_countries=["*"]))
    assert (err.value.code, err.value.field) == ("number_type_refused", "backup_phones[0]")


@pytest.mark.parametrize(
    ("backups", "field"),
    [
        (["+1 425 555 0130"], "backup_phones[0]"),
        (["(425) 555-0130"], "backup_phones[0]"),
        (["+1 425 555 0100", "+1 425 555 0100"], "backup_phones[1]"),
    ],
)
def test_a_number_twice_in_a_chain_is_a_bad_request(backups: list[str], field: str) -> None:
    with pytest.raises(CallRefused) as err:
        prepare("+1 425 555 0130", backups)
    assert (err.value.code, err.value.field, err.value.refusal) == (
        "duplicate_backup_phone",
        field,
        None,
    )
    # Another desk behind the same switchboard is another number.
    assert len(prepare("+1 425 555 0110x5678", ["+1 425 555 0110x5679"]).fallbacks) == 1


def test_more_backups_than_allowed_is_a_bad_request() -> None:
    with pytest.raises(CallRefused) as err:
        prepare("+1 425 555 0130", [f"+1 425 555 010{i}" for i in range(4)])
    assert (err.value.code, err.value.field) == ("too_many_backup_phones", "backup_phones")


# --- velocity limits -------------------------------------------------------------------


def guard(**limits: list[RateLimit]) -> TollFraudGuard:
    empty: dict[str, list[RateLimit]] = {"per_user": [], "per_number": [], "per_tenant": []}
    return TollFraudGuard({"t": tenant(limits={**empty, **limits})})


def test_each_backup_number_counts_for_its_number_only() -> None:
    g = guard(per_number=[RateLimit(count=1, window=60)], per_user=[RateLimit(count=2, window=60)])
    main, backup = parse_number("+1 425 555 0130"), parse_number("+1 425 555 0100")
    assert g.number_wait("t", backup, T0) is None
    assert g.admit("t", main, "alice", T0, [backup]) is None
    # The backup was counted as a call to its number: called first now, it is refused...
    assert g.number_wait("t", backup, T0 + 1) == pytest.approx(59)
    refusal = g.check("t", backup, "bob", T0 + 1)
    assert refusal is not None and refusal.code is RefusalCode.RATE_LIMITED_NUMBER
    # ...as a backup it refuses nothing (CallService leaves it out of the chain)...
    assert g.check("t", parse_number("+1 425 555 0199"), "bob", T0 + 1, [backup]) is None
    # ...and the user counted one call, not two.
    assert g.check("t", parse_number("+1 425 555 0198"), "alice", T0 + 1) is None


def test_a_number_counts_once_per_call_however_many_legs_dial_it() -> None:
    g = guard(per_number=[RateLimit(count=2, window=60)])
    main = parse_number("+1 425 555 0110x5678")
    desks = [parse_number("+1 425 555 0110x5679"), parse_number("+1 425 555 0110x5680")]
    assert g.admit("t", main, None, T0, desks) is None
    assert g.admit("t", main, None, T0 + 1, desks) is None  # the second call, not the sixth
    refusal = g.admit("t", main, None, T0 + 2, desks)
    assert refusal is not None and refusal.code is RefusalCode.RATE_LIMITED_NUMBER


def test_a_refused_call_counts_none_of_its_numbers() -> None:
    g = guard(per_user=[RateLimit(count=1, window=60)], per_number=[RateLimit(count=1, window=60)])
    main, backup = parse_number("+1 425 555 0130"), parse_number("+1 425 555 0100")
    assert g.admit("t", parse_number("+1 425 555 0199"), "alice", T0) is None
    refusal = g.admit("t", main, "alice", T0 + 1, [backup])
    assert refusal is not None and refusal.code is RefusalCode.RATE_LIMITED_USER
    assert g.number_wait("t", backup, T0 + 2) is None  # the refused call did not count
    assert g.number_wait("t", main, T0 + 2) is None


def test_backup_numbers_are_seeded_after_a_restart() -> None:
    g = guard(per_number=[RateLimit(count=1, window=60)], per_user=[RateLimit(count=2, window=60)])
    g.seed([PastCall("t", "alice", "+14255550130", T0, ("+14255550100",))])
    refusal = g.check("t", parse_number("+1 425 555 0100"), "bob", T0 + 1)
    assert refusal is not None and refusal.code is RefusalCode.RATE_LIMITED_NUMBER
    assert g.check("t", parse_number("+1 425 555 0199"), "alice", T0 + 1) is None
