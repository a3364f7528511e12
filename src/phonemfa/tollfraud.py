"""Toll-fraud guard: which calls phonemfa refuses to place, and why.

Decisions only, no I/O. A refused call gets a `Refusal` with a stable `code`,
a human `message` and, for rate limits, `retry_after` seconds. The service
turns it into the outcome `blocked`.

Checks, in order: the user is blocked (fraud report), the destination's
country is not allowed, its number type is refused (premium rate...), then the
velocity limits per user, per destination number and per tenant. Only calls
that pass are counted (`admit` records them), so refused attempts cannot push
a real user over a limit. Limits and blocks are per tenant.

Time is passed in as epoch seconds (`time.time()`), the clock of the stored
call records the limiter is seeded from at start-up.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from phonemfa.config import RateLimit, TenantSettings, UnknownTenantError
from phonemfa.numbers import NON_GEOGRAPHIC, NumberType, PhoneNumber

__all__ = [
    "PastCall",
    "Refusal",
    "RefusalCode",
    "SlidingWindowLimiter",
    "TollFraudGuard",
    "check_destination",
]


class RefusalCode(StrEnum):
    USER_BLOCKED = "user_blocked"
    COUNTRY_NOT_ALLOWED = "country_not_allowed"
    NUMBER_TYPE_REFUSED = "number_type_refused"
    RATE_LIMITED_USER = "rate_limited_user"
    RATE_LIMITED_NUMBER = "rate_limited_number"
    RATE_LIMITED_TENANT = "rate_limited_tenant"


@dataclass(frozen=True)
class Refusal:
    code: RefusalCode
    message: str
    retry_after: float | None = None
    """Rate limits only: seconds until a call would be admitted."""


# UANs billed as a geographic call: the UK's 03 numbers (GB, and GG, JE, IM on +44), common
# office switchboards. Refusing "uan" (the default) leaves them be; other UANs are refused
# (found by review: UK 055 corporate numbers, NL 084/087 passed the default rules).
# France's 0806-0809 (numéros banalisés) are billed so too (found by review: refused as
# UANs, so a switchboard on one could not be called).
GEOGRAPHIC_RATE_UAN = ("+443", "+33806", "+33807", "+33808", "+33809")
# NANP's 976 exchange, pay-per-call in any area code, which phonenumbers types as an ordinary
# line (found by review: "+1 212 976 1234" passed where "+1 900" is refused).
NANP_PAY_PER_CALL = "976"


def effective_type(number: PhoneNumber) -> NumberType:
    """The number's type as the toll-fraud rules read it."""
    if number.country_code == 1 and number.e164[5:8] == NANP_PAY_PER_CALL:
        return NumberType.PREMIUM_RATE
    return number.number_type


def check_destination(number: PhoneNumber, tenant: TenantSettings) -> Refusal | None:
    """Country allow-list and refused number types; None when the number may be called."""
    if not tenant.allows_country(number.country):
        if number.country == NON_GEOGRAPHIC:  # "*" does not reach them
            message = (
                f"calls to non-geographic numbers (+{number.country_code}: satellite phones, "
                'international networks...) are not allowed for this tenant; list "001" in '
                "allowed_countries to allow them"
            )
        else:
            allowed = ", ".join(sorted(tenant.allowed_country_set()))
            message = (
                f"calls to {number.country} are not allowed for this tenant (allowed: {allowed})"
            )
        return Refusal(RefusalCode.COUNTRY_NOT_ALLOWED, message)
    kind = effective_type(number)
    if kind in tenant.refused_number_types and not (
        kind is NumberType.UAN and number.e164.startswith(GEOGRAPHIC_RATE_UAN)
    ):
        return Refusal(
            RefusalCode.NUMBER_TYPE_REFUSED,
            f"{kind.value.replace('_', ' ')} numbers are refused",
        )
    return None


