"""The HTTP API (DESIGN §7), on aiohttp.

Every request but /healthz carries `Authorization: Bearer <token>`: 401 without one, 403 with
a wrong one (compared in constant time against every configured token); /healthz answers
anyone, and shows its details to a token for every tenant. A token may be limited
to some tenants: it cannot start, read, list or cancel another tenant's calls (those read as
404, so it cannot even learn they exist). Bodies are validated by pydantic models; a bad field
gets a 400 naming it; bodies over `api.max_body_bytes` get 413.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from phonemfa.callback_policy import callback_refused
from phonemfa.calls import CallRefused
from phonemfa.config import (
    ApiToken,
    TenantSettings,
    UnknownTenantError,
    did_you_mean,
    field_errors,
)
from phonemfa.fallback import MAX_BACKUP_PHONES, naming_backup
from phonemfa.messages import MessageType
from phonemfa.metrics import CONTENT_TYPE
from phonemfa.numbers import NumberError
from phonemfa.openapi import openapi_document
from phonemfa.outcomes import Outcome
from phonemfa.prompt_setup import PromptSetupError
from phonemfa.prompts import CUSTOM_PREFIX, Finding
from phonemfa.service import (
    CALL_STATUSES,
    CallService,
    RateLimited,
    ServiceUnavailable,
    StartCall,
    call_view,
    scoped,
    settings_json,
)
from phonemfa.store import StoreUnavailable
from phonemfa.tollfraud import SlidingWindowLimiter
from phonemfa.users import canonical_user

log = logging.getLogger("phonemfa.api")

MAX_WAIT = 60.0
TOKEN_KEY = web.RequestKey("token", ApiToken)
SERVICE_KEY = web.AppKey("service", CallService)
TENANT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)


class StartCallBody(BaseModel):
    """POST /v1/calls."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str = Field(min_length=1, max_length=120, description="e.g. +1 425-555-1234x@5678")
    user: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    tenant: str = Field(default="default", pattern=TENANT_NAME)
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    code: str | None = Field(
        default=None, pattern=r"^[0-9]{2,10}$", description="number matching: the code shown"
    )
    callback_url: str | None = Field(default=None, max_length=2048)
    backup_phones: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(
        default_factory=list,
        max_length=MAX_BACKUP_PHONES,
        description="called in turn when phone reaches nobody (busy, no answer, voicemail, "
        "a switchboard that did not put the call through)",
    )

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        # Kept as canonical_user spells it: an id of invisible characters would be no user,
        # out of reach of the per-user limits and of a block.
        if value is not None and not canonical_user(value):
            raise ValueError("has no visible characters")
        return value

    @field_validator("callback_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _URL.match(value):
            raise ValueError("must be an http:// or https:// URL")
        return value


def error(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    body = {"error": kind, "message": message, **extra}
    return web.json_response(body, status=status)


def _bad_fields(exc: ValidationError) -> web.Response:
    fields = [{"field": e.path or "(body)", "reason": e.message} for e in field_errors(exc)]
    first = fields[0] if fields else {"field": "(body)", "reason": "invalid"}
    return error(400, "invalid_request", f"{first['field']}: {first['reason']}", fields=fields)


# --- middlewares ---------------------------------------------------------------------------
def _auth_middleware(tokens: tuple[ApiToken, ...]) -> Any:
    secrets = [(t, t.token.get_secret_value().encode()) for t in tokens]

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            if request.path == "/healthz":
                # Its short form for anyone, whatever a probe or its proxy sends (none, an
                # empty header, its own Basic credentials): what a load balancer needs.
                return await handler(request)
            resp = error(401, "unauthorized", "send Authorization: Bearer <token>")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="phonemfa"'
            return resp
        # Header bytes that are not UTF-8 reach us as surrogates: compared as they came
        # (no token matches them), not a 500 and a traceback per request (found by review).
        candidate = given.strip().encode("utf-8", "surrogateescape")
        found: ApiToken | None = None
        for token, secret in secrets:  # every token compared: no early exit to time
            if hmac.compare_digest(candidate, secret):
                found = token
        if found is None:
            return error(403, "forbidden", "this token is not valid")
        request[TOKEN_KEY] = found
        return await handler(request)

    return auth


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """JSON errors for everything, including aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVICE_KEY].config.api.max_body_bytes
        return error(413, "body_too_large", f"the body is over {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except StoreUnavailable as exc:  # reads, settings, blocks: a full or failing disk
        log.warning("%s %s: the call store is unavailable: %s", request.method, request.path, exc)
        resp = error(503, "store_unavailable", "the call store cannot be read or written")
        resp.headers["Retry-After"] = "5"
        return resp
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error(500, "internal_error", "unexpected error; see the service's log")


# --- helpers ---------------------------------------------------------------------------------
def _service(request: web.Request) -> CallService:
    return request.app[SERVICE_KEY]


def _token(request: web.Request) -> ApiToken:
    return request[TOKEN_KEY]


def _out_of_scope(request: web.Request, tenant: str) -> web.Response | None:
    """403 when the request's token may not act for `tenant`."""
    if scoped(_token(request).tenants, tenant):
        return None
    return error(403, "forbidden_tenant", f"this token may not act for {tenant!r}")


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="Unsupported Media Type")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one too
        raise _Invalid("the body is not valid UTF-8 JSON") from None
    except RecursionError:  # JSON nested deeper than the parser goes
        raise _Invalid("the body's JSON is nested too deeply") from None


class _Invalid(Exception):
    pass


def _float_param(request: web.Request, name: str, low: float, high: float) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _Invalid(f"{name}: must be a number") from None
    if not low <= value <= high or value != value:
        raise _Invalid(f"{name}: must be between {low:g} and {high:g}")
    return value


_LIST_PARAMS = frozenset({"user", "status", "since", "limit", "cursor", "tenant"})


def _unknown_param(request: web.Request, known: Collection[str]) -> web.Response | None:
    """A 400 naming the first query parameter not in `known`, or None."""
    unknown = set(request.query) - set(known)
    return _invalid(f"{min(unknown)}: unknown parameter") if unknown else None


def _invalid(message: str) -> web.Response:
    field, _, reason = message.partition(": ")
    return error(400, "invalid_request", message, fields=[{"field": field, "reason": reason}])


# --- handlers --------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    """Up or not for anyone (no token: a load balancer's probe); the details for a token
    for every tenant, as /metrics: why ARI is down names its address, and the counts are
    every tenant's calls."""
    service = _service(request)
    health: dict[str, Any] = {
        "status": "ok",
        "ari_connected": service.engine.connected,
        "store": "ok" if service.store.healthy else "unavailable",
        "accepting_calls": service.store.healthy and service.refusal() is None,
    }
    token = request.get(TOKEN_KEY)
    if token is not None and token.tenants is None:
        # Why not connected: the last connect error (credentials, address) or a take-over.
        health["ari_problem"] = service.engine.events.problem
        health["calls_in_progress"] = len(service.live)
        health["calls_waiting_for_line"] = service.engine.lines.waiting
    return web.json_response(health)


async def start_call(request: web.Request) -> web.Response:
    service = _service(request)
    token = _token(request)
    # Checked before the call exists: a bad or misspelt ?wait= must not leave a call behind it
    # (a misspelt one would answer at once, while the client thinks it waits for the outcome).
    if (unknown := _unknown_param(request, {"wait"})) is not None:
        return unknown
    try:
        wait_s = _float_param(request, "wait", 0, MAX_WAIT)
    except _Invalid as exc:
        return _invalid(str(exc))
    try:
        body = StartCallBody.model_validate(await _json_body(request))
    except _Invalid as exc:
        return error(400, "invalid_json", str(exc))
    except ValidationError as exc:
        return _bad_fields(exc)
    if (refused := _out_of_scope(request, body.tenant)) is not None:
        return refused
    if body.callback_url is not None:
        hosts = service.config.api.callback_hosts
        if (why := callback_refused(body.callback_url, hosts)) is not None:
            fields = [{"field": "callback_url", "reason": why}]
            return error(400, "callback_url_not_allowed", why, fields=fields)
    wait = request.app[TOKEN_LIMITS_KEY].admit(token, time.time())
    if wait is not None:
        return _too_many("rate_limited_token", "too many calls started with this token", wait)
    try:
        record = await service.start_call(
            StartCall(
                phone=body.phone,
                tenant=body.tenant,
                user=body.user,
                language=body.language,
                code=body.code,
                callback_url=body.callback_url,
                token_name=token.name,
                backup_phones=tuple(body.backup_phones),
            )
        )
    except NumberError as exc:
        return error(
            400,
            "invalid_number",
            naming_backup(exc.field, exc.message),
            code=exc.code,
            fields=[{"field": exc.field, "reason": exc.message}],
        )
    except CallRefused as exc:
        fields = [{"field": exc.field, "reason": exc.message}]
        return error(400, exc.code, naming_backup(exc.field, exc.message), fields=fields)
    except UnknownTenantError:
        return error(
            400,
            "unknown_tenant",
            f"no tenant {body.tenant!r}",
            fields=[{"field": "tenant", "reason": "unknown tenant"}],
        )
    except RateLimited as exc:
        return _too_many(exc.code, exc.message, exc.retry_after)
    except ServiceUnavailable as exc:
        resp = error(503, exc.reason, exc.message)
        resp.headers["Retry-After"] = "5"
        return resp
    if wait_s and record.outcome is None:
        # One request for a client that waits for the outcome anyway (a RADIUS server, a
        # login page): the call is on record and dialled whatever happens to this request.
        # Its outcome is set on this record once committed: not read back from the store,
        # whose failure would answer 503, saying the placed call was not (a client trying
        # again would call the person twice: found by review).
        await service.wait_done(record.id, wait_s)
    view = call_view(record)
    resp = web.json_response(view, status=201)
    resp.headers["Location"] = f"/v1/calls/{record.id}"
    return resp


def _too_many(code: str, message: str, retry_after: float) -> web.Response:
    resp = error(429, code, message, retry_after=round(retry_after, 1))
    resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp


class TokenLimits:
    """Calls started per token over sliding windows (api.tokens[].limits)."""

    def __init__(self, tokens: tuple[ApiToken, ...]) -> None:
        self._limiters = {
            id(t): SlidingWindowLimiter(t.limits, max_keys=1) for t in tokens if t.limits
        }

    def admit(self, token: ApiToken, now: float) -> float | None:
        """None and counted, or the seconds to wait."""
        limiter = self._limiters.get(id(token))
        if limiter is None:
            return None
        wait = limiter.retry_after("", now)
        if wait is None:
            limiter.record("", now)
        return wait


TOKEN_LIMITS_KEY = web.AppKey("token_limits", TokenLimits)


async def get_call(request: web.Request) -> web.Response:
    service = _service(request)
    call_id = request.match_info["call_id"]
    # A misspelt `wait` would answer at once, as if the call had not ended in time.
    if (unknown := _unknown_param(request, {"wait"})) is not None:
        return unknown
    try:
        wait = _float_param(request, "wait", 0, MAX_WAIT)
    except _Invalid as exc:
        return _invalid(str(exc))
    record = await service.get_call(call_id)
    if record is None or not scoped(_token(request).tenants, record.tenant):
        return error(404, "not_found", "no such call")
    if wait and record.outcome is None:
        record = await service.wait_call(call_id, wait) or record
    return web.json_response(call_view(record))


async def cancel_call(request: web.Request) -> web.Response:
    service = _service(request)
    call_id = request.match_info["call_id"]
    record = await service.get_call(call_id)
    if record is None or not scoped(_token(request).tenants, record.tenant):
        return error(404, "not_found", "no such call")
    if record.outcome is not None:
        return error(409, "not_in_progress", f"the call already ended: {record.outcome}")
    asked = await service.cancel_call(call_id)
    # Read again: the call may have ended otherwise meanwhile (an approval decided just
    # before the cancel, being committed): a 200 then would say it was cancelled (found by
    # review).
    ended = await service.get_call(call_id) or record
    if ended.outcome is None and asked is None:  # in progress, but not here
        message = "the call is run by a `phonemfa call --config` process: stop it there"
        return error(409, "not_cancellable_here", message)
    if ended.outcome is None:  # not ended within the wait (a failing store): ask again
        return web.json_response(call_view(ended), status=202)
    if ended.outcome != Outcome.CANCELLED:
        message = f"the call ended before it could be cancelled: {ended.outcome}"
        return error(409, "not_in_progress", message)
    return web.json_response(call_view(ended))


async def list_calls(request: web.Request) -> web.Response:
    service = _service(request)
    token = _token(request)
    query = request.query
    if (unknown := _unknown_param(request, _LIST_PARAMS)) is not None:
        return unknown
    try:
        limit = _float_param(request, "limit", 1, 500)
        since = _since(query.get("since"))
    except _Invalid as exc:
        return _invalid(str(exc))
    status = query.get("status")
    if status is not None and status not in CALL_STATUSES:  # a typo would list nothing
        hint = did_you_mean(status, CALL_STATUSES)
        return _invalid(f"status: {status!r} is not a call status{hint}")
    tenants = token.tenants
    if "tenant" in query:
        if not scoped(tenants, query["tenant"]):
            return error(403, "forbidden_tenant", "this token may not read that tenant")
        tenants = (query["tenant"],)
    try:
        records, cursor = await service.list_calls(
            tenants=tenants,
            user=query.get("user"),
            status=status,
            since=since,
            limit=int(limit or 50),
            cursor=query.get("cursor"),
        )
    except ValueError:
        return _invalid("cursor: not a cursor this service gave out")
    return web.json_response(
        {"calls": [call_view(r, timeline=False) for r in records], "next_cursor": cursor}
    )


def _since(raw: str | None) -> float | None:
    """`since`: epoch seconds or ISO-8601; a time without an offset is UTC, as every time
    the API gives (not the server's local time)."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # nan listed nothing, silently (found by review)
            raise _Invalid("since: ISO-8601 time or epoch seconds, a finite number")
        return seconds
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _Invalid("since: ISO-8601 time or epoch seconds") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _tenant_view(name: str, settings: TenantSettings) -> dict[str, Any]:
    data = settings_json(settings)
    if data.get("webhook_secret"):
        data["webhook_secret"] = "***"
    return {"tenant": name, "settings": data}


def _path_tenant(request: web.Request) -> tuple[str, TenantSettings] | web.Response:
    """The tenant named in the path and its settings; 403 out of scope, 404 unknown."""
    name = request.match_info["tenant"]
    if (refused := _out_of_scope(request, name)) is not None:
        return refused
    settings = _service(request).tenants.get(name)
    if settings is None:
        return error(404, "not_found", f"no tenant {name!r}")
    return name, settings


async def get_settings(request: web.Request) -> web.Response:
    found = _path_tenant(request)
    if isinstance(found, web.Response):
        return found
    return web.json_response(_tenant_view(*found))


async def put_settings(request: web.Request) -> web.Response:
    """Merge the given settings onto the tenant's current ones (keys not given stay)."""
    found = _path_tenant(request)
    if isinstance(found, web.Response):
        return found
    name, _ = found
    try:
        patch = await _json_body(request)
    except _Invalid as exc:
        return error(400, "invalid_json", str(exc))
    if not isinstance(patch, dict):
        return _invalid("(body): must be a JSON object of tenant settings")
    if patch.get("webhook_secret") == "***":  # echoed back from GET: keep the current one
        patch.pop("webhook_secret")
    # The merge and its checks are made on the settings as they are when the body is in,
    # one PUT per tenant at a time: merged onto a copy read before a slow body, a tenant's
    # token put back the countries and limits the operator had just tightened (found by
    # review), and two PUTs undid each other.
    async with request.app[SETTINGS_LOCKS_KEY][name]:
        return await _put_settings(request, name, patch)


async def _put_settings(request: web.Request, name: str, patch: dict[str, Any]) -> web.Response:
    service = _service(request)
    current = service.tenants[name]
    merged = _merge(settings_json(current), patch)
    try:
        settings = TenantSettings.model_validate(merged)
    except ValidationError as exc:
        return _bad_fields(exc)
    if _token(request).tenants is not None:
        if kept := _operator_only_changes(name, current, settings):
            return error(
                403,
                "forbidden_setting",
                f"a token limited to some tenants may not change {', '.join(kept)}",
                fields=[
                    {"field": f, "reason": "only a token for every tenant may change it"}
                    for f in kept
                ],
            )
    try:
        await service.update_tenant(name, settings)
    except PromptSetupError as exc:
        # One entry per field: an unspoken name is reported in every language.
        named = {(_prompt_field(f), f.text): None for f in exc.findings}
        fields = [{"field": field, "reason": reason} for field, reason in named]
        return error(400, "prompt_unplayable", str(exc.findings[0]), fields=fields)
    return web.json_response(_tenant_view(name, settings))


# One lock per tenant for PUT /v1/tenants/{tenant}/settings.
SETTINGS_LOCKS_KEY: web.AppKey[defaultdict[str, asyncio.Lock]] = web.AppKey("settings_locks")


def _operator_only_changes(tenant: str, current: TenantSettings, new: TenantSettings) -> list[str]:
    """The settings a token limited to some tenants (a tenant's own identity system) may not
    change: the toll-fraud protection and the cost ceilings belong to whoever pays for the
    trunk; a prompt given as a file or a recording reads what this server or Asterisk holds
    (a call recording, a voicemail), and another tenant's converted prompts are theirs."""
    changed = [
        key
        for key in ("allowed_countries", "refused_number_types", "limits")
        if getattr(current, key) != getattr(new, key)
    ]
    # Without allowed_countries, the region is the one country allowed.
    if "allowed_countries" not in changed:
        if current.allowed_country_set() != new.allowed_country_set():
            changed.append("region")
    if current.calls.max_duration != new.calls.max_duration:
        changed.append("calls.max_duration")
    custom, own = f"sound:{CUSTOM_PREFIX}/", f"sound:{CUSTOM_PREFIX}/{tenant}/"
    for lang, messages in new.prompts.items():
        for message, source in messages.items():
            if current.prompts.get(lang, {}).get(message) == source:
                continue
            theirs = source.startswith(custom) and not source.startswith(own)
            if not source.startswith("sound:") or theirs:
                changed.append(f"prompts.{lang}.{message}")
    return changed


def _prompt_field(finding: Finding) -> str:
    """The setting at fault: a recording or media names its prompt; a spoken organisation name
    (no file) is the organization_name setting."""
    if finding.message == MessageType.ORGANIZATION_NAME and finding.path is None:
        return "organization_name"
    return f"prompts.{finding.language}.{finding.message}"


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7396): objects merge, null removes a key (its default then
    applies: a custom prompt goes back to the shipped one), anything else replaces."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):  # onto nothing when there is no object to merge onto
            found = out.get(key)
            out[key] = _merge(found if isinstance(found, dict) else {}, value)
        else:
            out[key] = value
    return out


