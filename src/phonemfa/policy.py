"""How a parsed number is called: dial mode, trunk dial string, extension DTMF.

Pure decisions, no I/O. `plan_call()` gives a `DialPlan`; the call flow dials
`plan.dial_string` and, in `auto_extension` mode, executes `plan.dtmf` step by
step after answer::

    for step in plan.dtmf:
        match step:
            case Wait(seconds):
                await asyncio.sleep(seconds)
            case Digits(digits, duration_ms, gap_ms):
                await channel.send_dtmf(digits, duration=duration_ms, between=gap_ms)

or sends `plan.dtmf_string` (e.g. "WW5678", `w` = 0.5 s, `W` = 1 s, as
Asterisk's SendDTMF and ARI's /channels/{id}/dtmf understand) in one request
with `plan.profile.dtmf_duration_ms` and `dtmf_gap_ms`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from phonemfa.config import DialProfile, TenantSettings, TrunkSettings
from phonemfa.numbers import EXTENSION_MASK, PhoneNumber

__all__ = [
    "DEFAULT_PROFILE",
    "DialMode",
    "DialPlan",
    "Digits",
    "DtmfStep",
    "Wait",
    "dial_mode",
    "dtmf_steps",
    "format_for_trunk",
    "plan_call",
    "render_dtmf",
    "select_profile",
]


class DialMode(StrEnum):
    DIRECT = "direct"
    """No extension: the greeting plays on answer."""
    AUTO_EXTENSION = "auto_extension"
    """Extension keyed in as DTMF for an auto attendant, then the extension prompt."""
    OPERATOR = "operator"
    """A person answering the main number is asked to transfer to the extension."""


def dial_mode(number: PhoneNumber, operator_assistance: bool) -> DialMode:
    """Entra's rule: operator when the tenant requires it or the number has x@."""
    if number.extension is None:
        return DialMode.DIRECT
    if operator_assistance or number.operator_forced:
        return DialMode.OPERATOR
    return DialMode.AUTO_EXTENSION


# The built-in profile: used when no configured profile matches.
DEFAULT_PROFILE = DialProfile.model_construct(name="default", match=())


def select_profile(profiles: Sequence[DialProfile], number: PhoneNumber) -> DialProfile:
    """The longest matching E.164 prefix, else a country match, else DEFAULT_PROFILE.

    Ties go to the profile listed first. A linear scan: configs hold a handful.
    """
    best: DialProfile | None = None
    best_len = 0
    for profile in profiles:
        for prefix in profile.prefixes:
            if len(prefix) > best_len and number.e164.startswith(prefix):
                best, best_len = profile, len(prefix)
    if best is not None:
        return best
    for profile in profiles:
        if number.country in profile.countries:
            return profile
    return DEFAULT_PROFILE


def format_for_trunk(number: PhoneNumber, profile: DialProfile) -> str:
    """The main number as the trunk wants it, after strip_prefix and add_prefix."""
    match profile.number_format:
        case "e164":
            text = number.e164
        case "e164_digits":
            text = number.digits
        case "national":
            text = number.national_digits
        case "international":
            text = profile.international_prefix + number.digits
    if profile.strip_prefix and text.startswith(profile.strip_prefix):
        text = text[len(profile.strip_prefix) :]
    return profile.add_prefix + text


# --- DTMF --------------------------------------------------------------------

PAUSE_SECONDS = {"w": 0.5, "W": 1.0}


@dataclass(frozen=True)
class Wait:
    """Stay silent for `seconds` (the channel keeps its audio)."""

    seconds: float


@dataclass(frozen=True)
class Digits:
    """Send `digits` as DTMF tones of `duration_ms`, `gap_ms` apart."""

    digits: str
    duration_ms: int
    gap_ms: int


DtmfStep = Wait | Digits


