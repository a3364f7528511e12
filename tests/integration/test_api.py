"""The HTTP API's contract: authentication, validation, refusals, and the OpenAPI document
(which must validate and describe every response these tests see)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from tests.conftest import Sandbox
from tests.support.service import TENANT_TOKEN, TOKEN, Api, ServiceProcess, service_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def service(
    asterisk: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("api")
    proc = ServiceProcess(folder, service_config(folder, app="phonemfa-api-test"))
    await proc.start()
    yield proc
    await proc.stop()


@pytest.fixture(scope="module")
async def spec(service: ServiceProcess) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        status, doc = await Api(session, service.url).request("GET", "/v1/openapi.json")
    assert status == 200
    validate_spec(doc)
    return dict(doc)


class CheckedApi(Api):
    """Every response is checked against the OpenAPI document."""

    def __init__(self, session: aiohttp.ClientSession, url: str, spec: dict[str, Any]) -> None:
        super().__init__(session, url)
        self.spec = spec

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, body = await super().request(method, path, **kw)
        check_response(self.spec, method, path, status, body)
        return status, body


def check_response(spec: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    template = _template(spec, path.split("?")[0])
    operation = spec["paths"][template][method.lower()]
    assert str(status) in operation["responses"], f"{method} {template}: undocumented {status}"
    content = operation["responses"][str(status)].get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None or body is None or isinstance(body, str):
        return
    jsonschema.validate(body, {**schema, "components": spec["components"]})


def _template(spec: dict[str, Any], path: str) -> str:
    parts = path.strip("/").split("/")
    for template in spec["paths"]:
        tparts = template.strip("/").split("/")
        if len(tparts) == len(parts) and all(
            t.startswith("{") or t == p for t, p in zip(tparts, parts, strict=True)
        ):
            return template
    raise AssertionError(f"{path} is not in the OpenAPI document")


@pytest.fixture
async def api(service: ServiceProcess, spec: dict[str, Any]) -> AsyncIterator[CheckedApi]:
    async with aiohttp.ClientSession() as session:
        yield CheckedApi(session, service.url, spec)


async def test_tokens_are_required_and_checked(api: CheckedApi) -> None:
    status, body = await api.request("GET", "/v1/calls", token="")
    assert status == 401 and body["error"] == "unauthorized"
    assert api.last_headers["WWW-Authenticate"].startswith("Bearer")
    status, body = await api.request("GET", "/v1/calls", token="not-" + TOKEN)
    assert status == 403
    for path in ("/metrics", "/v1/openapi.json", "/v1/tenants/default/settings"):
        status, _ = await api.request("GET", path, token="")
        assert status == 401, path
    # /healthz: up or not for anyone; the details (ARI's address in its problem, every
    # tenant's calls) for a token for every tenant only; a wrong token is refused.
    details = {"ari_problem", "calls_in_progress", "calls_waiting_for_line"}
    short = {"status", "ari_connected", "store", "accepting_calls"}
    status, body = await api.request("GET", "/healthz", token="")
    assert status == 200 and set(body) == short, body
    status, body = await api.request("GET", "/healthz", token=TENANT_TOKEN)
    assert status == 200 and set(body) == short, body
    status, body = await api.request("GET", "/healthz")
    assert status == 200 and set(body) == short | details, body
    status, _ = await api.request("GET", "/healthz", token="not-" + TOKEN)
    assert status == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "phone"),
        ({"phone": 12345}, "phone"),
        ({"phone": "+14255550170", "colour": "blue"}, "colour"),
        ({"phone": "+14255550170", "code": "1"}, "code"),
        ({"phone": "+14255550170", "code": "12a"}, "code"),
        ({"phone": "+14255550170", "language": "english please"}, "language"),
        ({"phone": "+14255550170", "callback_url": "ftp://x"}, "callback_url"),
        ({"phone": "+14255550170", "tenant": "Nope!"}, "tenant"),
        ({"phone": "+14255550170", "tenant": "nobody"}, "tenant"),
        ({"phone": "not a number"}, "phone"),
        ({"phone": "+1 425 555 0170 x@"}, "phone"),
        ({"phone": "+14255550130", "backup_phones": "+14255550170"}, "backup_phones"),
        ({"phone": "+14255550130", "backup_phones": ["+14255550170", "12"]}, "backup_phones[1]"),
        ({"phone": "+14255550130", "backup_phones": [""]}, "backup_phones[0]"),
        ({"phone": "+14255550130", "backup_phones": ["(425) 555-0130"]}, "backup_phones[0]"),
        (
            {"phone": "+14255550130", "backup_phones": [f"+1425555017{i}" for i in range(4)]},
            "backup_phones",
        ),
    ],
)
async def test_bad_fields_get_a_400_naming_them(
    api: CheckedApi, body: dict[str, Any], field: str
) -> None:
    status, answer = await api.request("POST", "/v1/calls", json=body)
    assert status == 400, answer
    assert field in [f["field"] for f in answer["fields"]], answer


async def test_a_number_error_carries_its_code(api: CheckedApi) -> None:
    status, answer = await api.request("POST", "/v1/calls", json={"phone": "425-555-1234x@"})
    assert (status, answer["error"], answer["code"]) == (
        400,
        "invalid_number",
        "operator_flag_without_extension",
    )


async def test_oversized_and_non_json_bodies_are_refused(api: CheckedApi) -> None:
    status, answer = await api.request(
        "POST", "/v1/calls", json={"phone": "+14255550170", "user": "x" * 20000}
    )
    assert status == 413, answer
    status, answer = await api.request(
        "POST", "/v1/calls", data=b"phone=1", headers={"Content-Type": "text/plain"}
    )
    assert status == 415, answer
    status, answer = await api.request(
        "POST", "/v1/calls", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and answer["error"] == "invalid_json"


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("+44 909 879 0000", "country_not_allowed"),  # GB is outside a US tenant's countries
        ("+1 900 555 0100", "number_type_refused"),  # US premium rate
    ],
)
async def test_policy_refusals_are_recorded_as_blocked(
    api: CheckedApi, phone: str, reason: str
) -> None:
    status, call = await api.request("POST", "/v1/calls", json={"phone": phone, "user": "u1"})
    assert status == 201
    assert (call["status"], call["outcome"], call["reason"]) == ("blocked", "blocked", reason)
    status, again = await api.request("GET", f"/v1/calls/{call['id']}")
    assert status == 200 and again["outcome"] == "blocked"


async def test_a_backup_number_refused_by_policy_blocks_the_call(api: CheckedApi) -> None:
    body = {"phone": "+14255550130", "backup_phones": ["+1 425 555 0170", "+44 909 879 0000"]}
    status, call = await api.request("POST", "/v1/calls", json=body)
    assert status == 201
    assert (call["outcome"], call["reason"]) == ("blocked", "country_not_allowed")
    refused = [e for e in call["timeline"] if e["event"] == "refused"]
    assert [(e["reason"], e["field"]) for e in refused] == [
        ("country_not_allowed", "backup_phones[1]")
    ]
    assert "GB" in refused[0]["message"]


async def test_a_tenant_token_cannot_touch_another_tenants_calls(api: CheckedApi) -> None:
    status, call = await api.request("POST", "/v1/calls", json={"phone": "+14255550150"})
    assert status == 201
    status, _ = await api.request("GET", f"/v1/calls/{call['id']}", token=TENANT_TOKEN)
    assert status == 404
    status, _ = await api.request("DELETE", f"/v1/calls/{call['id']}", token=TENANT_TOKEN)
    assert status == 404
    status, _ = await api.request(
        "POST", "/v1/calls", json={"phone": "+14255550150"}, token=TENANT_TOKEN
    )
    assert status == 403
    status, page = await api.request("GET", "/v1/calls", token=TENANT_TOKEN)
    assert status == 200 and all(c["tenant"] == "tenant-b" for c in page["calls"])
    status, _ = await api.request("GET", "/v1/tenants/default/settings", token=TENANT_TOKEN)
    assert status == 403
    status, own = await api.request(
        "POST",
        "/v1/calls",
        json={"phone": "+14255550150", "tenant": "tenant-b"},
        token=TENANT_TOKEN,
    )
    assert status == 201
    status, _ = await api.request("GET", f"/v1/calls/{own['id']}", token=TENANT_TOKEN)
    assert status == 200


async def test_settings_are_validated_field_by_field(api: CheckedApi) -> None:
    status, answer = await api.request(
        "PUT", "/v1/tenants/default/settings", json={"calls": {"attempts": 0}}
    )
    assert status == 400 and answer["fields"][0]["field"] == "calls.attempts"
    status, answer = await api.request(
        "PUT", "/v1/tenants/default/settings", json={"operator_assistence": True}
    )
    assert status == 400 and answer["fields"][0]["field"] == "operator_assistence"
    status, answer = await api.request("GET", "/v1/tenants/nobody/settings")
    assert status == 404


async def test_wait_and_paging_parameters_are_checked(api: CheckedApi) -> None:
    status, answer = await api.request("GET", "/v1/calls/whatever?wait=-1")
    assert status == 400 and answer["fields"][0]["field"] == "wait"
    status, answer = await api.request("GET", "/v1/calls/whatever?wiat=30")  # not a wait
    assert status == 400 and answer["fields"][0] == {"field": "wiat", "reason": "unknown parameter"}
    status, answer = await api.request("GET", "/v1/calls?limit=100000")
    assert status == 400
    status, answer = await api.request("GET", "/v1/calls?cursor=garbage")
    assert status == 400 and answer["fields"][0]["field"] == "cursor"
    status, _ = await api.request("GET", "/v1/calls/00000000-0000-0000-0000-000000000000")
    assert status == 404


async def test_a_start_that_waits_answers_with_the_outcome(api: CheckedApi) -> None:
    before = time.time()
    status, answer = await api.request("POST", "/v1/calls?wait=61", json={"phone": "+14255550150"})
    assert status == 400 and answer["fields"][0]["field"] == "wait"
    status, answer = await api.request("POST", "/v1/calls?wiat=60", json={"phone": "+14255550150"})
    assert status == 400 and answer["fields"][0]["field"] == "wiat"
    _, page = await api.request("GET", f"/v1/calls?since={before}")
    assert page["calls"] == []  # refused before any call was placed
    # The bot at 0170 presses '#' at the greeting: the one request sees the call through.
    status, call = await api.request("POST", "/v1/calls?wait=60", json={"phone": "+14255550170"})
    assert status == 201 and call["outcome"] == "approved", call
    assert api.last_headers["Location"] == f"/v1/calls/{call['id']}"
    # A wait shorter than the call: the call as it stands, still going.
    status, call = await api.request("POST", "/v1/calls?wait=0.2", json={"phone": "+14255550170"})
    assert status == 201 and call["outcome"] is None
    assert (await api.wait(call["id"]))["outcome"] == "approved"


async def test_blocks_of_unknown_users(api: CheckedApi) -> None:
    status, answer = await api.request("GET", "/v1/users/nobody-here/block")
    assert status == 404 and answer["blocked"] is False
    status, _ = await api.request("DELETE", "/v1/users/nobody-here/block")
    assert status == 404


async def test_metrics_are_prometheus_text(api: CheckedApi) -> None:
    status, text = await api.request("GET", "/metrics")
    assert status == 200
    assert "# TYPE phonemfa_calls_started_total counter" in text