class SlidingWindowLimiter:
    """Per-key call timestamps checked against (count, window) rules.

    Memory: each key keeps at most max(count) timestamps (the newest ones are
    all any rule needs), and keys with nothing inside the longest window are
    dropped as time passes. Keys are kept in order of last use, so the expired
    ones are always at the front and pruning costs O(1) per call. `max_keys`
    caps the table under a flood of distinct keys by forgetting the least
    recently used key: that fails open for a long-idle key, never for an active
    one, and is better than running out of memory.
    """

    def __init__(self, rules: Sequence[RateLimit], *, max_keys: int = 1_000_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rules = tuple(rules)
        self.max_keys = max_keys
        self._keep = max((r.count for r in self.rules), default=0)
        self._horizon = max((r.window for r in self.rules), default=0)
        self._times: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._times)

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may be used again; None if it may be used now."""
        times = self._times.get(key)
        if not times:
            return None
        wait = 0.0
        for rule in self.rules:
            # Full when the count-th newest call is still inside the window.
            if len(times) >= rule.count and times[-rule.count] > now - rule.window:
                wait = max(wait, times[-rule.count] + rule.window - now)
        return wait if wait > 0 else None

    def record(self, key: str, at: float) -> None:
        """Count one use of `key` at time `at` (out-of-order times are fine)."""
        if not self.rules:
            return
        times = self._times.pop(key, None) or []
        if not times or at >= times[-1]:
            times.append(at)
        else:
            bisect.insort(times, at)
        if len(times) > self._keep:
            del times[: len(times) - self._keep]
        self._times[key] = times  # re-insert: most recently used last
        self._prune(at)

    def _prune(self, now: float) -> None:
        horizon = now - self._horizon
        while self._times:
            oldest_key = next(iter(self._times))
            if self._times[oldest_key][-1] > horizon and len(self._times) <= self.max_keys:
                break
            del self._times[oldest_key]


@dataclass(frozen=True)
class PastCall:
    """A call already placed, for seeding the limits at start-up. `number` is the number's
    key as the guard's `number_key` makes it (the store keeps a keyed hash, not the number)."""

    tenant: str
    user: str | None
    number: str
    at: float
    backups: tuple[str, ...] = ()
    """The keys of its backup numbers (each counted for its number only)."""


