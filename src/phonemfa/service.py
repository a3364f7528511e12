"""CallService: starts, cancels and reports verification calls, and records all of it.

Everything a call goes through is written to the store as it happens (the record, each
timeline step, the outcome with its webhook in the same transaction), so a restarted service
knows every call it started. Calls in flight are also kept in memory, for `?wait=` and for
reading a live call without touching the disk.

Paths that start calls: the HTTP API, and Asterisk's dialplan (`Stasis(phonemfa,verify,...)`,
which arrives here as an event nobody else claims). Both go through `start_call`, so the
toll-fraud guard and blocks apply to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from phonemfa.ari import AriError, AriNotFound, AriUnavailable, Channel, Event
from phonemfa.calls import CallRefused, prepare_call
from phonemfa.config import Config, TenantSettings, UnknownTenantError
from phonemfa.engine import Engine, log_failure
from phonemfa.fallback import LegKind
from phonemfa.flow import CallRequest
from phonemfa.metrics import Metrics
from phonemfa.numbers import NumberError, mask_text, parse_number
from phonemfa.outcomes import Outcome
from phonemfa.prompt_setup import (
    fraud_code_of,
    prepare_tenant_prompts,
    refuse_without_sounds_dir,
    unserved_languages,
    unspoken_names,
)
from phonemfa.prompts import (
    FRAUD_MESSAGES,
    SHIPPED_FRAUD_CODE,
    PromptCatalog,
    unannounced_fraud_code,
)
from phonemfa.store import (
    ENTRY_ANSWERED,
    CallRecord,
    Store,
    StoreUnavailable,
    TimelineEntry,
    WebhookDelivery,
)
from phonemfa.tollfraud import PastCall, RefusalCode, TollFraudGuard
from phonemfa.users import canonical_user
from phonemfa.webhooks import WebhookSender, webhook_body

log = logging.getLogger("phonemfa.service")

# Steps that are also the call's status while it is in progress (hints and keys are not).
STATUS_STEPS = frozenset(
    {
        "dialing",
        "ringing",
        "answered",
        "extension_sent",
        "extension_prompt",
        "operator_prompt",
        "prompting",
    }
)
# Steps that put a call back to `queued`: it waits, undialled (again, after Asterisk refused
# its channel while stopping).
QUEUED_STEPS = frozenset({"waiting_for_line", "waiting_for_asterisk"})
# Every status a call record can have: queued, a step in progress, an outcome.
CALL_STATUSES = frozenset({"queued"}) | STATUS_STEPS | frozenset(o.value for o in Outcome)
RATE_LIMIT_CODES = frozenset(
    {
        RefusalCode.RATE_LIMITED_USER,
        RefusalCode.RATE_LIMITED_NUMBER,
        RefusalCode.RATE_LIMITED_TENANT,
    }
)
T = TypeVar("T")
# Velocity limits are seeded from the store at start-up at least this far back (further for
# a tenant's longer window).
SEED_HORIZON = 86400.0
# An outcome the store could not write is tried again after this, then twice as long each
# time up to 5 s. Not sooner when other writes succeed: a write that fails on its own (the
# last space of a full disk) would fail the batches of others each time it is tried.
OUTCOME_RETRY = 0.5
DIALPLAN_ENTRY = "verify"
# How far back a dialplan entry found in Stasis at connect time is looked for among ended calls.
ENTRY_HORIZON = 86400.0
# The sweep of our channels Asterisk would not list at connect time: again after this, then
# twice as long each time up to the second, while that connection lasts.
SWEEP_RETRY = 5.0
SWEEP_RETRY_MAX = 60.0
# A request Asterisk did not answer (`_asking_again`) is asked again after each of these.
REQUEST_RETRY_PAUSES = (1.0, 2.0)
# A dialplan entry's answer Asterisk did not take (it timed out the requests while connected):
# asked again after each of these pauses, and by every connect's sweep.
ENTRY_ANSWER_RETRIES = (5.0, 10.0, 20.0, 30.0, 60.0, 60.0, 60.0, 60.0)


class _AnswerTaken(Exception):
    """A dialplan entry's answer, asked again, was taken the first time (_continue_entry)."""


class ServiceUnavailable(Exception):
    """New calls are not taken now: shutting down, or the store cannot write."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RateLimited(Exception):
    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class StartCall:
    """A request for a verification call, from any path."""

    phone: str
    tenant: str = "default"
    user: str | None = None
    language: str | None = None
    code: str | None = None
    callback_url: str | None = None
    origin: str = "api"
    origin_channel: str | None = None
    token_name: str | None = None
    backup_phones: tuple[str, ...] = ()  # called in turn when `phone` reaches nobody

    def __post_init__(self) -> None:
        # Every path (API, dialplan, CLI) keeps and compares the user in one spelling.
        if self.user is not None:
            object.__setattr__(self, "user", canonical_user(self.user) or None)


@dataclass
class LiveCall:
    """A call in flight: its record (kept current), its flow's task, who waits on it."""

    record: CallRecord
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    finishing: asyncio.Task[None] | None = None
    # Decided, not yet on record (the store cannot write): said at shutdown if still so.
    unrecorded: Outcome | None = None
    write_failed: bool = False  # its outcome's write failed once: it waits to be tried again


class LiveCalls(dict[str, LiveCall]):
    """The calls in flight by id, and by user: a fraud report stops the user's other calls
    (CallService._stop_calls_of) without a look at every call in flight (2000 at the
    bench's peak). Add with `[id] =`, remove with `del` or `pop`."""

    def __init__(self) -> None:
        super().__init__()
        self._by_user: dict[tuple[str, str], dict[str, LiveCall]] = {}

    def __setitem__(self, call_id: str, live: LiveCall) -> None:
        self._unindex(call_id)
        super().__setitem__(call_id, live)
        if live.record.user is not None:
            self._by_user.setdefault((live.record.tenant, live.record.user), {})[call_id] = live

    def __delitem__(self, call_id: str) -> None:
        self._unindex(call_id)
        super().__delitem__(call_id)

    def pop(self, call_id: str, *default: Any) -> Any:
        self._unindex(call_id)
        return super().pop(call_id, *default)

    def of_user(self, tenant: str, user: str) -> list[tuple[str, LiveCall]]:
        return list(self._by_user.get((tenant, user), {}).items())

    def _unindex(self, call_id: str) -> None:
        live = self.get(call_id)
        if live is None or live.record.user is None:
            return
        key = (live.record.tenant, live.record.user)
        calls = self._by_user.get(key)
        if calls is not None:
            calls.pop(call_id, None)
            if not calls:
                del self._by_user[key]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def call_view(record: CallRecord, *, timeline: bool = True) -> dict[str, Any]:
    """A call as the API and webhooks show it (numbers masked, times ISO-8601)."""
    view: dict[str, Any] = {
        "id": record.id,
        "status": record.status,
        "outcome": record.outcome,
        "reason": record.reason,
        "tenant": record.tenant,
        "user": record.user,
        "phone": record.phone_masked,
        "mode": record.mode,
        "language": record.language,
        "origin": record.origin,
        "number_matching": record.code_used,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "ended_at": iso(record.ended_at),
        "callback_url": record.callback_url,
        "backup_phones": list(record.backup_phones),
    }
    if timeline:
        view["timeline"] = [_entry_view(e) for e in record.timeline]
    return view


