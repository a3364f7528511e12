"""Fallback chains (DESIGN §2): when a call does not reach the person, who is called next.

A verification call is a chain of legs, dialled one after the other on one call record:

    the number asked for
      -> the same number through its operator (tenant `operator_fallback`), when it was keyed
         in to an auto attendant and the switchboard did not put the call through
      -> each backup number of the request (`backup_phones`), in order; one that has an
         extension gets its own operator leg the same way

The next leg is dialled only when the last one did not reach anyone who could answer: busy,
no answer, a voicemail, unreachable, or a switchboard that never put the call through. An
answer of the person (approved, denied, a fraud report, silence at the greeting) ends the
chain, and so does anything that is not about the person: a cancel, a shutdown, Asterisk
going away, an error. Pure decisions, no I/O: the flow (flow.py) runs the legs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from phonemfa.outcomes import Outcome
from phonemfa.policy import DialPlan

# How many backup numbers a request may give: enough for a desk, a mobile and a home
# phone; more is a list to ring through, not a fallback.
MAX_BACKUP_PHONES = 3


class LegKind(StrEnum):
    OPERATOR = "operator"
    """The number of the leg before, through its operator: only after its switchboard missed."""
    BACKUP = "backup"
    """A backup number of the request: after any leg that did not reach the person."""


@dataclass(frozen=True)
class Fallback:
    """A leg that may follow the call's first: how to dial it, and why it would be dialled."""

    kind: LegKind
    plan: DialPlan
    field: str
    """Where its number came from in the request: `phone` or `backup_phones[i]`."""


# Outcomes of a leg that reached nobody who could answer, whatever their reason.
_NOT_REACHED = frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.UNREACHABLE})
# A switchboard answered but did not put the call through to the extension: the extension
# prompt or the operator's was never answered with '#', or the switchboard let go before the
# greeting (a desk busy or not there).
_SWITCHBOARD_MISSED = frozenset(
    {
        (Outcome.NO_INPUT, "extension_did_not_answer"),
        (Outcome.NO_INPUT, "operator_did_not_transfer"),
        (Outcome.UNREACHABLE, "hung_up_before_greeting"),
    }
)


def naming_backup(field: str, message: str) -> str:
    """An error's message about the request's `field`, naming it when it is a backup number
    (`phone` and the other fields go without saying)."""
    return f"{field}: {message}" if field.startswith("backup_phones") else message


def switchboard_missed(outcome: Outcome, reason: str | None) -> bool:
    return (outcome, reason) in _SWITCHBOARD_MISSED


def not_reached(outcome: Outcome, reason: str | None) -> bool:
    """The leg reached nobody who could answer: the next leg may be dialled."""
    return outcome in _NOT_REACHED or switchboard_missed(outcome, reason)


def next_leg(
    legs: tuple[Fallback, ...], outcome: Outcome, reason: str | None
) -> tuple[Fallback, tuple[Fallback, ...]] | None:
    """The leg to dial after one that ended with `outcome` (`reason`), and those left after
    it; None when the chain ends here. An operator leg is taken only right after the leg it
    follows missed at the switchboard (an operator cannot help a main line that is busy or
    does not answer); else it is skipped."""
    if not not_reached(outcome, reason):
        return None
    rest = legs
    if rest and rest[0].kind is LegKind.OPERATOR:
        if switchboard_missed(outcome, reason):
            return rest[0], rest[1:]
        rest = rest[1:]
    if rest:
        return rest[0], rest[1:]
    return None
