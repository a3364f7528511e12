"""GET /v1/openapi.json: the API described, schemas generated from the models that validate
requests (so the document cannot drift from what the service accepts). Response schemas are
models written for the document; a test checks real responses against them."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from phonemfa import __version__
from phonemfa.config import TenantSettings
from phonemfa.outcomes import Outcome
from phonemfa.service import CALL_STATUSES

REF = "#/components/schemas/{model}"


class TimelineEntryView(BaseModel):
    model_config = ConfigDict(extra="allow", title="TimelineEntry")
    at: str = Field(description="ISO-8601, UTC")
    event: str = Field(description="dialing, ringing, answered, extension_sent, key, ...")


class CallView(BaseModel):
    model_config = ConfigDict(title="Call")
    id: str
    status: str = Field(description="the current step while in progress; the outcome once ended")
    outcome: Literal[tuple(o.value for o in Outcome)] | None  # type: ignore[valid-type]
    reason: str | None
    tenant: str
    user: str | None
    phone: str = Field(description="masked: country code and last two digits")
    mode: str = Field(description="direct, auto_extension, operator (none when blocked)")
    language: str
    origin: str = Field(description="api, cli or dialplan")
    number_matching: bool
    created_at: str
    updated_at: str
    ended_at: str | None
    callback_url: str | None
    backup_phones: list[str] = Field(description="masked; called in turn (fallback chain)")
    timeline: list[TimelineEntryView] | None = None


class CallListView(BaseModel):
    model_config = ConfigDict(title="CallList")
    calls: list[CallView]
    next_cursor: str | None


class ErrorField(BaseModel):
    field: str
    reason: str


class ErrorView(BaseModel):
    model_config = ConfigDict(extra="allow", title="Error")
    error: str = Field(description="machine-readable code")
    message: str
    fields: list[ErrorField] | None = None


class TenantView(BaseModel):
    model_config = ConfigDict(title="TenantSettingsView")
    tenant: str
    settings: dict[str, Any]


class BlockView(BaseModel):
    model_config = ConfigDict(title="Block")
    blocked: bool
    tenant: str
    user: str
    reason: str
    call_id: str | None
    since: str | None


class HealthView(BaseModel):
    model_config = ConfigDict(title="Health")
    status: Literal["ok"]
    ari_connected: bool
    store: Literal["ok", "unavailable"]
    accepting_calls: bool
    # The details: absent but for a token for every tenant.
    ari_problem: str | None = Field(
        default=None,
        description="why ARI is not connected (null when it is): the last connection error, "
        "or another connection having taken over the ARI app (then no calls until "
        "restarted); absent but for a token for every tenant",
    )
    calls_in_progress: int = Field(
        default=0, description="every tenant's; absent but for a token for every tenant"
    )
    calls_waiting_for_line: int = Field(
        default=0, description="every tenant's; absent but for a token for every tenant"
    )


def _json(ref: str, description: str = "") -> dict[str, Any]:
    return {
        "description": description or ref,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=ref)}}},
    }


def _err(description: str) -> dict[str, Any]:
    return _json("Error", description)


_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _wait_param(description: str) -> dict[str, Any]:
    # 60: api.MAX_WAIT (api imports this module)
    schema = {"type": "number", "minimum": 0, "maximum": 60}
    return {"name": "wait", "in": "query", "description": description, "schema": schema}


_TENANT = {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"}}
_USER = {"name": "user", "in": "path", "required": True, "schema": {"type": "string"}}
_AUTH = {"401": _err("no bearer token"), "403": _err("wrong token, or another tenant's")}


_STORE = _err("store_unavailable: the call store cannot be read or written (Retry-After)")
# The operations that read or write the store (POST /v1/calls says its own 503).
_STORE_USERS = (
    ("/v1/calls", "get"),
    ("/v1/calls/{call_id}", "get"),
    ("/v1/calls/{call_id}", "delete"),
    ("/v1/tenants/{tenant}/settings", "put"),
    ("/v1/users/{user}/block", "get"),
    ("/v1/users/{user}/block", "delete"),
)


_NULL = {"type": "null"}
_PREFIX = REF.removesuffix("{model}")


def _merge_patch(settings: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The settings as a PUT takes them: a JSON merge patch (RFC 7396), every key optional,
    and null removing one (its default then applies), at any depth (found by review: only
    the top and `prompts` said so, and clients made from the document refused
    `{"calls": {"attempts": null}}`, which the API takes). Each settings object it refers
    to gets a `<Name>Patch` of its own in `schemas`; arrays replace, as a patch's do."""
    patch = _patch_object(settings, schemas)
    return {
        **patch,
        "title": "TenantSettingsPatch",
        "description": "A JSON merge patch onto the tenant's settings: objects merge, null "
        "removes a key (its default applies), anything else replaces.",
    }


