"""Signed webhooks: each finished call's outcome POSTed to the tenant's callback URL.

`Store.finish_call` writes the delivery into the outbox in the same transaction as the
outcome; the `WebhookSender` task sends what is due, records the result, and retries with
back-off. A call never waits for a webhook, and a delivery pending when the process died is
sent when the sender starts again. Delivery is recorded right after the 2xx, so a receiver
sees each call once in normal operation; after a crash at the wrong moment it may see one
twice, with the same `X-Phonemfa-Delivery` id to dedupe on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aiohttp

from phonemfa import __version__
from phonemfa.callback_policy import callback_refused, receiver_of, webhook_session
from phonemfa.store import Store, StoreUnavailable, WebhookDelivery

log = logging.getLogger("phonemfa.webhooks")

SIGNATURE_HEADER = "X-Phonemfa-Signature"
DELIVERY_HEADER = "X-Phonemfa-Delivery"
USER_AGENT = f"phonemfa/{__version__}"
CONCURRENCY = 8
# Deliveries in flight to one receiver (scheme, host, port) at most: one that times out, with
# a backlog of a day's retries, must not hold every slot while other tenants' wait.
PER_RECEIVER = 2
# Look at the outbox at least this often, whatever we expect to be due.
IDLE_POLL = 60.0
# After the store failed us, try it again this much later.
STORE_RETRY = 1.0
# Attempts of one delivery, 1 s apart at first, doubling (with jitter) to an hour apart: a
# receiver down for 14 to 28 hours still gets it (the mean, about 21 hours).
MAX_ATTEMPTS = 40
MAX_DELAY = 3600.0
# The one answer that ends a delivery at once: the receiver says it will never take it.
# Any other (a 404 or 401 while the receiver is deployed or its secret changed, a 400 from a
# receiver that cannot read it yet) is tried again (found by review: every 4xx but 408 and
# 429 was given up at once, an outcome lost to a receiver's deployment).
_GONE = 410
_RETRY_AFTER_STATUSES = frozenset({429, 503})


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether `header` is the body's signature with this secret (constant time)."""
    return hmac.compare_digest(sign(secret, body).encode(), header.encode("utf-8", "replace"))


