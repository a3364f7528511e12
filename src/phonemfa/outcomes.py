"""How a verification call ends (DESIGN §5), and what Asterisk's hang-up causes mean."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    APPROVED = "approved"
    FRAUD_REPORTED = "fraud_reported"
    DENIED = "denied"  # wrong answers, or hung up during the verification prompt
    NO_INPUT = "no_input"  # no key before the time-outs
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    UNREACHABLE = "unreachable"
    BLOCKED = "blocked"  # policy refused the call
    CANCELLED = "cancelled"
    FAILED = "failed"  # an error, with a reason
    INTERRUPTED = "interrupted"  # Asterisk or the service went away mid-call


TERMINAL = frozenset(o.value for o in Outcome)

# Q.850 causes, as ChannelDestroyed reports them when the far end never answered (DESIGN §3).
_BUSY = frozenset({17})
_NO_ANSWER = frozenset({18, 19})
_UNREACHABLE = frozenset({1, 2, 3, 20, 21, 22, 27, 28, 34, 38, 41, 42, 44, 58, 88, 102})


def unanswered_outcome(cause: int) -> tuple[Outcome, str]:
    """The outcome of a call that ended before anyone answered, and its reason."""
    if cause in _BUSY:
        return Outcome.BUSY, f"cause_{cause}"
    if cause in _NO_ANSWER:
        return Outcome.NO_ANSWER, f"cause_{cause}"
    if cause in _UNREACHABLE:
        return Outcome.UNREACHABLE, f"cause_{cause}"
    # Normal clearing (16) or anything else before an answer: the network let us down.
    return Outcome.UNREACHABLE, f"cause_{cause}"
