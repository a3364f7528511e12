"""From "call this number for this user" to a `CallRequest` the flow can run, or a refusal.

The same steps for every path that starts calls (API, CLI, dialplan): parse the number in the
tenant's region, plan how to dial it, check the destination against the toll-fraud rules, pick
the language, and check the number-matching code. Pure: no I/O.
"""

from __future__ import annotations

import re

from phonemfa.config import Config, TenantSettings
from phonemfa.flow import CallRequest
from phonemfa.numbers import NumberError, parse_number
from phonemfa.policy import plan_call
from phonemfa.prompts import PromptCatalog
from phonemfa.tollfraud import Refusal, check_destination

CODE_PATTERN = re.compile(r"[0-9]{2,10}")


class CallRefused(Exception):
    """The call must not be placed. `code` is machine-readable, `message` for people."""

    def __init__(self, code: str, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.refusal = refusal


def prepare_call(
    config: Config,
    settings: TenantSettings,
    catalog: PromptCatalog,
    *,
    call_id: str,
    phone: str,
    language: str | None = None,
    code: str | None = None,
) -> CallRequest:
    """Raises NumberError for a number that cannot be dialled, CallRefused for a policy
    refusal (destination or code); velocity limits and blocks are the caller's to check.
    `settings` are the tenant's settings in effect (the config's, or changed at run time)."""
    number = parse_number(phone, settings.region)
    plan = plan_call(number, settings, config.trunk, config.dial_profiles)
    refusal = check_destination(number, settings)
    if refusal is not None:
        raise CallRefused(refusal.code.value, refusal.message, refusal)
    if code is not None:
        check_code(code, settings.fraud.code if settings.fraud.enabled else None)
    lang, fell_back = catalog.language_for(language, settings.language)
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
    )


def check_code(code: str, fraud_code: str | None) -> None:
    """A number-matching code is 2-10 digits and must not read as the fraud code."""
    if not CODE_PATTERN.fullmatch(code):
        raise CallRefused("bad_code", "the code must be 2 to 10 digits")
    # An entry of the code is then the fraud code, or its end after a pause ("00", "42#").
    if fraud_code is not None and fraud_code.endswith(code + "#"):
        raise CallRefused("bad_code", "the code is (the end of) the tenant's fraud-report code")


__all__ = ["CallRefused", "NumberError", "check_code", "prepare_call"]
