"""What a token limited to some tenants (a tenant's own identity system) may do beyond its
tenants' calls: change their settings, but not what protects whoever pays for the trunk;
not read metrics that name every tenant, nor the details of /healthz. Also: a body nested
too deeply is a 400, and so is a status filter that no call can have. And a cancel that
comes as the call ends otherwise is not answered as if it had cancelled it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from phonemfa.api import SERVICE_KEY, _since, build_app
from phonemfa.config import Config
from phonemfa.service import CallService
from phonemfa.store import CallRecord, Store, StoreUnavailable
from tests.unit.test_store import record

ALL = {"Authorization": "Bearer operator-token"}
ACME = {"Authorization": "Bearer acme-token"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """The API of a service that is not started (no ARI): enough for settings and metrics."""
    config = Config.model_validate(
        {
            "ari": {"password": "x", "url": "http://127.0.0.1:1"},
            "api": {"tokens": ["operator-token", {"token": "acme-token", "tenants": ["acme"]}]},
            "storage": {"path": str(tmp_path / "db.sqlite")},
            "tenants": {"default": {}, "acme": {}},
        }
    )
    store = await Store.open(config.storage.path)
    async with TestClient(TestServer(build_app(CallService(config, store)))) as c:
        yield c
    await store.close()


async def put(client: TestClient[Any, Any], body: Any, headers: dict[str, str]) -> Any:
    resp = await client.put("/v1/tenants/acme/settings", json=body, headers=headers)
    return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"allowed_countries": ["*"]}, "allowed_countries"),
        ({"refused_number_types": []}, "refused_number_types"),
        ({"limits": {"per_user": [], "per_number": [], "per_tenant": []}}, "limits"),
        ({"calls": {"max_duration": 3600}}, "calls.max_duration"),
        ({"region": "CU"}, "region"),  # without allowed_countries, the one country allowed
        ({"prompts": {"en": {"greeting": "/etc/phonemfa/anything.wav"}}}, "prompts.en.greeting"),
        ({"prompts": {"en": {"greeting": "recording:voicemail-1"}}}, "prompts.en.greeting"),
        (
            {"prompts": {"en": {"greeting": "sound:phonemfa-custom/default/en/greeting"}}},
            "prompts.en.greeting",
        ),
    ],
)
async def test_a_tenant_token_cannot_lift_what_protects_the_trunk(
    client: TestClient[Any, Any], body: dict[str, Any], field: str
) -> None:
    status, answer = await put(client, body, ACME)
    assert status == 403, answer
    assert answer["error"] == "forbidden_setting"
    assert [f["field"] for f in answer["fields"]] == [field]
    # The operator's token may (a file prompt is then refused for want of sounds.dir, here).
    status, view = await put(client, body, ALL)
    assert status == 200 or view["error"] == "prompt_unplayable", view


async def test_a_tenant_token_changes_its_own_settings_and_echoes_the_rest(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get("/v1/tenants/acme/settings", headers=ACME)
    current = (await resp.json())["settings"]
    current["operator_assistance"] = True  # GET's body back, one setting changed
    current["prompts"] = {"en": {"greeting": "sound:phonemfa-custom/acme/en/greeting"}}
    status, answer = await put(client, current, ACME)
    assert status == 200, answer
    assert answer["settings"]["operator_assistance"] is True


async def test_a_tenant_token_may_change_the_region_when_countries_are_listed(
    client: TestClient[Any, Any],
) -> None:
    status, answer = await put(client, {"allowed_countries": ["US", "CA"]}, ALL)
    assert status == 200, answer
    status, answer = await put(client, {"region": "CA"}, ACME)  # how numbers are read only
    assert status == 200, answer


async def test_metrics_are_for_a_token_for_every_tenant(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/metrics", headers=ACME)
    assert resp.status == 403
    resp = await client.get("/metrics", headers=ALL)
    assert resp.status == 200 and "phonemfa_calls_in_progress" in await resp.text()


SHORT_HEALTH = {"status", "ari_connected", "store", "accepting_calls"}
HEALTH_DETAILS = {"ari_problem", "calls_in_progress", "calls_waiting_for_line"}


@pytest.mark.parametrize(
    ("headers", "status", "keys"),
    [
        ({}, 200, SHORT_HEALTH),
        # What a probe or the proxy in front of it may send: still the short form, not a 401.
        ({"Authorization": ""}, 200, SHORT_HEALTH),
        ({"Authorization": "Bearer "}, 200, SHORT_HEALTH),
        ({"Authorization": "Basic cHJvYmU6cHJvYmU="}, 200, SHORT_HEALTH),
        (ACME, 200, SHORT_HEALTH),  # ARI's address and every tenant's calls are not its own
        (ALL, 200, SHORT_HEALTH | HEALTH_DETAILS),
        ({"Authorization": "Bearer not-a-token"}, 403, None),
    ],
)
async def test_health_details_are_for_a_token_for_every_tenant(
    client: TestClient[Any, Any], headers: dict[str, str], status: int, keys: set[str] | None
) -> None:
    resp = await client.get("/healthz", headers=headers)
    assert resp.status == status
    if keys is not None:
        body = await resp.json()
        assert set(body) == keys, body
        assert body["status"] == "ok" and body["ari_connected"] is False  # never started


async def test_json_nested_too_deeply_is_a_bad_request(client: TestClient[Any, Any]) -> None:
    body = "[" * 5000 + "]" * 5000
    headers = {**ALL, "Content-Type": "application/json"}
    resp = await client.post("/v1/calls", data=body, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_json"


async def test_a_user_id_of_invisible_characters_is_a_bad_request(
    client: TestClient[Any, Any],
) -> None:
    body = {"phone": "+1 425 555 0100", "user": "\u200b\u200b"}
    resp = await client.post("/v1/calls", json=body, headers=ALL)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["fields"][0]["field"] == "user"


async def test_an_unknown_status_filter_is_a_400_not_an_empty_list(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get("/v1/calls?status=aproved", headers=ALL)
    assert resp.status == 400
    body = await resp.json()
    assert body["message"] == "status: 'aproved' is not a call status (did you mean 'approved'?)"
    for status in ("approved", "queued", "ringing", "interrupted"):
        resp = await client.get(f"/v1/calls?status={status}", headers=ALL)
        assert resp.status == 200 and (await resp.json())["calls"] == []


async def test_a_tenant_s_slow_put_does_not_undo_what_the_operator_changed_meanwhile(
    client: TestClient[Any, Any],
) -> None:
    # Found by review: the tenant's PUT read the settings before its body came, merged onto
    # that copy and checked against it: the operator's tightened countries and limits were
    # written back as they were, with a 200.
    body = json.dumps({"operator_assistance": True}).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"PUT /v1/tenants/acme/settings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-token"
        b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the head is in; the body is slow
    limits = {"per_user": [], "per_number": [], "per_tenant": [{"count": 10, "window": 60}]}
    status, _ = await put(client, {"allowed_countries": ["US"], "limits": limits}, ALL)
    assert status == 200
    writer.write(body)
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    resp = await client.get("/v1/tenants/acme/settings", headers=ALL)
    settings = (await resp.json())["settings"]
    assert settings["allowed_countries"] == ["US"]
    assert settings["limits"]["per_tenant"] == [{"count": 10, "window": 60}]
    assert settings["operator_assistance"] is True  # the tenant's own change


@pytest.mark.parametrize("created_at", ["1" + "0" * 400, "Infinity", "NaN"])
async def test_a_cursor_with_an_impossible_time_is_a_400(
    client: TestClient[Any, Any], created_at: str
) -> None:
    # Found by review: a time too large for a float was a 500 and a traceback in the log.
    cursor = base64.urlsafe_b64encode(f'[{created_at}, "x"]'.encode()).decode()
    resp = await client.get("/v1/calls", params={"cursor": cursor}, headers=ALL)
    assert resp.status == 400
    assert (await resp.json())["fields"][0]["field"] == "cursor"


async def test_a_cursor_nested_deep_or_too_long_is_a_400(client: TestClient[Any, Any]) -> None:
    # Found by review: a cursor of some 1,300 characters decoding to '[[[[...' overflowed
    # json's recursion: a 500 and a traceback in the log.
    deep = base64.urlsafe_b64encode(b"[" * 1000).decode()
    for cursor in (deep, "A" * 600):
        resp = await client.get("/v1/calls", params={"cursor": cursor}, headers=ALL)
        assert resp.status == 400, cursor[:20]
        assert (await resp.json())["fields"][0]["field"] == "cursor"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_block_asked_with_a_misspelt_or_unknown_tenant_is_refused(
    client: TestClient[Any, Any], method: str
) -> None:
    # Found by review: `?tennant=acme` was ignored, and the DELETE acted on default's user.
    resp = await client.request(method, "/v1/users/alice/block?tennant=acme", headers=ALL)
    answer = await resp.json()
    assert (resp.status, answer["fields"][0]["field"]) == (400, "tennant"), answer
    resp = await client.request(method, "/v1/users/alice/block?tenant=acme2", headers=ALL)
    assert (resp.status, (await resp.json())["error"]) == (404, "not_found")
    resp = await client.request(method, "/v1/users/alice/block?tenant=default", headers=ACME)
    assert resp.status == 403
    resp = await client.request(method, "/v1/users/alice/block?tenant=acme", headers=ACME)
    assert (resp.status, (await resp.json())["error"]) == (404, "not_blocked")


async def test_a_store_that_cannot_be_read_is_a_503_not_a_500(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: only starting a call said 503 when the store failed; reads, settings
    # and blocks answered 500 internal_error.
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk I/O error")

    for name in ("get_call", "list_calls", "get_block"):
        monkeypatch.setattr(Store, name, failing)
    for path in ("/v1/calls/c1", "/v1/calls", "/v1/users/alice/block?tenant=acme"):
        resp = await client.get(path, headers=ALL)
        assert (resp.status, (await resp.json())["error"]) == (503, "store_unavailable"), path
        assert resp.headers["Retry-After"] == "5"


async def test_null_in_a_put_removes_a_setting_a_custom_prompt_among_them(
    client: TestClient[Any, Any],
) -> None:
    # Found by review: no PUT could remove a custom prompt ({} merged to nothing, null was a
    # 400), and the stored settings outrank the file's: it stayed for good.
    status, answer = await put(client, {"prompts": {"en": {"greeting": "sound:custom/hi"}}}, ALL)
    assert status == 200 and answer["settings"]["prompts"]["en"]["greeting"] == "sound:custom/hi"
    status, answer = await put(client, {"prompts": {"en": {"greeting": None}}}, ALL)
    assert status == 200 and "greeting" not in answer["settings"]["prompts"].get("en", {})
    # On a tenant with no such prompt: nothing to remove, nothing changes.
    status, answer = await put(client, {"prompts": {"fr": {"greeting": None}}}, ALL)
    assert status == 200 and answer["settings"]["prompts"].get("fr", {}) == {}
    status, answer = await put(client, {"operator_assistance": True}, ALL)
    assert (status, answer["settings"]["operator_assistance"]) == (200, True)
    status, answer = await put(client, {"operator_assistance": None}, ALL)
    assert (status, answer["settings"]["operator_assistance"]) == (200, False)  # its default


async def test_two_puts_for_one_tenant_do_not_undo_each_other(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Installing a PUT's prompts takes a while (sox, espeak-ng): a second PUT merged onto the
    # settings from before the first one's write, and wrote them back.
    update = CallService.update_tenant

    async def slow_update(self: CallService, name: str, settings: Any) -> None:
        await asyncio.sleep(0.1)
        await update(self, name, settings)

    monkeypatch.setattr(CallService, "update_tenant", slow_update)
    results = await asyncio.gather(
        put(client, {"allowed_countries": ["US"]}, ALL),
        put(client, {"operator_assistance": True}, ALL),
    )
    assert [status for status, _ in results] == [200, 200]
    resp = await client.get("/v1/tenants/acme/settings", headers=ALL)
    settings = (await resp.json())["settings"]
    assert (settings["allowed_countries"], settings["operator_assistance"]) == (["US"], True)


async def test_a_fraud_code_the_prompts_do_not_announce_is_refused(
    client: TestClient[Any, Any],
) -> None:
    # Found by review: a 200, and callers told "zero then pound" lost their fraud reports.
    for headers in (ACME, ALL):
        status, answer = await put(client, {"fraud": {"code": "9#"}}, headers)
        assert (status, answer["error"]) == (400, "prompt_unplayable"), answer
        assert "announces 0#" in answer["message"]
    status, answer = await put(client, {"fraud": {"code": "9#", "enabled": False}}, ALL)
    assert status == 200  # no fraud option offered: nothing announced


@pytest.mark.parametrize("since", ["nan", "inf", "-Infinity", "1e400"])
async def test_a_since_that_is_no_time_is_a_400(client: TestClient[Any, Any], since: str) -> None:
    # Found by review: nan listed nothing at all, as if there were no calls.
    resp = await client.get("/v1/calls", params={"since": since}, headers=ALL)
    assert resp.status == 400
    assert (await resp.json())["fields"][0]["field"] == "since"


def test_a_since_without_an_offset_is_utc_whatever_the_server_s_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every time the API gives is UTC; a client that drops the Z means UTC too.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert _since("2026-12-07T00:00:00") == _since("2026-12-07T00:00:00Z") == 1796601600.0
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_start_that_waits_answers_201_even_when_the_store_cannot_be_read_back(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: POST ?wait= placed the call, then read it back from the store at the
    # end of the wait; a read failure there answered 503 store_unavailable, which says no call
    # was placed (a client trying again would call the person twice).
    placed = record("placed-1")

    async def start_call(self: CallService, req: Any) -> CallRecord:
        return placed

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk I/O error")

    monkeypatch.setattr(CallService, "start_call", start_call)
    monkeypatch.setattr(Store, "get_call", failing)
    resp = await client.post("/v1/calls?wait=0.05", json={"phone": "+14255550170"}, headers=ALL)
    view = await resp.json()
    assert resp.status == 201, view
    assert view["id"] == "placed-1" and view["outcome"] is None
    assert resp.headers["Location"] == "/v1/calls/placed-1"


@pytest.mark.parametrize(
    ("ended", "here", "status"),
    [
        ("cancelled", True, 200),
        ("approved", True, 409),
        (None, True, 202),
        (None, False, 409),  # run by a `phonemfa call --config` process
    ],
)
async def test_a_cancel_says_how_the_call_really_ended(
    client: TestClient[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    ended: str | None,
    here: bool,
    status: int,
) -> None:
    # Found by review: an approval decided just before the DELETE, then committed while it
    # waited, was answered 200 (the answer to a cancel that worked). In progress when the
    # DELETE came, the call is read again once the cancel has been asked.
    service = client.server.app[SERVICE_KEY]
    after = record("c1", outcome=ended, status=ended or "prompting")
    reads = iter([record("c1"), after])
    asked: list[str] = []

    async def get_call(call_id: str) -> CallRecord | None:
        return next(reads)

    async def cancel_call(call_id: str, wait: float = 10) -> CallRecord | None:
        asked.append(call_id)
        return after if here else None

    monkeypatch.setattr(service, "get_call", get_call)
    monkeypatch.setattr(service, "cancel_call", cancel_call)
    resp = await client.delete("/v1/calls/c1", headers=ALL)
    body = await resp.json()
    assert (resp.status, asked) == (status, ["c1"]), body
    if status == 409 and ended:
        assert body["error"] == "not_in_progress" and "approved" in body["message"]
    elif status == 409:
        assert body["error"] == "not_cancellable_here"
    else:
        assert body["outcome"] == ended


async def test_a_token_that_is_not_utf8_is_refused_not_an_error(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Header bytes that are not UTF-8 reach the API as surrogates; encoding them raised: a
    # 500 and a traceback in the log for anyone, with no token (found by review).
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"GET /v1/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer[:80]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