def _entry_view(entry: TimelineEntry) -> dict[str, Any]:
    view: dict[str, Any] = {"at": iso(entry.at), "event": entry.event}
    view.update((k, v) for k, v in entry.details.items() if k not in view)
    return view


def stasis_args(channel: Channel, app: str) -> list[str] | None:
    """The arguments of a channel in `app` (`Stasis(APP,ARGS...)`, as Asterisk shows where it
    is in the dialplan: our outbound legs' too, and a dialplan entry's,
    `verify,NUMBER[,USER[,TENANT]]`, as its StasisStart gave them), or None for a channel that
    is not in it."""
    dialplan = channel.get("dialplan")
    if dialplan is None or dialplan.get("app_name", "").lower() != "stasis":
        return None
    name, *args = _app_args(dialplan.get("app_data", ""))
    return args if name == app else None


def _app_args(data: str) -> list[str]:
    """A dialplan application's arguments as Asterisk splits them for it (and for
    StasisStart's `args`: ast_app_separate_args): no split at a comma in quotes or in
    parentheses; quotes are dropped, a backslash keeps the next character as it is."""
    args: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for c in data:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted and depth == 0:
            args.append("".join(current))
            current = []
        else:
            if c == "(":
                depth += 1
            elif c == ")" and depth > 0:
                depth -= 1
            current.append(c)
    return [*args, "".join(current)]


class _Observer:
    """The flow's observer for one call: timeline and status to the store, as they happen."""

    def __init__(self, service: CallService, live: LiveCall) -> None:
        self.service = service
        self.live = live
        # The channel the flow dials now (each leg of a chain has its own), put on record at
        # each `dialing`: a process that settles the call later can hang it up.
        self.channel: Callable[[], str] | None = None

    def step(self, event: str, details: dict[str, Any]) -> None:
        now = time.time()
        record = self.live.record
        entry = TimelineEntry(now, event, details)
        record.timeline.append(entry)
        store = self.service.store
        store.append_event(record.id, entry)
        record.updated_at = now
        if record.outcome is not None:
            return
        if event in STATUS_STEPS:
            record.status = event
            channel = None
            if event == "dialing" and self.channel is not None:
                channel = record.channel_id = self.channel()
            store.set_status(record.id, event, now, channel)
        elif event in QUEUED_STEPS and record.status != "queued":
            record.status = "queued"
            store.set_status(record.id, "queued", now)

    def outcome(self, outcome: Outcome, reason: str | None) -> None:
        self.live.finishing = asyncio.create_task(self.service._finish(self.live, outcome, reason))

    async def dialling(self) -> None:
        """A service's own channels are found by its sweeps, in its ARI app, should it die.
        A `phonemfa call --config` has an app of its own: the service that settles its call
        after a kill hangs up the channel its record names, so that must be on disk before
        the channel is made (found by review: a backup leg's, queued, was not)."""
        if self.service._primary:
            return
        try:
            await self.service.store.flush()
        except StoreUnavailable as exc:  # dial anyway: TIMEOUT(absolute) still ends it
            log.warning("call %s: its channel is not on record: %s", self.live.record.id, exc)


