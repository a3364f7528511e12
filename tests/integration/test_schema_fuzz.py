"""Schemathesis against the running service, from its own OpenAPI document (bounded).

For every operation, generated requests (valid and invalid) must never get a 5xx, and every
response must be documented: its status code, content type, headers and body schema. A
service of its own (own Stasis app, own database): the fuzzer changes tenant settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.conftest import Sandbox
from tests.support.service import TOKEN, ServiceProcess, service_config

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
async def fuzzed_service(
    asterisk: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    proc = ServiceProcess(folder, service_config(folder, app="phonemfa-fuzz"))
    await proc.start()
    yield proc
    await proc.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_service: ServiceProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{fuzzed_service.url}/v1/openapi.json", headers=AUTH, timeout=10
    )


# Schemathesis' own pytest plugin does not run under pytest 9: its Hypothesis strategies do.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_contract(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, operations
    tried = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure is reproducible
            suppress_health_check=list(HealthCheck),
        )
        def keeps_contract(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=30)

        try:
            keeps_contract()
        except Unsatisfiable:
            # Negative mode: an operation with nothing to get wrong (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        tried += 1
    assert tried >= 5
