"""What a benchmark run places: the kinds of calls, the scenarios, and the per-call result.

Standard library only: the baselines import this module too, and the peer baseline runs in a
venv of its own (bench/.venv-peer) without phonemfa's dependencies.

The sandbox's load bots (asterisk/etc/extensions.conf) answer, read extension digits for 2 s
(none or 1234, anything else hangs up), wait 0.3 s, then press keys:

    +1 425 555 0170   '#', 3 s later '#'
    +1 425 555 0171   '0#'
    +1 425 555 0172   '#', 3 s later '0#'

so each kind of call below has exactly one right outcome.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

APPROVED = "approved"
FRAUD = "fraud_reported"

# The tenants of the bench's phonemfa config: `default` keys extensions in as DTMF (auto
# attendant), `ops` asks an operator to transfer (operator assistance on).
DIRECT, AUTO, OPERATOR = "direct", "auto_extension", "operator"


@dataclass(frozen=True)
class Kind:
    name: str
    phone: str  # as an identity system sends it to the API
    number: str  # E.164, as the baselines dial it
    mode: str
    tenant: str
    extension: str | None
    expected: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("direct", "+1 425 555 0170", "+14255550170", DIRECT, "default", None, APPROVED),
        Kind("direct_fraud", "+1 425 555 0171", "+14255550171", DIRECT, "default", None, FRAUD),
        Kind("auto", "+1 425 555 0170x1234", "+14255550170", AUTO, "default", "1234", APPROVED),
        Kind("auto_fraud", "+1 425 555 0172x1234", "+14255550172", AUTO, "default", "1234", FRAUD),
        Kind("operator", "+1 425 555 0170x1234", "+14255550170", OPERATOR, "ops", "1234", APPROVED),
        Kind(
            "operator_fraud", "+1 425 555 0172x1234", "+14255550172", OPERATOR, "ops", "1234", FRAUD
        ),
    )
}

# Calls on the line at once, for every target: phonemfa's trunk.max_calls and the baselines'
# own limit. What the 2-core sandbox carries while keeping DTMF and events on time; more calls
# wait their turn.
MAX_CALLS = 100

# How long after the answer the auto attendant's digits go out (the bench config's dial
# profile says the same to phonemfa), and how the digits are keyed.
PRE_DELAY = 0.5
DTMF_MS = 100
DTMF_GAP_MS = 100


@dataclass(frozen=True)
class Scenario:
    name: str
    calls: int
    rate: float | None  # calls per second; None: all at once (a burst)
    mix: dict[str, int]  # kind name -> weight
    what: str  # the mix, in words

    @property
    def description(self) -> str:
        if self.rate is None:
            return f"{self.calls} calls at once ({self.what})"
        return f"{self.rate:g} calls/s for {self.duration:g} s ({self.what})"

    def offsets(self) -> list[float]:
        """When each call starts, in seconds from the scenario's start."""
        if self.rate is None:
            return [0.0] * self.calls
        return [i / self.rate for i in range(self.calls)]

    def kinds(self) -> list[Kind]:
        """The kinds in a fixed interleaved order (weights spread evenly, not in blocks), so
        that any stretch of the run has the same mix."""
        total = sum(self.mix.values())
        out: list[Kind] = []
        credit = dict.fromkeys(self.mix, 0.0)
        for _ in range(self.calls):
            for name, weight in self.mix.items():
                credit[name] += weight / total
            name = max(credit, key=lambda n: credit[n])
            credit[name] -= 1
            out.append(KINDS[name])
        return out

    def plan(self) -> list[PlannedCall]:
        return [
            PlannedCall(i, kind.name, offset)
            for i, (kind, offset) in enumerate(zip(self.kinds(), self.offsets(), strict=True))
        ]

    @property
    def duration(self) -> float:
        return 0.0 if self.rate is None else self.calls / self.rate


ALL_KINDS = {name: 1 for name in KINDS}
MOSTLY_DIRECT = {"direct": 9, "direct_fraud": 1}

DIRECT_WORDS = "direct; 1 in 10 reports fraud"
ALL_WORDS = "direct, auto attendant, operator; 1 in 2 reports fraud"
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("burst", 400, None, MOSTLY_DIRECT, DIRECT_WORDS),
        Scenario("sustained", 3000, 50.0, MOSTLY_DIRECT, DIRECT_WORDS),
        Scenario("mix", 750, 25.0, ALL_KINDS, ALL_WORDS),
        Scenario("smoke", 6, 4.0, ALL_KINDS, "one call of each kind"),
    )
}


@dataclass(frozen=True)
class PlannedCall:
    index: int
    kind: str
    offset: float


@dataclass
class CallResult:
    """One call as a target saw it. Times are epoch seconds; `*_ast` ones are Asterisk's own
    event timestamps (same machine, same clock), the others the target's."""

    index: int
    kind: str
    expected: str
    outcome: str | None = None
    reason: str | None = None
    call_id: str | None = None
    t_request: float | None = None  # the API request was sent (baselines: the call began)
    t_dialing: float | None = None  # phonemfa's `dialing` step
    t_answered_ast: float | None = None  # the far end rang (Asterisk)
    t_key_ast: float | None = None  # the '#' that decided the outcome (Asterisk)
    t_decided: float | None = None  # the outcome was decided
    t_visible: float | None = None  # a reader could first see the outcome
    t_end: float | None = None  # the target was done with the call
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return self.error is None and self.outcome == self.expected

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallResult:
        return cls(**data)


def asterisk_time(stamp: str | None) -> float | None:
    """ARI's `timestamp` ("2026-07-21T10:00:00.123+0000") as epoch seconds."""
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that really occurred."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def now() -> float:
    return time.time()