class CallService:
    def __init__(self, config: Config, store: Store, engine: Engine | None = None) -> None:
        self.config = config
        self.store = store
        self.engine = engine or Engine(config)
        self.engine.on_unrouted = self._on_unrouted  # after the engine's own (app_owner)
        self.engine.connect_hooks.append(self._on_connected)
        self.tenants: dict[str, TenantSettings] = dict(config.tenants)
        self.guard = TollFraudGuard(self.tenants, number_key=store.number_key)
        # Calls created before this are an earlier run's: a dialplan entry whose call ended
        # then, unanswered, is looked for in the store once, at the first sweep (_sweep);
        # this run's own are in memory (_entries).
        self._started_at = time.time()
        self._earlier_entries_swept = False
        self._blocks_seen: tuple[int, int] | None = None  # Store.blocks_stamp when last read
        self._primary = False  # set by start(): the service itself, not a CLI beside it
        self.metrics = Metrics()
        lines = self.engine.lines
        self.metrics.calls_waiting.set_function(lambda: lines.waiting)
        self.webhooks = WebhookSender(
            store, self._webhook_secret, callback_hosts=config.api.callback_hosts
        )
        self.live = LiveCalls()
        self.accepting = False
        self._entries: dict[str, str] = {}  # dialplan entry channel -> its call id
        self._answering: set[str] = set()  # entry channels being given their answer now
        self._background: set[asyncio.Task[Any]] = set()
        self._entry_answers: set[asyncio.Task[Any]] = set()  # _answer_entry_later
        self._sweep_retries: set[asyncio.Task[Any]] = set()  # _sweep_later

    # --- life cycle ------------------------------------------------------------------
    async def start(self, *, primary: bool = True, leave_cli_calls: bool = False) -> None:
        """Load what the store knows, settle calls a previous process left, start taking calls.
        ARI may still be connecting: calls wait for it (healthz says so).

        `primary=False` (the one-shot CLI sharing a service's store): leave the store's calls
        in progress and its webhooks to the service that owns them. `leave_cli_calls`: a
        `phonemfa call` is running on this store (startup.cli_calls_running), its calls in
        progress are its own. Raises AppTaken when another running phonemfa holds our ARI
        app: before anything here is settled or any channel hung up."""
        await self.engine.claim_app()
        self._primary = primary
        for name, data in (await self.store.all_tenant_settings()).items():
            try:
                self._set_tenant(name, self._usable(name, TenantSettings.model_validate(data)))
            except ValidationError as exc:
                log.error("stored settings of tenant %s are invalid, ignored: %s", name, exc)
            else:
                self._say_file_overridden(name, self.tenants[name])
        await self._seed_limits()
        self._blocks_seen = self.store.blocks_stamp()  # before the read: a later block shows
        for block in await self.store.all_blocks():
            self.guard.block_user(block["tenant"], block["user"])
        if primary:
            self.webhooks.start()
            await self._settle_previous_run(leave_cli_calls)
        await self.engine.start()
        self.accepting = True

    async def _seed_limits(self) -> None:
        """The velocity limits count the calls placed before this start, as far back as the
        longest window of any tenant's limits (a week's limit is not reset by a restart;
        found by review), a day at least (a tenant's limits may be changed to a longer
        window later)."""
        self.guard.seed(await self._placed_calls(self.tenants.values()))

    async def _placed_calls(
        self, tenants: Iterable[TenantSettings], tenant: str | None = None
    ) -> list[PastCall]:
        """The calls placed (of `tenant`, or of all) within the longest window of these
        settings' limits, a day at least."""
        windows = [
            rule.window
            for lim in (settings.limits for settings in tenants)
            for rule in (*lim.per_user, *lim.per_number, *lim.per_tenant)
        ]
        since = time.time() - max([SEED_HORIZON, *windows])
        return [
            PastCall(name, user, number, at, backups)
            for name, user, number, at, backups in await self.store.recent_calls(since, tenant)
        ]

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop taking calls, let calls in progress finish within the grace period, then end
        the rest as `interrupted`; deliver what can be delivered; flush the store."""
        self.accepting = False
        grace = self.config.shutdown.grace_period if grace is None else grace
        # Calls still waiting for a line are not dialled now: the user would be called only to
        # be cut off at the end of the grace period.
        self.engine.stop_all(Outcome.INTERRUPTED, "shutdown", dialled=False)
        tasks = [lc.task for lc in self.live.values() if lc.task is not None]
        if tasks:
            log.info("shutting down: %d call(s) in progress, %.0f s to finish", len(tasks), grace)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                self.engine.stop_all(Outcome.INTERRUPTED, "shutdown")
                await asyncio.wait(pending, timeout=15)
        await self._drain_background()
        try:
            await self.webhooks.stop()
            await self.engine.stop()
            await self.store.flush()
        except StoreUnavailable as exc:  # the store's last batch could not be written
            log.error("the store could not write its last changes: %s", exc)
        finally:
            # Last: a write that was only slow has had every chance. Said even when the
            # flush failed: that is when an unrecorded fraud report needs saying most.
            self._say_unrecorded()

    def _say_unrecorded(self) -> None:
        """Outcomes decided while the store could not write, and still not on record: they
        are lost with this process (the next start settles those calls as `interrupted`).
        Say each one, so that an administrator can act on a fraud report."""
        for live in self.live.values():
            outcome = live.unrecorded
            if outcome is None:
                continue
            record = live.record
            log.error(
                "call %s (tenant %s, user %s): outcome %s NOT RECORDED, the store cannot write;"
                " it will read interrupted (service_restarted)%s",
                record.id,
                record.tenant,
                record.user,
                outcome.value,
                ", and no block of its user is on record"
                if outcome is Outcome.FRAUD_REPORTED
                else "",
            )

    async def _drain_background(self) -> None:
        # Answers asked again later wait minutes between tries: the next start's sweep gives
        # them from the record (the callers wait in Stasis meanwhile).
        for task in (*self._entry_answers, *self._sweep_retries):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)

    # --- starting calls ----------------------------------------------------------------
    def tenant_settings(self, tenant: str) -> TenantSettings:
        settings = self.tenants.get(tenant)
        if settings is None:
            raise UnknownTenantError(tenant)
        return settings

    async def start_call(self, req: StartCall) -> CallRecord:
        """Place a call, or record why it was refused. Raises NumberError (cannot be dialled),
        CallRefused (a bad request: code), RateLimited, ServiceUnavailable, UnknownTenantError."""
        self._check_accepting()
        # An unhealthy store is not refused here: the record's own write is the probe that
        # finds out it recovered (and answers 503 when it has not).
        settings = self.tenant_settings(req.tenant)
        if req.callback_url and settings.webhook_secret is None:
            raise CallRefused(
                "no_webhook_secret",
                f"tenant {req.tenant!r} has no webhook_secret to sign with",
                field="callback_url",
            )
        call_id = str(uuid.uuid4())
        now = time.time()
        try:
            request = prepare_call(
                self.config,
                settings,
                self.engine.catalog(req.tenant),
                call_id=call_id,
                phone=req.phone,
                language=req.language,
                code=req.code,
                backup_phones=req.backup_phones,
            )
        except NumberError:
            self.metrics.refused("invalid_number")
            raise
        except CallRefused as refused:
            if refused.refusal is None:  # a bad request, not a policy decision
                raise
            number = parse_number(req.phone, settings.region)
            return await self._blocked(
                req, call_id, number.mask(), refused.code, now, refused.message, refused.field
            )
        number = request.plan.number
        await self._learn_block(req.tenant, req.user)
        self._check_accepting()  # again after that wait: a shutdown may have begun meanwhile
        request, skipped = self._without_limited_backups(request, req.tenant, now)
        backups = [f.plan.number for f in request.fallbacks if f.kind is LegKind.BACKUP]
        refusal = self.guard.admit(req.tenant, number, req.user, now, backups)
        if refusal is not None:
            if refusal.code in RATE_LIMIT_CODES:
                self.metrics.refused(refusal.code.value)
                raise RateLimited(refusal.code.value, refusal.message, refusal.retry_after or 1)
            field = "user" if refusal.code is RefusalCode.USER_BLOCKED else "phone"
            if refusal.code is RefusalCode.USER_BLOCKED and self._block_unrecorded(
                req.tenant, req.user
            ):
                # Its block is held in memory only: a refusal on record before it would
                # outlive it, should the process die before the store takes it.
                self.metrics.refused("store_unavailable")
                raise ServiceUnavailable("store_unavailable", "the call store cannot write")
            return await self._blocked(
                req, call_id, number.mask(), refusal.code.value, now, refusal.message, field
            )
        record = self._new_record(req, call_id, number.mask(), now, request.plan.mode.value)
        record.phone_hash = self.store.number_key(number.e164)
        record.backup_phones = tuple(b.mask() for b in backups)
        record.backup_hashes = tuple(self.store.number_key(b.e164) for b in backups)
        record.language = request.language
        for field in skipped:  # on record with the call, before its first step
            details = {"field": field, "reason": RefusalCode.RATE_LIMITED_NUMBER.value}
            record.timeline.append(TimelineEntry(now, "backup_skipped", details))
        live = LiveCall(record)
        tenant, user = req.tenant, req.user

        def blocked_meanwhile() -> tuple[Outcome, str] | None:
            # A fraud report on another call of the user's, while this one rang elsewhere:
            # its next number is not dialled.
            if self.guard.is_blocked(tenant, user):
                return Outcome.BLOCKED, RefusalCode.USER_BLOCKED.value
            return None

        observer = _Observer(self, live)
        flow = self.engine.flow(request, observer, next_leg_refused=blocked_meanwhile)
        observer.channel = lambda: flow.channel_id
        record.channel_id = flow.channel_id  # known before dialling: start-up clean-up needs it
        self.live[call_id] = live
        try:
            await self.store.create_call(record)  # on record before anything is dialled
        except StoreUnavailable:
            del self.live[call_id]
            self.engine.forget(call_id)
            self.metrics.refused("store_unavailable")
            raise ServiceUnavailable("store_unavailable", "the call store cannot write") from None
        live.task = asyncio.create_task(self._run(live, flow))
        self.metrics.started(req.tenant, record.mode)
        log.info(
            "call %s started: tenant=%s user=%s number=%s mode=%s origin=%s",
            call_id,
            req.tenant,
            req.user or "-",  # no user given
            record.phone_masked,
            record.mode,
            req.origin,
        )
        return record

    def _without_limited_backups(
        self, request: CallRequest, tenant: str, now: float
    ) -> tuple[CallRequest, list[str]]:
        """The request without its backup numbers over their per-number limit (and their
        operator legs), and the fields of those left out. A backup may never be dialled: one
        over its limit (an office's main line, the backup of many users) does not refuse the
        call, it is left out of the chain."""
        skipped = [
            f.field
            for f in request.fallbacks
            if f.kind is LegKind.BACKUP
            and self.guard.number_wait(tenant, f.plan.number, now) is not None
        ]
        if not skipped:
            return request, []
        kept = tuple(f for f in request.fallbacks if f.field not in skipped)
        return dataclasses.replace(request, fallbacks=kept), skipped

    def refusal(self) -> ServiceUnavailable | None:
        """Why new calls are refused now, or None (start_call and /healthz). A store that
        cannot write is not here: the next record's write finds out (start_call)."""
        if not self.accepting:
            return ServiceUnavailable("shutting_down", "phonemfa is shutting down")
        events = self.engine.events
        if events.replaced:
            return ServiceUnavailable(
                "ari_app_taken", "another connection took over the ARI app: restart phonemfa"
            )
        if events.settings_wrong and not self.engine.connected:
            # Accepted, such a call could only fail (ari_error_401): say why now instead.
            return ServiceUnavailable("ari_misconfigured", events.problem or "ARI refused us")
        return None

    def _check_accepting(self) -> None:
        refusal = self.refusal()
        if refusal is not None:
            raise refusal

    async def _learn_block(self, tenant: str, user: str | None) -> None:
        """Take in the blocks another process stored since we last read them: the store's
        blocks are the truth, and `phonemfa call --config` (a process of its own on the same
        database) blocks a user who reports fraud there. One stat per call finds out
        (`Store.blocks_stamp`). Fails closed: blocks that cannot be read refuse the call."""
        if user is None or self.guard.is_blocked(tenant, user):
            return
        stamp = self.store.blocks_stamp()
        if stamp == self._blocks_seen:
            return
        try:
            await self.read_blocks()
        except StoreUnavailable:
            self.metrics.refused("store_unavailable")
            raise ServiceUnavailable("store_unavailable", "the call store cannot be read") from None
        self._blocks_seen = stamp

    async def read_blocks(self) -> None:
        """Apply the blocks on record that we do not hold yet (another process's). Also
        every CLI_SWEEP seconds (server): a `phonemfa call --config` killed between its
        block's commit and its announcement, or that could not write the announcement,
        would otherwise block nobody here until a restart (found by review)."""
        for _ in range(3):
            unblocks = self.guard.unblocks
            blocks = await self.store.all_blocks()
            if self.guard.unblocks == unblocks:  # else a block read may be lifted: read again
                break
        for block in blocks:
            if not self.guard.is_blocked(block["tenant"], block["user"]):
                self.guard.block_user(block["tenant"], block["user"])
                self._stop_calls_of(block["tenant"], block["user"], "")  # as for our own

    def _new_record(
        self, req: StartCall, call_id: str, masked: str, now: float, mode: str
    ) -> CallRecord:
        return CallRecord(
            id=call_id,
            tenant=req.tenant,
            user=req.user,
            phone_masked=masked,
            phone_hash="",
            mode=mode,
            language=req.language or self.tenant_settings(req.tenant).language,
            status="queued",
            outcome=None,
            reason=None,
            origin=req.origin,
            created_at=now,
            updated_at=now,
            ended_at=None,
            channel_id=None,
            origin_channel=req.origin_channel,
            callback_url=req.callback_url,
            code_used=req.code is not None,
            token_name=req.token_name,
        )

    async def _blocked(
        self,
        req: StartCall,
        call_id: str,
        masked: str,
        code: str,
        now: float,
        message: str,
        field: str = "phone",
    ) -> CallRecord:
        """A policy refusal is a call record too: the identity system sees `blocked` and why
        (the reason; the timeline's `refused` step says which number and in words)."""
        record = self._new_record(req, call_id, masked, now, "none")
        record.timeline.append(
            TimelineEntry(now, "refused", {"reason": code, "field": field, "message": message})
        )
        self.metrics.refused(code)
        live = LiveCall(record)
        self.live[call_id] = live
        try:
            await self.store.create_call(record)
            await self._finish(live, Outcome.BLOCKED, code)
        except StoreUnavailable:
            raise ServiceUnavailable("store_unavailable", "the call store cannot write") from None
        finally:
            self.live.pop(call_id, None)
        log.info(
            "call %s blocked: %s (tenant=%s user=%s)", call_id, code, req.tenant, req.user or "-"
        )
        return record

    async def _run(self, live: LiveCall, flow: Any) -> None:
        record = live.record
        try:
            await flow.run()
        finally:
            self.engine.forget(record.id)
            if live.finishing is not None:
                try:
                    await live.finishing
                except Exception:  # a bug: the dialplan caller still gets an answer (none)
                    log.exception("call %s: its outcome could not be finished", record.id)
            if record.origin_channel is not None:
                await self._release_entry(record)
            # Its last steps (closing words, hang-up) may still wait for the store's linger:
            # readers move from memory to the store only once they are committed (with the
            # writer's next commit: no commit of its own per call).
            try:
                await self.store.settled()
            except StoreUnavailable:
                log.warning("call %s: its last steps wait for the store", record.id)
            self.live.pop(record.id, None)

    def _block_unrecorded(self, tenant: str, user: str | None) -> bool:
        """A fraud report of this user's that the store failed to write, waiting to be tried
        again. (One being written is not: the writer takes a refusal after it, in order.)"""
        return user is not None and any(
            live.unrecorded is Outcome.FRAUD_REPORTED and live.write_failed
            for _, live in self.live.of_user(tenant, user)
        )

    async def _finish(self, live: LiveCall, outcome: Outcome, reason: str | None) -> None:
        """Commit the outcome (with its webhook, in one transaction) and only then show it:
        nobody sees an outcome the store does not have. While the store cannot write, keep
        trying: the call stays in memory (and in progress to readers) until it can."""
        record = live.record
        now = time.time()
        webhook = None
        if record.callback_url:  # the body is the record as it will be, outcome and all
            final = dataclasses.replace(
                record,
                status=outcome.value,
                outcome=outcome.value,
                reason=reason,
                ended_at=now,
                updated_at=now,
                timeline=list(record.timeline),
            )
            webhook = WebhookDelivery(
                call_id=record.id,
                tenant=record.tenant,
                url=record.callback_url,
                body=webhook_body(call_view(final)),
                attempts=0,
                next_attempt_at=now,
                delivered_at=None,
                last_error=None,
            )
        # A fraud report blocks the user even if the record keeps another outcome (below):
        # the person did report fraud. In memory at once; on record with the outcome.
        block = self._fraud_block(record) if outcome is Outcome.FRAUD_REPORTED else None
        recorded = False  # our outcome (and block) written; else the record had one already
        live.unrecorded = outcome
        delay = OUTCOME_RETRY
        while True:
            try:
                recorded = await self.store.finish_call(
                    record.id, outcome.value, reason, now, webhook, block
                )
                if not recorded:
                    # Already settled by another process on this store (a service starting
                    # settles every call it finds in progress, a CLI call's too): the
                    # record's outcome is the call's, and the one everybody is shown.
                    stored = await self.store.get_call(record.id)
                    if stored is not None and stored.outcome is not None:
                        log.warning(
                            "call %s: already ended as %s on record; %s not recorded",
                            record.id,
                            stored.outcome,
                            outcome,
                        )
                        outcome, reason = Outcome(stored.outcome), stored.reason
                        now = stored.ended_at or now
                        webhook = None  # not written: the one on record (if any) stands
                break
            except StoreUnavailable:
                if delay == OUTCOME_RETRY:
                    log.error("call %s: cannot write its outcome; retrying", record.id)
                live.write_failed = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        live.unrecorded = None
        if block is not None:
            tenant, user, why = block
            if not recorded:  # the record kept another outcome: the block on its own
                await self._store_block(tenant, user, why, record.id)
            elif not self._primary:
                await self.store.announce_blocks(user)
        record.status = record.outcome = outcome.value
        record.reason = reason
        record.ended_at = record.updated_at = now
        live.done.set()
        if webhook is not None:
            self.webhooks.notify()
        placed = live.task is not None  # blocked calls and a previous run's were never placed
        self.metrics.finished(record.tenant, outcome.value, now - record.created_at, placed)
        # Who, with the outcome: the log is the trace of a fraud report's block should a power
        # cut take its commit (docs/reliability.md).
        log.info(
            "call %s ended: %s%s (tenant=%s user=%s)",
            record.id,
            outcome,
            f" ({reason})" if reason else "",
            record.tenant,
            record.user or "-",
        )

    # --- reading and cancelling --------------------------------------------------------
    async def get_call(self, call_id: str) -> CallRecord | None:
        live = self.live.get(call_id)
        if live is not None:
            return live.record
        return await self.store.get_call(call_id)

    async def wait_call(self, call_id: str, timeout: float) -> CallRecord | None:
        """The call once terminal, or as it stands when `timeout` runs out."""
        await self.wait_done(call_id, timeout)
        return await self.get_call(call_id)

    async def wait_done(self, call_id: str, timeout: float) -> None:
        """Until the call in progress has its outcome committed (set on its record, the one
        start_call returned), or `timeout` runs out."""
        live = self.live.get(call_id)
        if live is not None and not live.done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # no task of its own, unlike wait_for
                    await live.done.wait()

    async def cancel_call(self, call_id: str, wait: float = 10) -> CallRecord | None:
        """Hang up a call in progress (`cancelled`); None when it is not in progress here
        (ended, or run by a `phonemfa call --config` process on our store)."""
        live = self.live.get(call_id)
        if live is None or live.done.is_set():
            return None
        flow = self.engine.flows.get(call_id)
        if flow is not None:
            flow.stop(Outcome.CANCELLED, "cancelled_by_request")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.done.wait(), wait)
        return live.record

    async def list_calls(self, **filters: Any) -> tuple[list[CallRecord], str | None]:
        if filters.get("user") is not None:
            filters["user"] = canonical_user(filters["user"])
        return await self.store.list_calls(**filters)

    # --- tenants and blocks --------------------------------------------------------------
    def _say_file_overridden(self, name: str, stored: TenantSettings) -> None:
        """Settings changed through the API replace the file's for that tenant: an edit of
        the file then does nothing, and an administrator must be told which keys differ."""
        in_file = self.config.tenants.get(name)
        if in_file is None:
            log.warning(
                "tenant %s is not in the config file but has settings stored through the "
                "API: it is kept, with them",
                name,
            )
            return
        keys = differing_keys(settings_json(in_file), settings_json(stored))
        if keys:
            log.warning(
                "tenant %s: its settings stored through the API are used, not the config "
                "file's, which differ in: %s (change them with PUT /v1/tenants/%s/settings)",
                name,
                ", ".join(keys),
                name,
            )

    def _set_tenant(self, name: str, settings: TenantSettings) -> None:
        self.tenants[name] = settings
        self.guard.update_tenant(name, settings)
        self.engine.set_tenant(name, settings)

    def _usable(self, name: str, settings: TenantSettings) -> TenantSettings:
        """Stored settings as they can be used. Earlier versions' API took an
        organization_name it could not speak (no sounds.dir); refusing to start for it would
        leave no way to change it, so it is left out, with a warning: GET shows none, and
        the next PUT of the tenant's settings saves them without it."""
        catalog = PromptCatalog.for_tenant(name, settings, self.engine.shipped)
        if unheard := unannounced_fraud_code(catalog, fraud_code_of(settings)):
            # Saved before such a code was refused. With no fraud prompt of its own, every
            # caller is told 0#, and a 0# read as a wrong answer loses the report: what they
            # are told is taken. With some recorded (a language left shipped), those callers
            # are told the tenant's code: it stays, and the others are named.
            if catalog.has_own(FRAUD_MESSAGES):
                where = ", ".join(sorted({f"{f.language} {f.message}" for f in unheard}))
                log.error(
                    "tenant %s: its fraud code %s is not announced by the shipped prompts "
                    "its callers hear in %s (they say %s): record them",
                    name,
                    settings.fraud.code,
                    where,
                    SHIPPED_FRAUD_CODE,
                )
            else:
                log.error(
                    "tenant %s: stored fraud code %s is not the one its shipped prompts "
                    "announce: %s is used (record greeting_fraud and code_prompt_fraud to "
                    "use %s)",
                    name,
                    settings.fraud.code,
                    SHIPPED_FRAUD_CODE,
                    settings.fraud.code,
                )
                fraud = settings.fraud.model_copy(update={"code": SHIPPED_FRAUD_CODE})
                settings = settings.model_copy(update={"fraud": fraud})
        if self.config.sounds.dir is not None or not unspoken_names(catalog):
            return settings
        log.warning(
            "tenant %s: stored organization_name %r ignored: sounds.dir is not set, so it "
            "cannot be spoken (set sounds.dir to speak it)",
            name,
            settings.organization_name,
        )
        return settings.model_copy(update={"organization_name": None})

    async def update_tenant(self, name: str, settings: TenantSettings) -> None:
        """New settings for a tenant: their prompts installed (or PromptSetupError, nothing
        changed), persisted, then used from the next call on. One update per tenant at a
        time (the API's per-tenant lock): two at once would seed its counts twice."""
        catalog = PromptCatalog.for_tenant(name, settings, self.engine.shipped)
        sounds = self.config.sounds.dir
        if sounds is None:
            refuse_without_sounds_dir({name: catalog}, {name: settings})
        else:  # sox and espeak-ng: blocking
            await asyncio.to_thread(prepare_tenant_prompts, catalog, settings, sounds)
        for warning in unserved_languages({name: catalog}, {name: settings}):
            log.warning("prompts: %s", warning)
        await self.store.put_tenant_settings(name, settings_json(settings))
        placed: list[PastCall] = []
        old = self.tenants.get(name)
        if old is not None and old.limits != settings.limits:
            # New limits start with no count (the guard's were kept for the old rules): they
            # count the calls already placed, or tightening them during toll fraud would hand
            # out a fresh allowance (found by review). Read while the old limits still guard;
            # no await between the swap and the seed.
            placed = await self._placed_calls([settings], name)
            # And the calls admitted whose records were not yet committed when it was read
            # (admitted before it, or during its await): in memory from their admission on,
            # with the time they were counted at (found by review).
            read = {(c.user, c.number, c.at) for c in placed}
            placed += [
                PastCall(name, r.user, r.phone_hash, r.created_at, r.backup_hashes)
                for r in (live.record for live in self.live.values())
                if r.tenant == name
                and r.phone_hash  # a policy refusal placed nothing
                and (r.user, r.phone_hash, r.created_at) not in read
            ]
        self._set_tenant(name, settings)
        self.guard.seed(placed)
        log.info("tenant %s settings changed", name)

    def _fraud_block(self, record: CallRecord) -> tuple[str, str, str] | None:
        """The block a fraud report on this call causes (tenant, user, reason), now in
        memory so no new call for the user gets through; None when the tenant blocks nobody."""
        settings = self.tenants.get(record.tenant)
        if not record.user or settings is None or not settings.fraud.block_user:
            return None
        user = self._block_in_memory(record.tenant, record.user, "fraud_reported", record.id)
        return record.tenant, user, "fraud_reported"

    async def block_user(self, tenant: str, user: str, reason: str, call_id: str | None) -> None:
        """Block at once (in memory), then on record; a store that cannot write keeps the
        block for this run and says so."""
        user = self._block_in_memory(tenant, user, reason)
        await self._store_block(tenant, user, reason, call_id)

    def _block_in_memory(self, tenant: str, user: str, reason: str, but: str = "") -> str:
        """Refuse the user's next calls from now on, and end those in progress that have no
        outcome yet, but the call `but` (the one that reported fraud); the user in its one
        spelling."""
        user = canonical_user(user)
        self.guard.block_user(tenant, user)
        log.warning("user %s of tenant %s blocked: %s", user, tenant, reason)
        self._stop_calls_of(tenant, user, but)
        return user

    def _stop_calls_of(self, tenant: str, user: str, but: str) -> None:
        """A blocked user's calls in progress end `blocked` (user_blocked) unless already
        decided: in an MFA-fatigue attack, the calls beside the one that reported fraud are
        the attacker's too, and none may approve (found by review: only new calls and a
        chain's next number were refused). Stopped like a cancel: no closing words."""
        for call_id, live in self.live.of_user(tenant, user):
            if call_id == but or live.done.is_set():
                continue
            flow = self.engine.flows.get(call_id)
            if flow is not None:  # a decided flow ignores it (flow.stop)
                flow.stop(Outcome.BLOCKED, RefusalCode.USER_BLOCKED.value)

    async def _store_block(self, tenant: str, user: str, reason: str, call_id: str | None) -> None:
        try:
            # Only a CLI's blocks need telling: the service (primary) knows its own, and no
            # other service shares its database (startup.hold_serve_lock).
            await self.store.block_user(
                tenant, user, reason, call_id, time.time(), announce=not self._primary
            )
        except StoreUnavailable:
            log.error("the block of user %s could not be written: it lasts until restart", user)

    async def get_block(self, tenant: str, user: str) -> dict[str, Any] | None:
        return await self.store.get_block(tenant, canonical_user(user))

    async def unblock_user(self, tenant: str, user: str) -> bool:
        user = canonical_user(user)
        removed = await self.store.unblock_user(tenant, user)
        self.guard.unblock_user(tenant, user)
        return removed

    def _webhook_secret(self, tenant: str) -> str | None:
        settings = self.tenants.get(tenant)
        if settings is None or settings.webhook_secret is None:
            return None
        return settings.webhook_secret.get_secret_value()

    # --- restarts --------------------------------------------------------------------------
    async def _settle_previous_run(self, leave_cli_calls: bool = False) -> None:
        """Calls a previous process left in progress end as `interrupted` now (we do not resume
        a half-done verification: a fresh call is cheap, a wrong approval is not). Their
        channels are hung up, and dialplan entries let go, once ARI is connected. With
        `leave_cli_calls`, the CLI's calls are left to the `phonemfa call` running them."""
        left = [
            r for r in await self.store.in_flight() if not (leave_cli_calls and r.origin == "cli")
        ]
        for record in left:
            await self._settle(record, "service_restarted")
            if record.origin_channel:
                self._entries[record.origin_channel] = record.id
        if left:
            log.warning("%d call(s) left in progress by the previous run: interrupted", len(left))

    async def settle_dead_cli_calls(self) -> int:
        """Calls of a `phonemfa call --config` no longer running (killed: else it settles its
        own) end `interrupted` (`cli_ended`) and the channel of their last leg is hung up (in
        the CLI's own ARI app: no sweep of ours would; Asterisk would end it only at
        calls.max_duration).
        Only while no CLI runs on this database: the caller holds
        startup.cli_calls_running. How many there were."""
        left = [r for r in await self.store.in_flight(origin="cli") if r.id not in self.live]
        for record in left:
            await self._settle(record, "cli_ended")
            if record.channel_id:  # not waited for: the caller holds the CLIs' lock
                self._spawn(self._hangup_quietly(record.channel_id))
        if left:
            log.warning("%d call(s) of a phonemfa call that ended: interrupted", len(left))
        return len(left)

    async def _settle(self, record: CallRecord, reason: str) -> None:
        """A call another process left in progress ends `interrupted` now."""
        # With its timeline: the webhook sent for it is the record as it ends.
        record = await self.store.get_call(record.id) or record
        await self._finish(LiveCall(record), Outcome.INTERRUPTED, reason)

    async def _on_connected(self, generation: int, restarted: bool) -> None:
        """Hang up channels of ours that no call owns (left by a previous run, or by calls
        that ended while we were away); let go of dialplan entries we no longer serve.
        When Asterisk will not list them, again later on this connection (`_sweep_later`)."""
        if not await self._sweep():
            task = self._spawn(self._sweep_later(generation))
            self._sweep_retries.add(task)  # a stop does not wait for it (_drain_background)
            task.add_done_callback(self._sweep_retries.discard)

    async def _sweep_later(self, generation: int) -> None:
        """The sweep Asterisk refused at connect time, tried again while that connection
        lasts: else a previous run's callee stayed on the line until its TIMEOUT(absolute),
        and a dialplan caller waited in silence, until the next reconnect (found by review)."""
        delay = SWEEP_RETRY
        while True:
            await asyncio.sleep(delay)
            if self.engine.connection() != generation:
                return  # that connect's own sweep runs
            if await self._sweep():
                log.info("swept our channels after all")
                return
            delay = min(delay * 2, SWEEP_RETRY_MAX)

    async def _sweep(self) -> bool:
        """`_on_connected`'s work; False when Asterisk did not list our app's channels or the
        store could not be read: asked again later (found by review: a read error ended it
        for good, and a dialplan caller waited in silence)."""
        try:
            return await self._sweep_once()
        except StoreUnavailable as exc:
            log.warning("cannot read the calls of our channels (asked again later): %s", exc)
            return False

    async def _sweep_once(self) -> bool:
        try:
            # Asked again when Asterisk times it out: else nothing is swept until the next
            # connect, and a callee or dialplan caller waits on the line (found by review).
            app = await self._asking_again(self.engine.ari.get_application)
        except AriError as exc:
            log.warning("cannot list our channels (asked again later): %s", exc)
            return False
        listed = app.get("channel_ids", [])
        await self._entries_gone_meanwhile(set(listed))
        owned = {flow.channel_id for flow in self.engine.flows.values()}
        # Dialplan entries whose call is still going (or still starting: "") are owned.
        owned |= {cid for cid, call in self._entries.items() if not call or call in self.live}
        # Being answered (out of _entries meanwhile): a refused entry, still in Stasis with
        # no record, would be verified again (found by review).
        owned |= self._answering
        channels = [c for c in listed if c not in owned]
        # Entries whose call ended just before a previous run was killed, unanswered.
        unknown = [c for c in channels if not self._entries.get(c)]
        found: dict[str, CallRecord] = {}
        if unknown and not self._earlier_entries_swept:
            since = time.time() - ENTRY_HORIZON
            try:
                ended_calls = await self.store.ended_calls_of_entries(
                    unknown, since, before=self._started_at
                )
            except StoreUnavailable:  # each verified afresh (below): never an old outcome
                ended_calls = []
            for ended in ended_calls:
                channel_id = ended.origin_channel or ""
                if channel_id in self._entries:
                    continue  # its StasisStart came meanwhile: a verification of its own
                found[channel_id] = ended
                self._entries[channel_id] = ended.id  # _release_entry lets go of it
        for channel_id in channels:
            call_id = self._entries.get(channel_id)
            if call_id == "" or call_id in self.live or channel_id in self._answering:
                continue  # its StasisStart came while we swept: a verification of its own
            record = found.get(channel_id)
            if record is None and call_id:
                record = await self.store.get_call(call_id)
            if record is not None and record.outcome is not None:
                # An entry whose call ended: give the dialplan its answer.
                await self._release_entry(record)
                continue
            try:
                channel = await self.engine.ari.get_channel(channel_id)
            except AriError:
                continue  # gone since the list was read, or not known now: the next connect
            args = stasis_args(channel, self.config.ari.app)
            if args is None:
                # Gone on in the dialplan since the list was read (say, an entry refused):
                # no longer ours to hang up (found by review).
                continue
            if args[:1] == [DIALPLAN_ENTRY]:
                # An entry whose StasisStart we never heard (sent on a connection that died
                # unnoticed, or to a run killed before its call was on record): nothing was
                # dialled for it, and its caller still waits. Cut off, the dialplan would
                # get no answer at all (found by review).
                log.info("a dialplan entry we had not heard of: its verification starts now")
                self._start_entry(channel_id, args[1:])
                continue
            if await self._hangup_quietly(channel_id):
                log.info("hung up a channel no call owns (left by an earlier run)")
        # Every entry an earlier run left in Stasis was listed now: later, a channel in
        # Stasis we never heard of is a new entry, even one that had an answer before.
        self._earlier_entries_swept = True
        return True

    async def _entries_gone_meanwhile(self, listed: set[str]) -> None:
        """Dialplan callers who hung up while we were away (their StasisEnd lost with the
        connection, or Asterisk restarted) cancel their calls now: else the user is rung,
        and may approve, for a caller nobody waits for (found by review); an entry whose
        call has ended is forgotten. Asterisk lists a channel in our app only just after
        its StasisStart: one not listed is asked for."""

        async def check(channel_id: str, call_id: str) -> None:
            try:
                await self.engine.ari.get_channel(channel_id)
            except AriNotFound:
                if self._entries.get(channel_id) == call_id:
                    if call_id in self.live:
                        log.info("call %s: its dialplan caller hung up while we were away", call_id)
                    self._entry_gone(channel_id)
            except AriError:
                pass  # not known now: its hang-up, or the next connect, tells

        unlisted = [(c, call) for c, call in self._entries.items() if c not in listed]
        await asyncio.gather(*(check(c, call) for c, call in unlisted))

    # --- the dialplan entry: Stasis(phonemfa,verify,NUMBER[,USER[,TENANT]]) ----------------
    def _on_unrouted(self, event: Event) -> None:
        if event.type == "ApplicationReplaced":
            # Asterisk now sends this app's events to another connection: we hear nothing
            # more, and taking the app back would deafen the other one. Our calls in progress
            # end now (they could not hear a key); new ones are refused (503) until restart.
            stopped = self.engine.stop_all(Outcome.INTERRUPTED, "ari_app_taken")
            log.error(
                "another connection took over ARI app %r (a second phonemfa with the same "
                "ari.app?): %d call(s) in progress interrupted, no new calls until restarted",
                self.config.ari.app,
                stopped,
            )
            return
        if event.type != "StasisStart" or event.channel_id is None:
            gone = event.type in ("ChannelDestroyed", "StasisEnd")
            if gone and event.channel_id in self._entries:
                self._entry_gone(event.channel_id)
            elif event.type == "ChannelDtmfReceived":
                # Keys only ever answer for the channel that was called; these are not.
                log.debug("ignored a key from channel %s: not a callee's", event.channel_id)
            return
        args = event.args
        if args and args[0] == DIALPLAN_ENTRY:
            self._start_entry(event.channel_id, args[1:])
        else:  # a channel of ours nobody owns (e.g. a previous run's): not ours to keep
            self._spawn(self._hangup_quietly(event.channel_id))

    def _start_entry(self, channel_id: str, args: list[str]) -> None:
        waiting = self._entries.get(channel_id)
        if waiting and self._ended(waiting):
            # An ended call's answer kept to be asked again: the dialplan is in Stasis once
            # more, so it took that answer (its reply lost with a connection or timed out),
            # and this is a verification of its own, which the old outcome must never end
            # (found by review: it was dropped, then handed the old answer).
            del self._entries[channel_id]
            self._entry_answered(waiting, None, confirmed=False)
        elif channel_id in self._entries:  # heard twice: its StasisStart and a connect's sweep
            return
        # Known from now on, so a hang-up before its call is set up is not missed.
        self._entries[channel_id] = ""
        self._spawn(self._dialplan_entry(channel_id, args))

    def _ended(self, call_id: str) -> bool:
        """The call's outcome is committed (or the call is of an earlier run)."""
        live = self.live.get(call_id)
        return live is None or live.done.is_set()

    async def _dialplan_entry(self, channel_id: str, args: list[str]) -> None:
        number = args[0] if args else ""
        user = args[1] if len(args) > 1 and args[1] else None
        tenant = args[2] if len(args) > 2 and args[2] else "default"
        # Its events stay unrouted and come to _on_unrouted: we only need its hang-up.
        try:
            record = await self.start_call(
                StartCall(
                    phone=number,
                    tenant=tenant,
                    user=user,
                    origin="dialplan",
                    origin_channel=channel_id,
                )
            )
        except (NumberError, CallRefused, RateLimited, ServiceUnavailable, UnknownTenantError) as e:
            reason = getattr(e, "code", None) or getattr(e, "reason", None) or type(e).__name__
            log.info("dialplan entry refused: %s (number %s)", reason, mask_text(number))
            await self._continue_entry(channel_id, Outcome.FAILED.value, "", str(reason))
            return
        except Exception:  # a bug: the caller still gets an answer, not silence for good
            log.exception("dialplan entry failed (number %s)", mask_text(number))
            await self._continue_entry(channel_id, Outcome.FAILED.value, "", "internal_error")
            return
        if channel_id not in self._entries:  # the caller hung up while its call was set up
            flow = self.engine.flows.get(record.id)
            if flow is not None:
                flow.stop(Outcome.CANCELLED, "caller_hung_up")
            return
        self._entries[channel_id] = record.id
        if record.outcome is not None:  # blocked at once
            await self._release_entry(record)

    async def _release_entry(self, record: CallRecord) -> None:
        channel_id = record.origin_channel
        if channel_id is None or self._entries.pop(channel_id, None) is None:
            return
        await self._continue_entry(channel_id, record.outcome or "", record.id, record.reason)

    async def _continue_entry(
        self,
        channel_id: str,
        outcome: str,
        call_id: str,
        reason: str | None,
        *,
        later: bool = True,
    ) -> None:
        """Hand the dialplan its answer: PHONEMFA_OUTCOME, PHONEMFA_CALL_ID, then go on.
        Not taken, it is kept for the next connect and, with `later`, asked again meanwhile."""
        self._entries.pop(channel_id, None)
        ari = self.engine.ari
        asked = 0

        async def answer() -> None:
            nonlocal asked
            if asked and channel_id in self._entries:
                raise _AnswerTaken
            asked += 1
            await ari.set_variable(channel_id, "PHONEMFA_OUTCOME", outcome)
            await ari.set_variable(channel_id, "PHONEMFA_CALL_ID", call_id)
            await ari.set_variable(channel_id, "PHONEMFA_REASON", reason or "")
            await ari.continue_in_dialplan(channel_id)

        # Unanswered, the caller waits in Stasis, in silence, for good (found by review).
        self._answering.add(channel_id)
        try:
            await self._asking_again(answer)
            if call_id:
                self._entry_answered(call_id, outcome)
            return
        except _AnswerTaken:
            # Its StasisStart came again while we asked again: the dialplan took an answer
            # Asterisk timed out, and is in Stasis for a verification of its own, which this
            # answer would have ended with our outcome (found by review).
            if call_id:
                self._entry_answered(call_id, outcome, confirmed=False)
            return
        except AriUnavailable:
            pass
        except AriError as exc:
            log.info("dialplan entry channel went away before its answer: %s", exc)
            if call_id and asked > 1:  # or left Stasis: the answer a time-out hid was taken
                self._entry_answered(call_id, outcome, confirmed=False)
            return
        finally:
            self._answering.discard(channel_id)
        if call_id and channel_id in self._entries:
            # Its StasisStart came during the last try: the answer was taken, and the entry
            # is a new verification's, not to be overwritten (found by review).
            self._entry_answered(call_id, outcome, confirmed=False)
        elif call_id:  # the sweep of the next connection gives it too (_on_connected)
            self._entries[channel_id] = call_id
            if later:
                log.warning("Asterisk did not take a dialplan entry's answer: asked again")
                task = self._spawn(self._answer_entry_later(channel_id, call_id))
                self._entry_answers.add(task)
                task.add_done_callback(self._entry_answers.discard)
        else:  # refused: there is no record to give it from; not left waiting in silence
            log.warning("Asterisk did not take a dialplan entry's answer: hung up")
            await self._hangup_quietly(channel_id)

    def _entry_answered(self, call_id: str, outcome: str | None, *, confirmed: bool = True) -> None:
        """On the call's timeline: the dialplan took its answer (ENTRY_ANSWERED; not
        `confirmed` when Asterisk timed the request out and the channel went on all the
        same; no `outcome` when only the dialplan's return to Stasis told). A sweep gives an
        ended call's outcome only to an entry that has not had it."""
        details: dict[str, Any] = {} if outcome is None else {"outcome": outcome}
        if not confirmed:
            details["confirmed"] = False
        entry = TimelineEntry(time.time(), ENTRY_ANSWERED, details)
        live = self.live.get(call_id)
        if live is not None:
            live.record.timeline.append(entry)
        self.store.append_event(call_id, entry)

    async def _answer_entry_later(self, channel_id: str, call_id: str) -> None:
        """A connection that stays up has no connect sweep to give the answer: asked again
        after each pause, until taken or the entry is no longer ours (answered by a sweep,
        or its caller gone). Unanswered, the caller waits in silence (found by review)."""
        for pause in ENTRY_ANSWER_RETRIES:
            await asyncio.sleep(pause)
            if self._entries.get(channel_id) != call_id:
                return
            if not self.engine.connected:
                continue  # the next connect's sweep gives it
            try:
                record = await self.store.get_call(call_id)
            except StoreUnavailable:
                continue  # read again after the next pause
            # Still this entry's (a sweep may have answered it meanwhile): it is ours to give.
            if record is None or self._entries.get(channel_id) != call_id:
                return
            del self._entries[channel_id]
            outcome, reason = record.outcome or "", record.reason
            await self._continue_entry(channel_id, outcome, call_id, reason, later=False)
            if channel_id not in self._entries:
                return  # taken, or the channel is gone
        if self.engine.connected and self._entries.get(channel_id) == call_id:
            # Minutes of silence: the caller is let go rather than left waiting for good.
            del self._entries[channel_id]
            log.warning("a dialplan entry's answer was never taken: hung up")
            await self._hangup_quietly(channel_id)

    def _entry_gone(self, channel_id: str) -> None:
        """The channel that asked for a verification hung up: cancel that verification."""
        call_id = self._entries.pop(channel_id, None)
        flow = self.engine.flows.get(call_id or "")
        if flow is not None:
            flow.stop(Outcome.CANCELLED, "caller_hung_up")

    async def _hangup_quietly(self, channel_id: str) -> bool:
        """Hang up, trying again when Asterisk did not answer; True once it said done.
        Unanswered, the channel stays in Stasis, Down, with nobody to end it."""
        try:
            return await self._asking_again(lambda: self.engine.ari.hangup(channel_id))
        except AriError:
            return False

    async def _asking_again(self, request: Callable[[], Awaitable[T]]) -> T:
        """`request()`, asked again after each of REQUEST_RETRY_PAUSES while Asterisk does
        not answer it (a loaded Asterisk can time out a request it carries out anyway) and
        we are connected; raises the last AriUnavailable then."""
        for delay in REQUEST_RETRY_PAUSES:
            try:
                return await request()
            except AriUnavailable:
                if not self.engine.connected:
                    raise
                await asyncio.sleep(delay)
        return await request()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(log_failure)
        return task


def differing_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """The dotted keys where two settings (as JSON) differ: "calls.attempts", "limits"."""
    if isinstance(a, list) and isinstance(b, list):
        # Every list of tenant settings is a set (countries, number types, limits): the same
        # countries in another order are no difference (noticed in review).
        return [] if sorted(map(repr, a)) == sorted(map(repr, b)) else [path]
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if a == b else [path]
    keys = sorted(set(a) | set(b))
    return [k for key in keys for k in differing_keys(a.get(key), b.get(key), _dotted(path, key))]


def _dotted(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def settings_json(settings: TenantSettings) -> dict[str, Any]:
    """Tenant settings as stored: secrets in clear (the database is the service's own)."""
    data = settings.model_dump(mode="json")
    if settings.webhook_secret is not None:
        data["webhook_secret"] = settings.webhook_secret.get_secret_value()
    return data


def scoped(tenants: Collection[str] | None, tenant: str) -> bool:
    """Whether a token limited to `tenants` (None: all) may act for `tenant`."""
    return tenants is None or tenant in tenants