def _block_tenant(request: web.Request) -> str | web.Response:
    """`?tenant=` (default `default`): a 400 for any other parameter (a misspelt `tenant`
    would act on `default`'s user: found by review), 403 out of scope, 404 unknown."""
    if (unknown := _unknown_param(request, {"tenant"})) is not None:
        return unknown
    tenant = request.query.get("tenant", "default")
    if (refused := _out_of_scope(request, tenant)) is not None:
        return refused
    if tenant not in _service(request).tenants:
        return error(404, "not_found", f"no tenant {tenant!r}")
    return tenant


async def get_block(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, user = _block_tenant(request), request.match_info["user"]
    if isinstance(tenant, web.Response):
        return tenant
    block = await service.get_block(tenant, user)
    if block is None:
        return error(404, "not_blocked", f"user {user!r} is not blocked", blocked=False)
    return web.json_response(_block_view(block))


def _block_view(block: dict[str, Any]) -> dict[str, Any]:
    from phonemfa.service import iso

    return {
        "blocked": True,
        "tenant": block["tenant"],
        "user": block["user"],
        "reason": block["reason"],
        "call_id": block.get("call_id"),
        "since": iso(block.get("created_at")),
    }


async def delete_block(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, user = _block_tenant(request), request.match_info["user"]
    if isinstance(tenant, web.Response):
        return tenant
    if not await service.unblock_user(tenant, user):
        return error(404, "not_blocked", f"user {user!r} is not blocked", blocked=False)
    return web.Response(status=204)


async def metrics(request: web.Request) -> web.Response:
    if _token(request).tenants is not None:  # its labels name every tenant, with its counts
        return error(403, "forbidden_tenant", "metrics are for a token for every tenant")
    service = _service(request)
    m = service.metrics
    m.ari_connected.set(1 if service.engine.connected else 0)
    m.ari_connections.set(service.engine.events.generation)
    m.store_healthy.set(1 if service.store.healthy else 0)
    m.store_dropped(service.store.dropped_writes)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def build_app(service: CallService) -> web.Application:
    config = service.config.api
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[errors_middleware, _auth_middleware(config.tokens)],
    )
    app[SERVICE_KEY] = service
    app[TOKEN_LIMITS_KEY] = TokenLimits(config.tokens)
    app[SETTINGS_LOCKS_KEY] = defaultdict(asyncio.Lock)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/calls", start_call)
    app.router.add_get("/v1/calls", list_calls)
    app.router.add_get("/v1/calls/{call_id}", get_call)
    app.router.add_delete("/v1/calls/{call_id}", cancel_call)
    app.router.add_get("/v1/tenants/{tenant}/settings", get_settings)
    app.router.add_put("/v1/tenants/{tenant}/settings", put_settings)
    app.router.add_get("/v1/users/{user}/block", get_block)
    app.router.add_delete("/v1/users/{user}/block", delete_block)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    return app