class TollFraudGuard:
    """Decides whether a call may be placed; holds the velocity state and blocked users."""

    def __init__(
        self,
        tenants: Mapping[str, TenantSettings],
        *,
        max_keys: int = 1_000_000,
        number_key: Callable[[str], str] = lambda e164: e164,
    ) -> None:
        self._tenants = dict(tenants)
        self._max_keys = max_keys
        self._number_key = number_key
        self._limiters: dict[tuple[str, str], SlidingWindowLimiter] = {}
        self._blocked: set[tuple[str, str]] = set()
        self.unblocks = 0  # how many unblocks so far: a block read before one is stale

    # --- blocked users (fraud reports) ---

    def block_user(self, tenant: str, user: str) -> None:
        self._blocked.add((tenant, user))

    def unblock_user(self, tenant: str, user: str) -> None:
        self._blocked.discard((tenant, user))
        self.unblocks += 1

    def is_blocked(self, tenant: str, user: str | None) -> bool:
        return user is not None and (tenant, user) in self._blocked

    # --- decisions ---

    def check(
        self,
        tenant: str,
        number: PhoneNumber,
        user: str | None,
        now: float,
        backups: Sequence[PhoneNumber] = (),
    ) -> Refusal | None:
        """Why this call may not be placed now, or None. Records nothing. `backups`: the
        call's backup numbers (fallback chains), each checked as a destination. Their
        per-number limits do not refuse the call: a backup over its limit is left out of the
        chain instead (`number_wait`, CallService)."""
        settings = self._settings(tenant)
        if self.is_blocked(tenant, user):
            return Refusal(RefusalCode.USER_BLOCKED, "this user is blocked after a fraud report")
        for each in (number, *backups):
            refusal = check_destination(each, settings)
            if refusal is not None:
                return refusal
        return self._check_rates(tenant, number, user, now)

    def admit(
        self,
        tenant: str,
        number: PhoneNumber,
        user: str | None,
        now: float,
        backups: Sequence[PhoneNumber] = (),
    ) -> Refusal | None:
        """`check`, and count the call when it may be placed: one call per placed call, for
        its user, its tenant and each of its numbers (its backups may all be dialled)."""
        refusal = self.check(tenant, number, user, now, backups)
        if refusal is None:
            keys = tuple(self._number_key(b.e164) for b in backups)
            self.record(tenant, self._number_key(number.e164), user, now, keys)
        return refusal

    def number_wait(self, tenant: str, number: PhoneNumber, now: float) -> float | None:
        """Seconds until the per-number limits let `number` be called; None if it may be."""
        return self._limiter(tenant, "number").retry_after(self._number_key(number.e164), now)

    def record(
        self, tenant: str, number: str, user: str | None, at: float, backups: Sequence[str] = ()
    ) -> None:
        """Count a placed call to the number with key `number` (admit does it; seeding too),
        and to its backup numbers' keys, which count for their numbers only. A number is
        counted once per call, however many legs dial it (desks behind one switchboard)."""
        for kind, key in self._keys(number, user):
            self._limiter(tenant, kind).record(key, at)
        for key in dict.fromkeys(backups):
            if key != number:
                self._limiter(tenant, "number").record(key, at)

    def seed(self, calls: Iterable[PastCall]) -> None:
        """Load calls placed before a restart (oldest first is cheapest)."""
        for call in sorted(calls, key=lambda c: c.at):
            if call.tenant in self._tenants:
                self.record(call.tenant, call.number, call.user, call.at, call.backups)

    def update_tenant(self, tenant: str, settings: TenantSettings) -> None:
        """New settings for a tenant (changed at run time). Its counters restart when its
        limits changed, since they were kept for the old rules."""
        old = self._tenants.get(tenant)
        self._tenants[tenant] = settings
        if old is None or old.limits != settings.limits:
            for kind in ("user", "number", "tenant"):
                self._limiters.pop((tenant, kind), None)

    def _check_rates(
        self, tenant: str, number: PhoneNumber, user: str | None, now: float
    ) -> Refusal | None:
        refusal: Refusal | None = None
        longest = 0.0
        for kind, key in self._keys(self._number_key(number.e164), user):
            wait = self._limiter(tenant, kind).retry_after(key, now)
            if wait is not None:
                longest = max(longest, wait)
                refusal = refusal or Refusal(_RATE_CODES[kind], _RATE_MESSAGES[kind])
        if refusal is None:
            return None
        # The most specific limit names the reason; the call needs every limit clear.
        return Refusal(refusal.code, refusal.message, retry_after=longest)

    def _settings(self, tenant: str) -> TenantSettings:
        try:
            return self._tenants[tenant]
        except KeyError:
            raise UnknownTenantError(tenant) from None

    @staticmethod
    def _keys(number: str, user: str | None) -> list[tuple[str, str]]:
        keys = [("number", number), ("tenant", "")]
        if user is not None:
            keys.insert(0, ("user", user))
        return keys

    def _limiter(self, tenant: str, kind: str) -> SlidingWindowLimiter:
        limiter = self._limiters.get((tenant, kind))
        if limiter is None:
            limits = self._settings(tenant).limits
            rules = {"user": limits.per_user, "number": limits.per_number}.get(
                kind, limits.per_tenant
            )
            limiter = SlidingWindowLimiter(rules, max_keys=self._max_keys)
            self._limiters[(tenant, kind)] = limiter
        return limiter


_RATE_CODES = {
    "user": RefusalCode.RATE_LIMITED_USER,
    "number": RefusalCode.RATE_LIMITED_NUMBER,
    "tenant": RefusalCode.RATE_LIMITED_TENANT,
}
_RATE_MESSAGES = {
    "user": "too many calls to this user recently",
    "number": "too many calls to this number recently",
    "tenant": "too many calls for this tenant recently",
}