def _patch_object(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k not in ("required", "properties", "title")}
    if "properties" in schema:
        out["properties"] = {
            key: {"anyOf": [_patch_of(value, schemas), _NULL]}
            for key, value in schema["properties"].items()
        }
    if "patternProperties" in schema:  # prompts: language -> message -> prompt
        out["patternProperties"] = {
            pattern: {"anyOf": [_patch_of(value, schemas), _NULL]}
            for pattern, value in schema["patternProperties"].items()
        }
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = {"anyOf": [_patch_of(extra, schemas), _NULL]}
    return out


def _patch_of(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A value's schema in a patch: an object merges (a patch of it), anything else is as is."""
    ref = schema.get("$ref", "")
    if ref.startswith(_PREFIX):
        name = ref.removeprefix(_PREFIX)
        target = schemas.get(name, {})
        if target.get("type") != "object" or "properties" not in target:
            return schema  # an enum, say
        if f"{name}Patch" not in schemas:
            schemas[f"{name}Patch"] = {}  # made once, even if it refers to itself
            schemas[f"{name}Patch"] = {**_patch_object(target, schemas), "title": f"{name}Patch"}
        return {**schema, "$ref": REF.format(model=f"{name}Patch")}
    if schema.get("type") == "object":
        return _patch_object(schema, schemas)
    if "anyOf" in schema:
        return {**schema, "anyOf": [_patch_of(s, schemas) for s in schema["anyOf"]]}
    return schema


@functools.cache
def openapi_document() -> dict[str, Any]:
    from phonemfa.api import StartCallBody

    schemas: dict[str, Any] = {}
    for model in (
        StartCallBody,
        CallView,
        CallListView,
        ErrorView,
        TenantView,
        BlockView,
        HealthView,
    ):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[schema.get("title", model.__name__)] = schema
    settings = TenantSettings.model_json_schema(ref_template=REF)
    schemas.update(settings.pop("$defs", {}))
    schemas["TenantSettings"] = settings
    schemas["TenantSettingsPatch"] = _merge_patch(settings, schemas)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "phonemfa",
            "version": __version__,
            "description": "Phone-call second factor on Asterisk. Bearer token on every "
            "endpoint but /healthz. Webhooks: when a call with callback_url ends, its record "
            "is POSTed there with X-Phonemfa-Signature: sha256=<hex HMAC-SHA256 of the body "
            "with the tenant's webhook_secret> and X-Phonemfa-Delivery: <call id>.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness, ARI connection and store health (no token needed)",
                    "description": "For anyone (no token, or any header but a bearer "
                    "token): up, ARI connected, store, accepting calls. With a token for every "
                    "tenant, also why ARI is not connected and the calls in progress and "
                    "waiting for a line. A wrong bearer token: 403.",
                    "security": [{}, {"bearer": []}],
                    "responses": {
                        "200": _json("Health", "the service is up"),
                        "403": _err("a wrong bearer token (none at all is fine)"),
                    },
                }
            },
            "/v1/calls": {
                "post": {
                    "summary": "Start a verification call",
                    "description": "A number that cannot be dialled: 400. A policy refusal "
                    "(blocked user, country or number type refused): 201 with outcome "
                    "`blocked` and the reason. A velocity limit: 429 with Retry-After.",
                    "parameters": [
                        _wait_param(
                            "hold the answer up to this many seconds until the call ends (the "
                            "call is placed whatever becomes of this request)"
                        )
                    ],
                    "requestBody": {"required": True, **_json("StartCallBody")},
                    "responses": {
                        "201": _json("Call", "the call (queued), or blocked, or ended (wait)"),
                        "400": _err("invalid body, number or query parameter"),
                        **_AUTH,
                        "413": _err("body too large"),
                        "415": _err("not application/json"),
                        "429": _err("velocity limit: retry after Retry-After seconds"),
                        "503": _err(
                            "not taking calls: shutting_down, store_unavailable, "
                            "ari_misconfigured (credentials refused or no ARI at ari.url), "
                            "ari_app_taken"
                        ),
                    },
                },
                "get": {
                    "summary": "List calls, newest first",
                    "parameters": [
                        {"name": "user", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": sorted(CALL_STATUSES)},
                        },
                        {"name": "tenant", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "since",
                            "in": "query",
                            "description": "ISO-8601 or epoch seconds",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("CallList", "a page of calls"),
                        "400": _err("bad parameter"),
                        **_AUTH,
                    },
                },
            },
            "/v1/calls/{call_id}": {
                "parameters": [_CALL_ID],
                "get": {
                    "summary": "A call and its timeline",
                    "parameters": [_wait_param("hold up to this many seconds until the call ends")],
                    "responses": {
                        "200": _json("Call", "the call"),
                        "400": _err("bad parameter"),
                        **_AUTH,
                        "404": _err("no such call"),
                    },
                },
                "delete": {
                    "summary": "Cancel (hang up) a call in progress",
                    "responses": {
                        "200": _json("Call", "the call, cancelled"),
                        "202": _json(
                            "Call", "asked to end, not ended within 10 s: GET it for how it ends"
                        ),
                        **_AUTH,
                        "404": _err("no such call"),
                        "409": _err("the call already ended, or ended otherwise meanwhile"),
                    },
                },
            },
            "/v1/tenants/{tenant}/settings": {
                "parameters": [_TENANT],
                "get": {
                    "summary": "A tenant's settings in effect (secrets shown as ***)",
                    "responses": {
                        "200": _json("TenantSettingsView", "settings"),
                        **_AUTH,
                        "404": _err("no such tenant"),
                    },
                },
                "put": {
                    "summary": "Change a tenant's settings (a JSON merge patch onto the "
                    "current ones, null removing a key; persisted; used from the next call on)",
                    "requestBody": {"required": True, **_json("TenantSettingsPatch")},
                    "responses": {
                        "200": _json("TenantSettingsView", "the settings now in effect"),
                        "400": _err("invalid settings, naming the field"),
                        **_AUTH,
                        "403": _err(
                            "wrong token, another tenant's, or a setting only a token for "
                            "every tenant may change (forbidden_setting: toll-fraud "
                            "protection, limits, calls.max_duration, file or recording prompts)"
                        ),
                        "404": _err("no such tenant"),
                        "413": _err("body too large"),
                        "415": _err("not application/json"),
                    },
                },
            },
            "/v1/users/{user}/block": {
                "parameters": [
                    _USER,
                    {"name": "tenant", "in": "query", "schema": {"type": "string"}},
                ],
                "get": {
                    "summary": "Whether a user is blocked (after a fraud report)",
                    "responses": {
                        "200": _json("Block", "the block"),
                        "400": _err("a query parameter other than tenant"),
                        **_AUTH,
                        "404": _err("not_blocked: not blocked; not_found: no such tenant"),
                    },
                },
                "delete": {
                    "summary": "Unblock a user",
                    "responses": {
                        "204": {"description": "unblocked"},
                        "400": _err("a query parameter other than tenant"),
                        **_AUTH,
                        "404": _err("not_blocked: not blocked; not_found: no such tenant"),
                    },
                },
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (a token for every tenant only: they "
                    "name every tenant)",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_AUTH,
                        "403": _err("wrong token, or one limited to some tenants"),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_AUTH,
                    },
                }
            },
        },
    }
    for path, method in _STORE_USERS:
        document["paths"][path][method]["responses"]["503"] = _STORE
    return document
