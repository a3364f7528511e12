"""No one let in: keys from any channel but the callee's, toll fraud on every path, limits."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Sandbox
from tests.support.ari_raw import RawAri
from tests.support.service import (
    ARI_PASSWORD,
    Api,
    ServiceProcess,
    service_config,
)
from tests.support.softphone import SoftphoneNetwork

pytestmark = pytest.mark.integration

APP = "phonemfa-sec"


@pytest.fixture(scope="module")
async def service(
    asterisk: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("security")
    config = service_config(folder, app=APP)
    config["api"]["tokens"].append(
        {"token": "limited-token-31ab", "limits": [{"count": 2, "window": 60}]}
    )
    strict = {k: v for k, v in config["tenants"]["default"].items() if k != "limits"}
    config["tenants"]["strict"] = strict  # the default toll-fraud protection
    proc = ServiceProcess(folder, config)
    await proc.start()
    yield proc
    await proc.stop()


async def test_keys_from_another_channel_of_ours_do_not_count(
    api: Api, ari: RawAri, phones: SoftphoneNetwork, service: ServiceProcess
) -> None:
    """A caller waiting in the dialplan entry presses # again and again while the mobile
    is being verified: only the mobile's own keys may answer, and it presses none."""
    mobile = await phones.register("mobile")
    user = f"entry-{uuid.uuid4().hex[:6]}"
    await ari.request(
        "POST",
        "/channels",
        json={
            "endpoint": "Local/+14255550100@phonemfa-test-entry",
            "context": "phonemfa-test-caller",
            "extension": "s",
            "priority": 1,
            "variables": {"__APP": APP, "__VERIFY_USER": user, "KEYS_AFTER": "3"},
        },
    )
    ring = await mobile.next_call()
    ring.answer()
    async with asyncio.timeout(60):
        while True:
            _, page = await api.request("GET", f"/v1/calls?user={user}")
            if page["calls"] and page["calls"][0]["outcome"]:
                break
            await asyncio.sleep(0.3)
    call = page["calls"][0]
    assert call["origin"] == "dialplan"
    assert call["outcome"] == "no_input", call
    # The caller's keys did reach phonemfa (else this test would prove nothing):
    ignored = [r for r in service.log_records() if "ignored a key" in r.get("message", "")]
    assert len(ignored) >= 3


async def test_a_blocked_user_is_refused_on_the_dialplan_path_too(
    api: Api, ari: RawAri, service: ServiceProcess, asterisk: Sandbox
) -> None:
    user = f"blocked-{uuid.uuid4().hex[:6]}"
    fraud = await api.start_call("+1 425 555 0171", user=user)
    assert (await api.wait(fraud["id"]))["outcome"] == "fraud_reported"
    await ari.set_global_var("PHONEMFA_LAST_OUTCOME", "")
    await ari.enter_verify("+14255550170", APP, user)
    async with asyncio.timeout(20):
        while True:
            _, page = await api.request("GET", f"/v1/calls?user={user}")
            if len(page["calls"]) == 2:
                break
            await asyncio.sleep(0.2)
    latest = page["calls"][0]
    assert (latest["origin"], latest["outcome"], latest["reason"]) == (
        "dialplan",
        "blocked",
        "user_blocked",
    )


def _cli_call(service: ServiceProcess, number: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "phonemfa",
            "call",
            number,
            "--config",
            str(service.config_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TEST_ARI_PASSWORD": ARI_PASSWORD, "PATH": "/usr/bin:/bin"},
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("number", "reason"),
    [("+44 909 879 0000", "country_not_allowed"), ("+1 900 555 0100", "number_type_refused")],
)
def test_the_cli_path_enforces_the_toll_fraud_guard(
    service: ServiceProcess, number: str, reason: str
) -> None:
    out = _cli_call(service, number, "--tenant", "strict")
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"blocked ({reason})" in out.stdout


async def test_velocity_limits_answer_429_with_retry_after(api: Api) -> None:
    statuses = []
    for _ in range(7):  # the default per-number limit is 5 in 5 minutes
        status, body = await api.request(
            "POST", "/v1/calls", json={"phone": "+1 425 555 0150", "tenant": "strict"}
        )
        statuses.append(status)
    assert statuses[:5] == [201] * 5
    assert statuses[5] == 429
    assert body["error"] == "rate_limited_number"
    assert int(api.last_headers["Retry-After"]) > 0


async def test_a_token_over_its_own_limit_gets_429(api: Api) -> None:
    codes = []
    for _ in range(3):
        status, body = await api.request(
            "POST", "/v1/calls", json={"phone": "+1 425 555 0150"}, token="limited-token-31ab"
        )
        codes.append(status)
    assert codes == [201, 201, 429]
    assert body["error"] == "rate_limited_token" and "Retry-After" in api.last_headers


def test_the_sandbox_listens_on_loopback_only() -> None:
    etc = REPO / "asterisk" / "etc"
    http = (etc / "http.conf").read_text()
    assert re.search(r"^bindaddr\s*=\s*127\.0\.0\.1\s*$", http, re.M)
    binds = re.findall(r"^bind\s*=\s*(\S+)", (etc / "pjsip.conf").read_text(), re.M)
    assert binds and all(b.startswith("127.") for b in binds), binds
    assert "enabled = no" in (etc / "manager.conf").read_text()


def test_check_config_never_prints_secrets(service: ServiceProcess, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "phonemfa", "check-config", "--config", str(service.config_path)],
        capture_output=True,
        text=True,
        env={"TEST_ARI_PASSWORD": ARI_PASSWORD, "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    for secret in service.secrets():
        assert secret not in out.stdout + out.stderr
