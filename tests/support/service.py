"""phonemfa as a real process (`phonemfa serve`) for the service tests: start, kill, restart.

Each service gets its own config (a free port on 127.0.0.1, its own database) written to a
temporary folder; its log goes to a file the tests can read (and grep for secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.flows import FAST_CALLS, NO_LIMITS, SANDBOX_SOUNDS

TOKEN = "svc-test-token-5c1d"
TENANT_TOKEN = "svc-test-token-tenant-b-77e0"
WEBHOOK_SECRET = "whsec-test-9b2f"
ARI_PASSWORD = os.environ.get("PHONEMFA_ARI_PASSWORD", "phonemfa-sandbox-secret")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_config(folder: Path, *, app: str = "phonemfa", **overrides: Any) -> dict[str, Any]:
    tenant = {
        "region": "US",
        "limits": NO_LIMITS,
        "calls": FAST_CALLS,
        "webhook_secret": WEBHOOK_SECRET,
    }
    config: dict[str, Any] = {
        "ari": {
            "url": os.environ.get("PHONEMFA_ARI_URL", "http://127.0.0.1:8088"),
            "username": "phonemfa",
            "password": "${TEST_ARI_PASSWORD}",
            "app": app,
            "reconnect_max_delay": 1,
        },
        "trunk": {"endpoint": "PJSIP/{number}@trunk", "dial_timeout": 20},
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            "tokens": [TOKEN, {"token": TENANT_TOKEN, "tenants": ["tenant-b"], "name": "b"}],
        },
        "storage": {"path": str(folder / "phonemfa.db")},
        "logging": {"format": "json", "level": "debug"},
        "shutdown": {"grace_period": 20},
        "sounds": {"dir": str(SANDBOX_SOUNDS) if SANDBOX_SOUNDS.is_dir() else None},
        "dial_profiles": [{"name": "sandbox", "match": ["+1"], "pre_delay": 1.0}],
        "tenants": {
            "default": tenant,
            "ops": {**tenant, "operator_assistance": True},
            "tenant-b": tenant,
        },
    }
    config.update(overrides)
    return config


# Every service started in this test session, for the log audit at the end (conftest.py).
STARTED: list[ServiceProcess] = []


class ServiceProcess:
    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.config = config
        self.config_path = folder / "phonemfa.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        host, port = config["api"]["listen"].split(":")
        self.url = f"http://{host}:{port}"
        STARTED.append(self)

    async def start(
        self,
        timeout: float = 30,
        *,
        ari: bool = True,
        open_files: int | None = None,
        open_files_hard: int | None = None,
    ) -> None:
        """Start `phonemfa serve` and wait until it answers (and is connected to ARI).
        `open_files`, `open_files_hard`: the limits it starts with (systemd's default soft
        limit is 1024), instead of this process's."""
        env = {**os.environ, "TEST_ARI_PASSWORD": ARI_PASSWORD}
        log = self.log_path.open("ab")

        def limit_open_files() -> None:  # in the child, before exec
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            hard = hard if open_files_hard is None else open_files_hard
            soft = min(soft, hard) if open_files is None else open_files
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        self.proc = subprocess.Popen(  # noqa: ASYNC220 (Popen does not wait)
            [sys.executable, "-m", "phonemfa", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=limit_open_files,
        )
        log.close()
        await self.wait_healthy(timeout, ari=ari)

    async def wait_healthy(self, timeout: float = 30, *, ari: bool = True) -> dict[str, Any]:
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.log_tail()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/healthz") as resp:
                        health: dict[str, Any] = await resp.json()
                        if resp.status == 200 and (health["ari_connected"] or not ari):
                            return health
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crash or the OOM killer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the drain to finish; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.1)
        return int(self.proc.returncode)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            await self.terminate()

    def secrets(self) -> list[str]:
        """Every secret this service knows: none may ever appear in its output."""
        tokens = [t if isinstance(t, str) else t["token"] for t in self.config["api"]["tokens"]]
        hooks = [t.get("webhook_secret") for t in self.config["tenants"].values()]
        return [ARI_PASSWORD, *tokens, *(h for h in hooks if h)]

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out


class Api:
    """A small client of the service's HTTP API for the tests."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str = TOKEN) -> None:
        self.session = session
        self.url = url
        self.token = token

    async def request(
        self, method: str, path: str, *, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if token != "":
            headers.setdefault("Authorization", f"Bearer {token or self.token}")
        async with self.session.request(method, self.url + path, headers=headers, **kw) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
            self.last_headers = resp.headers
            return resp.status, body

    async def start_call(self, phone: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.request("POST", "/v1/calls", json={"phone": phone, **fields})
        assert status == 201, (status, body)
        return dict(body)

    async def wait(self, call_id: str, seconds: float = 60) -> dict[str, Any]:
        status, body = await self.request("GET", f"/v1/calls/{call_id}?wait={seconds}")
        assert status == 200, (status, body)
        return dict(body)

    async def until_status(self, call_id: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                _, body = await self.request("GET", f"/v1/calls/{call_id}")
                if body["status"] == wanted or any(e["event"] == wanted for e in body["timeline"]):
                    return dict(body)
                assert body["outcome"] is None, f"ended before {wanted}: {body}"
                await asyncio.sleep(0.1)


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`python -m phonemfa ARGS` with the test token and the sandbox's ARI password in its
    environment (for --server and --config alike)."""
    return subprocess.run(
        [sys.executable, "-m", "phonemfa", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PHONEMFA_TOKEN": TOKEN, "TEST_ARI_PASSWORD": ARI_PASSWORD},
    )