def webhook_body(record_as_dict: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8; the bytes that are signed and sent."""
    text = json.dumps(
        record_as_dict, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode()


@dataclass(frozen=True)
class _Result:
    at: float
    delivered: bool
    error: str | None = None
    next_attempt_at: float | None = None  # None after a failure: given up


class WebhookSender:
    """Start with `start()`, wake with `notify()` after a `finish_call` that queued a webhook,
    end with `await stop()`. `secrets(tenant)` gives the tenant's webhook secret (None: not
    configured; the delivery waits and retries, as the secret may be set later)."""

    def __init__(
        self,
        store: Store,
        secrets: Callable[[str], str | None],
        *,
        session_factory: Callable[[], aiohttp.ClientSession] = webhook_session,
        timeout: float = 10,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = 1.0,
        max_delay: float = MAX_DELAY,
        concurrency: int = CONCURRENCY,
        per_receiver: int = PER_RECEIVER,
        callback_hosts: tuple[str, ...] | None = None,
    ) -> None:
        self.store = store
        self.secrets = secrets
        # api.callback_hosts as this process has it: a delivery queued before the list was
        # narrowed (a restart with another config) is held to it too.
        self.callback_hosts = callback_hosts
        self.session_factory = session_factory
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.per_receiver = per_receiver
        # And of one tenant, half the slots (never fewer than two receivers' shares: a tenant
        # with one or two receivers never meets it): one whose receivers hang, on many ports
        # or names of its host, must not hold them all, its backlog ahead of everyone's.
        self.per_tenant = max(2 * per_receiver, concurrency // 2)
        # Call id in flight -> its receiver (receiver_of) and tenant, each with its share.
        self._shares: dict[str, tuple[str, str]] = {}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Results the store could not record yet; those deliveries are not sent again.
        self._unrecorded: dict[str, _Result] = {}
        # Deliveries that ended (result committed), by a counter of endings: a read of the
        # outbox that began before an ending may still show that delivery as due.
        self._endings = 0
        self._ended: dict[str, int] = {}

    def start(self) -> None:
        if self._task is None:
            self._session = self.session_factory()
            self._task = asyncio.create_task(self._run(), name="phonemfa-webhooks")

    def notify(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop sending, after one last look at the outbox: a call ended by the shutdown
        itself has its webhook sent now, not at a next start that may never come. Deliveries
        under way get `grace` seconds to finish, then are cancelled (they stay pending and
        are sent on the next start)."""
        if self._stopping:  # stopped already: its session is closed
            return
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            try:
                await self._dispatch()
            except StoreUnavailable:
                pass  # sent at the next start
            except Exception:  # as in _run: the rest of the shutdown must go on
                log.exception("webhooks: unexpected error")
        tasks = list(self._inflight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(StoreUnavailable):
            await self._record_unrecorded()
        if self._session is not None:
            await self._session.close()

    # --- the loop ---

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wait: float | None
            try:
                wait = await self._dispatch()
            except StoreUnavailable as exc:
                log.warning("webhooks: store unavailable: %s", exc)
                wait = STORE_RETRY
            except Exception:
                log.exception("webhooks: unexpected error")
                wait = STORE_RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _dispatch(self) -> float | None:
        """Start the deliveries that are due; returns how long to sleep (None: until woken)."""
        await self._record_unrecorded()
        now = time.time()
        seen = self._endings
        busy = collections.Counter(receiver for receiver, _ in self._shares.values())
        tenants = collections.Counter(tenant for _, tenant in self._shares.values())
        # Each read leaves out the receivers and tenants that have their share in flight,
        # so that one receiver's backlog (a day of retries to one that hangs) hides no
        # other's. A read that filled a share, skipping its next ones, is followed by another
        # without them: at most one more read per share filled.
        left_out: tuple[set[str], set[str]] | None = None
        while (free := self.concurrency - len(self._inflight)) > 0:
            crowded = {r for r, n in busy.items() if n >= self.per_receiver}
            full = {t for t, n in tenants.items() if n >= self.per_tenant}
            if (crowded, full) == left_out:  # a row's receiver on record is not its URL's
                break
            left_out = (crowded, full)
            # Enough rows that, after skipping ours, every free slot can be filled.
            limit = free + len(self._inflight) + len(self._unrecorded) + len(self._ended)
            due = await self.store.due_webhooks(now, limit=limit, but=crowded, but_tenants=full)
            # After the read: a delivery that ended meanwhile may be read as still due.
            stale = {call_id for call_id, ending in self._ended.items() if ending > seen}
            self._ended = {call_id: self._ended[call_id] for call_id in stale}
            skip = self._inflight.keys() | self._unrecorded.keys() | stale
            filled = False  # a due delivery skipped for a share, filled here
            for delivery in due:
                if len(self._inflight) >= self.concurrency:
                    break
                if delivery.call_id in skip:
                    continue
                receiver = receiver_of(delivery.url)
                tenant = delivery.tenant
                if busy[receiver] >= self.per_receiver or tenants[tenant] >= self.per_tenant:
                    filled = True
                    continue
                busy[receiver] += 1
                tenants[tenant] += 1
                self._shares[delivery.call_id] = (receiver, tenant)
                self._inflight[delivery.call_id] = asyncio.create_task(
                    self._deliver(delivery), name=f"webhook-{delivery.call_id}"
                )
            if not filled:
                break
        if len(self._inflight) >= self.concurrency:
            return None  # a delivery ending wakes us
        next_at = await self.store.next_webhook_at(after=now)
        wait = IDLE_POLL if next_at is None else min(IDLE_POLL, max(0.0, next_at - time.time()))
        return min(wait, STORE_RETRY) if self._unrecorded else wait

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        try:
            try:
                result = await self._attempt(delivery)
            except Exception:  # a bug, or the secrets callback: back off all the same
                log.exception("webhook %s: unexpected error", delivery.call_id)
                result = self._failed(delivery, "internal error")
            try:
                await self._record(delivery.call_id, result)
            except StoreUnavailable as exc:
                log.warning("webhook %s: result not recorded yet: %s", delivery.call_id, exc)
                self._unrecorded[delivery.call_id] = result
        finally:
            del self._inflight[delivery.call_id]
            self._shares.pop(delivery.call_id, None)
            self._endings += 1
            self._ended[delivery.call_id] = self._endings
            self._wake.set()

    async def _record(self, call_id: str, result: _Result) -> None:
        if result.delivered:
            await self.store.webhook_delivered(call_id, result.at)
        else:
            assert result.error is not None
            await self.store.webhook_failed(
                call_id, result.error, result.next_attempt_at, at=result.at
            )

    async def _record_unrecorded(self) -> None:
        for call_id, result in list(self._unrecorded.items()):
            await self._record(call_id, result)
            del self._unrecorded[call_id]

    # --- one attempt ---

    async def _attempt(self, d: WebhookDelivery) -> _Result:
        where = receiver_of(d.url)
        secret = self.secrets(d.tenant)
        if not secret:
            return self._failed(d, "no webhook secret for the tenant")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, d.body),
            DELIVERY_HEADER: d.call_id,
        }
        # A name's addresses are checked as it connects (GuardedResolver); aiohttp connects
        # to an address given as such without asking a resolver, so it is checked here (a
        # delivery queued before the API refused such URLs, or before api.callback_hosts
        # left its host out: found by review).
        if (why := callback_refused(d.url, self.callback_hosts)) is not None:
            return self._give_up(d, f"refused callback address: {why}")
        assert self._session is not None
        try:
            async with self._session.post(
                d.url,
                data=d.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.InvalidURL:
            return self._give_up(d, "invalid URL")
        except TimeoutError:
            return self._failed(d, f"no answer from {where} in {self.timeout:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(d, f"{where}: {type(exc).__name__}: {_error_text(exc)}"[:200])
        if 200 <= status < 300:
            log.debug("webhook %s delivered to %s (attempt %d)", d.call_id, where, d.attempts + 1)
            return _Result(time.time(), delivered=True)
        error = f"HTTP {status} from {where}"
        if status == _GONE:
            return self._give_up(d, error)
        delay = _retry_after(retry_after) if status in _RETRY_AFTER_STATUSES else None
        return self._failed(d, error, delay)

    def _failed(self, d: WebhookDelivery, error: str, asked: float | None = None) -> _Result:
        """A failure worth another attempt, unless this was the last one. `asked`: the
        receiver's Retry-After, a wait at least that long (never shorter than the back-off:
        a `Retry-After: 0` or a date already past by our clock would spend the 40 attempts
        in a second; found by review)."""
        attempts = d.attempts + 1
        if attempts >= self.max_attempts:
            return self._give_up(d, f"{error} (attempt {attempts} of {self.max_attempts})")
        # Exponential back-off with "equal jitter": between half and all of the step.
        step = min(self.max_delay, self.base_delay * 2.0 ** min(attempts - 1, 60))
        delay = step / 2 + random.uniform(0, step / 2)
        delay = min(max(delay, asked or 0.0), self.max_delay)
        log.info("webhook %s: %s; attempt %d in %.1fs", d.call_id, error, attempts + 1, delay)
        now = time.time()
        return _Result(now, delivered=False, error=error, next_attempt_at=now + delay)

    def _give_up(self, d: WebhookDelivery, error: str) -> _Result:
        log.warning("webhook %s: given up: %s", d.call_id, error)
        return _Result(time.time(), delivered=False, error=error)


def _error_text(exc: BaseException) -> str:
    """An error's text without the URL: aiohttp's ClientResponseError (an answer it could
    not parse) quotes it whole, and its path or query may hold a receiver's secret."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status}, {exc.message}"
    return str(exc)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "WebhookSender",
    "sign",
    "verify",
    "webhook_body",
]