def dtmf_steps(
    text: str, *, duration_ms: int, gap_ms: int, pre_delay: float = 0.0
) -> tuple[DtmfStep, ...]:
    """Turn "W1w5678" into steps; adjacent waits merge, zero waits vanish."""
    steps: list[DtmfStep] = []
    if pre_delay > 0:
        steps.append(Wait(pre_delay))
    for run in re.findall(r"[wW]+|[^wW]+", text):
        if run[0] in PAUSE_SECONDS:
            seconds = sum(PAUSE_SECONDS[c] for c in run)
            if steps and isinstance(steps[-1], Wait):
                steps[-1] = Wait(steps[-1].seconds + seconds)
            else:
                steps.append(Wait(seconds))
        else:
            steps.append(Digits(run, duration_ms, gap_ms))
    return tuple(steps)


def render_dtmf(steps: Sequence[DtmfStep]) -> str:
    """One Asterisk DTMF string: waits become W (1 s) and w (0.5 s).

    A wait that is not a multiple of 0.5 s is rounded up: keying an extension a
    little late is harmless, too early is lost in the attendant's greeting.
    """
    out = []
    for step in steps:
        if isinstance(step, Wait):
            halves = math.ceil(round(step.seconds * 2, 6))
            out.append("W" * (halves // 2) + "w" * (halves % 2))
        else:
            out.append(step.digits)
    return "".join(out)


# --- the plan ----------------------------------------------------------------


@dataclass(frozen=True)
class DialPlan:
    """Everything the call flow needs to dial a number and reach the person."""

    number: PhoneNumber
    mode: DialMode
    profile: DialProfile
    dialled: str
    """The number as sent to the trunk, e.g. "+14255551234" or "01133123456789"."""
    dial_string: str
    """trunk.endpoint with {number} filled, e.g. "PJSIP/+14255551234@trunk"."""
    dtmf: tuple[DtmfStep, ...]
    """auto_extension only: what to key in after answer (pre-delay first)."""

    @property
    def extension(self) -> str | None:
        return self.number.extension

    @property
    def dtmf_string(self) -> str:
        return render_dtmf(self.dtmf)

    @property
    def dtmf_masked(self) -> str:
        """`dtmf_string` with the extension's digits masked, the profile's own prefix and
        suffix kept: rendered from the parts, as replacing the extension in the string hit
        a prefix holding its digits (prefix "5", x55: "WW***5"; found by review)."""
        p, extension = self.profile, self.number.extension
        if not self.dtmf or extension is None:
            return self.dtmf_string
        masked = p.extension_prefix + EXTENSION_MASK + p.extension_suffix
        steps = dtmf_steps(masked, duration_ms=0, gap_ms=0, pre_delay=p.pre_delay)
        return render_dtmf(steps)

    def describe_dtmf(self) -> str:
        """Human text, e.g. "wait 2 s, 5678 (100 ms tones, 100 ms gaps)"."""
        parts = []
        for step in self.dtmf:
            if isinstance(step, Wait):
                parts.append(f"wait {step.seconds:g} s")
            else:
                parts.append(f"{step.digits} ({step.duration_ms} ms tones, {step.gap_ms} ms gaps)")
        return ", then ".join(parts) if parts else "none"


def plan_call(
    number: PhoneNumber,
    tenant: TenantSettings,
    trunk: TrunkSettings,
    profiles: Sequence[DialProfile] = (),
) -> DialPlan:
    """Decide how to call `number` for `tenant` (toll-fraud checks are separate)."""
    mode = dial_mode(number, tenant.operator_assistance)
    profile = select_profile(profiles, number)
    dialled = format_for_trunk(number, profile)
    steps: tuple[DtmfStep, ...] = ()
    if mode is DialMode.AUTO_EXTENSION:
        assert number.extension is not None
        steps = dtmf_steps(
            profile.extension_prefix + number.extension + profile.extension_suffix,
            duration_ms=profile.dtmf_duration_ms,
            gap_ms=profile.dtmf_gap_ms,
            pre_delay=profile.pre_delay,
        )
    return DialPlan(
        number=number,
        mode=mode,
        profile=profile,
        dialled=dialled,
        dial_string=trunk.dial_string(dialled),
        dtmf=steps,
    )
