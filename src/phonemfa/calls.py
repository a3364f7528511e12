"""From "call this number for this user" to a `CallRequest` the flow can run, or a refusal.

The same steps for every path that starts calls (API, CLI, dialplan): parse the number in the
tenant's region, plan how to dial it, check the destination against the toll-fraud rules, pick
the language, and check the number-matching code; the same for each backup number, and the
call's fallback chain from them (fallback.py). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from phonemfa.config import Config, TenantSettings
from phonemfa.fallback import MAX_BACKUP_PHONES, Fallback, LegKind
from phonemfa.flow import CallRequest
from phonemfa.numbers import NumberError, PhoneNumber, parse_number
from phonemfa.policy import DialMode, DialPlan, plan_call
from phonemfa.prompts import PromptCatalog, greeting_message
from phonemfa.tollfraud import Refusal, check_destination

CODE_PATTERN = re.compile(r"[0-9]{2,10}")


class CallRefused(Exception):
    """The call must not be placed. `code` is machine-readable, `message` for people,
    `field` the part of the request at fault."""

    def __init__(
        self, code: str, message: str, refusal: Refusal | None = None, *, field: str = "code"
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.refusal = refusal
        self.field = field


def prepare_call(
    config: Config,
    settings: TenantSettings,
    catalog: PromptCatalog,
    *,
    call_id: str,
    phone: str,
    language: str | None = None,
    code: str | None = None,
    backup_phones: Sequence[str] = (),
) -> CallRequest:
    """Raises NumberError for a number that cannot be dialled (its `field` says which),
    CallRefused for a policy refusal (a destination, with its `field`, or the code) or a
    bad list of backup numbers; velocity limits and blocks are the caller's to check.
    `settings` are the tenant's settings in effect (the config's, or changed at run time)."""
    number = _allowed_number(phone, settings, "phone")
    plan = plan_call(number, settings, config.trunk, config.dial_profiles)
    if code is not None:
        check_code(code, settings.fraud.code if settings.fraud.enabled else None)
    if len(backup_phones) > MAX_BACKUP_PHONES:
        raise CallRefused(
            "too_many_backup_phones",
            f"at most {MAX_BACKUP_PHONES} backup numbers",
            field="backup_phones",
        )
    fallbacks = _operator_leg(plan, "phone", settings, config)
    seen = [(number.e164, number.extension)]
    for i, text in enumerate(backup_phones):
        field = f"backup_phones[{i}]"
        backup = _allowed_number(text, settings, field)
        if (backup.e164, backup.extension) in seen:
            raise CallRefused(
                "duplicate_backup_phone", "the same number as one before it", field=field
            )
        seen.append((backup.e164, backup.extension))
        backup_plan = plan_call(backup, settings, config.trunk, config.dial_profiles)
        fallbacks += (Fallback(LegKind.BACKUP, backup_plan, field),)
        fallbacks += _operator_leg(backup_plan, field, settings, config)
    greeting = greeting_message(fraud=settings.fraud.enabled, code=code is not None)
    lang, fell_back = catalog.language_for(language, settings.language, greeting)
    return CallRequest(
        call_id=call_id,
        plan=plan,
        settings=settings,
        catalog=catalog,
        language=lang,
        dial_timeout=config.trunk.dial_timeout,
        code=code,
        caller_id=config.trunk.caller_id,
        requested_language=(language or settings.language) if fell_back else None,
        fallbacks=fallbacks,
    )


def _allowed_number(text: str, settings: TenantSettings, field: str) -> PhoneNumber:
    """Parsed and past the destination rules; errors name `field`."""
    try:
        number = parse_number(text, settings.region)
    except NumberError as exc:
        exc.field = field
        raise
    refusal = check_destination(number, settings)
    if refusal is not None:
        raise CallRefused(refusal.code.value, refusal.message, refusal, field=field)
    return number


def _operator_leg(
    plan: DialPlan, field: str, settings: TenantSettings, config: Config
) -> tuple[Fallback, ...]:
    """The operator leg after a leg keyed in to an auto attendant (tenant operator_fallback)."""
    if plan.mode is not DialMode.AUTO_EXTENSION or not settings.operator_fallback:
        return ()
    number = dataclasses.replace(plan.number, operator_forced=True)
    operator = plan_call(number, settings, config.trunk, config.dial_profiles)
    return (Fallback(LegKind.OPERATOR, operator, field),)


def check_code(code: str, fraud_code: str | None) -> None:
    """A number-matching code is 2-10 digits and must not read as the fraud code."""
    if not CODE_PATTERN.fullmatch(code):
        raise CallRefused("bad_code", "the code must be 2 to 10 digits")
    # An entry of the code is then the fraud code, or its end after a pause ("00", "42#").
    if fraud_code is not None and fraud_code.endswith(code + "#"):
        raise CallRefused("bad_code", "the code is (the end of) the tenant's fraud-report code")


__all__ = ["CallRefused", "NumberError", "check_code", "prepare_call"]
