"""Shared fixtures: the sandbox Asterisk and the softphones that play the people we call.

The `asterisk` fixture brings the sandbox up when ARI does not answer (asterisk/sandbox.sh up).
It never skips: an integration test without Asterisk is a failure, in CI and locally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bench.sandbox import sandbox_lock, sandbox_up
from phonemfa.engine import Engine
from tests.support import log_audit
from tests.support.ari_raw import RawAri, raw_ari
from tests.support.flows import SANDBOX_TRUNK, FlowHarness, sandbox_config
from tests.support.service import Api, ServiceProcess
from tests.support.softphone import SoftphoneNetwork, softphone_network
from tests.support.webhooks import WebhookReceiver

REPO = Path(__file__).resolve().parents[1]
SANDBOX_SH = REPO / "asterisk" / "sandbox.sh"


@dataclass(frozen=True)
class Sandbox:
    """How to reach the sandbox Asterisk (values match asterisk/etc)."""

    ari_url: str = os.environ.get("PHONEMFA_ARI_URL", "http://127.0.0.1:8088")
    ari_user: str = os.environ.get("PHONEMFA_ARI_USER", "phonemfa")
    ari_password: str = os.environ.get("PHONEMFA_ARI_PASSWORD", "phonemfa-sandbox-secret")
    # The simulated network where softphones register (see asterisk/etc/pjsip.conf).
    network_host: str = "127.0.0.2"
    network_port: int = 5060
    phone_password: str = "sandbox"
    trunk_endpoint: str = "PJSIP/{number}@trunk"

    @property
    def registrar(self) -> str:
        return f"{self.network_host}:{self.network_port}"

    def cli(self, command: str) -> str:
        """Run one Asterisk CLI command in the sandbox and return its output."""
        out = subprocess.run(
            [str(SANDBOX_SH), "cli", command],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout

    def ari_ready(self) -> bool:
        token = b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
        req = urllib.request.Request(
            f"{self.ari_url}/ari/asterisk/info", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def _lock_sandbox() -> None:
    """One test session at a time on the shared sandbox (softphones would steal each other's
    registrations): wait for the lock (the bench's and phone.py's), hold it until this
    process ends."""
    _HELD.enter_context(sandbox_lock(who="tests"))


_HELD = contextlib.ExitStack()  # never closed: the lock goes with the process


@pytest.fixture(scope="session")
def asterisk() -> Sandbox:
    """The running sandbox Asterisk; started if ARI does not answer. Fails, never skips."""
    _lock_sandbox()
    sandbox = Sandbox()
    if not sandbox.ari_ready():
        try:
            sandbox_up()
        except RuntimeError as exc:
            pytest.fail(f"the sandbox Asterisk is not available: {exc}", pytrace=False)
        if not sandbox.ari_ready():
            pytest.fail(
                "the sandbox Asterisk is up but its ARI does not answer at " + sandbox.ari_url,
                pytrace=False,
            )
    return sandbox


@pytest.fixture(scope="session")
async def softphone_lib(asterisk: Sandbox) -> AsyncIterator[SoftphoneNetwork]:
    async with softphone_network(asterisk.registrar, asterisk.phone_password) as net:
        yield net


@pytest.fixture
async def phones(softphone_lib: SoftphoneNetwork) -> AsyncIterator[SoftphoneNetwork]:
    """Softphones for one test: `await phones.register("mobile")`; all removed afterwards."""
    yield softphone_lib
    await softphone_lib.reset()


@pytest.fixture
async def ari(asterisk: Sandbox) -> AsyncIterator[RawAri]:
    """Raw ARI on a Stasis app of this test's own; every channel it made is hung up after."""
    app = f"test-{uuid.uuid4().hex[:8]}"
    async with raw_ari(asterisk.ari_url, asterisk.ari_user, asterisk.ari_password, app) as client:
        yield client


@pytest.fixture(scope="session")
async def engine(asterisk: Sandbox) -> AsyncIterator[Engine]:
    """phonemfa's Asterisk side, in the test process, on a Stasis app of its own."""
    config = sandbox_config(
        f"phonemfa-test-{uuid.uuid4().hex[:6]}", asterisk.ari_url, asterisk.ari_password
    )
    eng = Engine(config)
    await eng.start(connect_timeout=10)
    yield eng
    await eng.stop()


@pytest.fixture
async def flows(engine: Engine) -> AsyncIterator[FlowHarness]:
    """Start verification calls and watch them; afterwards no channel of ours is left."""
    harness = FlowHarness(engine)
    yield harness
    await harness.settle()


# The caller id `presenting_flows` configures (trunk.caller_id); the sandbox trunk's own
# number, presented without one, is +14255550000 (its from_user in asterisk/etc/pjsip.conf).
TRUNK_CALLER_ID = "+14255550199"


@pytest.fixture
async def presenting_flows(asterisk: Sandbox) -> AsyncIterator[FlowHarness]:
    """`flows` on an Engine of its own whose trunk presents TRUNK_CALLER_ID."""
    config = sandbox_config(
        f"phonemfa-test-{uuid.uuid4().hex[:6]}",
        asterisk.ari_url,
        asterisk.ari_password,
        trunk={**SANDBOX_TRUNK, "caller_id": TRUNK_CALLER_ID},
    )
    eng = Engine(config)
    await eng.start(connect_timeout=10)
    harness = FlowHarness(eng)
    try:
        yield harness
        await harness.settle()
    finally:
        await eng.stop()


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver on loopback for the test's calls."""
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def api(service: ServiceProcess) -> AsyncIterator[Api]:
    """The HTTP API of the module's `service` (each service module defines that fixture)."""
    async with aiohttp.ClientSession() as session:
        yield Api(session, service.url)


@pytest.fixture(scope="session", autouse=True)
def no_number_or_secret_in_any_log() -> Iterator[None]:
    """After the whole run: every log line phonemfa wrote (the services' files and this
    process's records) is free of unmasked phone numbers and of secrets."""
    collector = log_audit.Collector()
    logger = logging.getLogger("phonemfa")
    logger.addHandler(collector)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.removeHandler(collector)
    logger.setLevel(level)
    problems = log_audit.audit(collector.lines)
    if problems:
        pytest.fail("logs leak numbers or secrets:\n" + "\n".join(problems[:20]), pytrace=False)
