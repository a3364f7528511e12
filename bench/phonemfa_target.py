"""phonemfa as the benchmark sees it: a real `phonemfa serve` process, driven through its HTTP
API on loopback the way an identity system would: by default one `POST /v1/calls?wait=` per
call that answers with the outcome (a RADIUS server or a login page waiting for it), or with
`--ask get` a POST and then `GET ?wait=` until the outcome (a client that stores the call's id
between requests).

"Visible in the API" is measured where it matters, at a client: every call has a request with
?wait= outstanding before its '#' is pressed, and the outcome is visible when that request
answers with it. (`?wait=` is answered once the outcome is committed: `CallService._finish`
sets `done` after the store's commit.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import cprofile_run
from bench.plan import KINDS, MAX_CALLS, PRE_DELAY, CallResult, PlannedCall, asterisk_time
from bench.sandbox import ARI_PASSWORD, ARI_URL, ARI_USER, REPO, SANDBOX

TOKEN = "bench-" + secrets.token_hex(8)
SOUNDS = SANDBOX / "root/usr/share/asterisk/sounds"
NO_LIMITS: dict[str, list[Any]] = {"per_user": [], "per_number": [], "per_tenant": []}
# Prompt repeats and the call's length are short, so a call that goes wrong ends quickly; key
# time-outs keep their defaults: under a 400-call burst the bots' two keys ("0#") reached us
# 2.8 s apart, and a 3 s inter-digit time-out turned a fraud report into a wrong answer.
CALLS = {
    "first_digit_timeout": 10,
    "inter_digit_timeout": 5,
    "no_input_prompts": 2,
    "attempts": 3,
    "extension_prompt_repeats": 3,
    "extension_prompt_pause": 1,
    "operator_prompt_repeats": 3,
    "operator_prompt_pause": 1,
    "max_duration": 60,
}
# At 50 calls/s offered, 100 lines carry about 17 a second: some 2000 calls wait for a line at
# the end of the minute, the last about two minutes.
QUEUE_TIMEOUT = 180
# How the client asks for the outcome: in the POST itself, or in a GET after it.
ASKS = ("post", "get")
DEFAULT_ASK = "post"
# ?wait= holds this long at most, the API's limit, as an identity system waiting for an
# outcome would ask (a call queued for a line can wait longer; the caller asks again).
WAIT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(
    folder: Path, log_level: str = "info", max_calls: int = MAX_CALLS
) -> dict[str, Any]:
    tenant = {"region": "US", "limits": NO_LIMITS, "calls": CALLS}
    return {
        "ari": {
            "url": ARI_URL,
            "username": ARI_USER,
            "password": "${BENCH_ARI_PASSWORD}",
            # An app of its own: nothing else on the sandbox answers for it.
            "app": "phonemfa-bench-" + secrets.token_hex(3),
        },
        "trunk": {
            "endpoint": "PJSIP/{number}@trunk",
            "dial_timeout": 20,
            "max_calls": max_calls,
            "queue_timeout": QUEUE_TIMEOUT,
        },
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            # The bench is the one client: no per-token cap (default 1000 calls a minute).
            "tokens": [{"token": TOKEN, "name": "bench", "limits": []}],
        },
        "storage": {"path": str(folder / "phonemfa.db")},
        "logging": {"format": "text", "level": log_level},
        "shutdown": {"grace_period": 30},
        "sounds": {"dir": str(SOUNDS) if SOUNDS.is_dir() else None},
        "dial_profiles": [{"name": "sandbox", "match": ["+1"], "pre_delay": PRE_DELAY}],
        "tenants": {"default": tenant, "ops": {**tenant, "operator_assistance": True}},
    }


class PhonemfaProcess:
    """`phonemfa serve` with a generated config, its log in the same folder."""

    def __init__(
        self,
        folder: Path,
        *,
        log_level: str = "info",
        python: str | None = None,
        src: Path | None = None,
        cprofile: Path | None = None,
        max_calls: int = MAX_CALLS,
    ):
        self.folder = folder
        self.src = src  # another source tree of phonemfa (before/after comparisons)
        self.cprofile = cprofile  # run under bench/cprofile_run.py, stats written here
        folder.mkdir(parents=True, exist_ok=True)
        self.config = bench_config(folder, log_level, max_calls)
        self.config_path = folder / "phonemfa.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = folder / "phonemfa.log"
        self.python = python or sys.executable
        self.url = "http://" + self.config["api"]["listen"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30) -> None:
        env = {**os.environ, "BENCH_ARI_PASSWORD": ARI_PASSWORD}
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        if self.cprofile is not None:  # bench.cprofile_run comes from this checkout
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
        with self.log_path.open("ab") as log:
            run = cprofile_run.command("phonemfa", self.cprofile)
            self.proc = subprocess.Popen(  # noqa: ASYNC220 (Popen does not wait)
                [self.python, *run, "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=env,
            )
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"phonemfa serve exited:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200 and (await resp.json())["ari_connected"]:
                            return
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the service drains its calls), then the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.1)
        return int(self.proc.returncode)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def event_loop(self) -> str | None:
        """The event loop serve said it runs on ("uvloop", "asyncio"); None from a phonemfa
        that does not say (an older tree, `--phonemfa-src`)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "phonemfa listening on" in line and "event loop: " in line:
                return line.rpartition("event loop: ")[2].rstrip(")").strip()
        return None

    def log_problems(self) -> list[str]:
        """Warnings and errors the service logged (text format: the level is field 3),
        but the one every fraud report logs by design (its user is blocked)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            parts = line.split(maxsplit=3)
            if len(parts) > 2 and parts[2] in ("WARNING", "ERROR", "CRITICAL"):
                if not line.endswith("blocked: fraud_reported"):
                    out.append(line)
        return out


class ApiDriver:
    """Places the bench's calls through the API and reads what a client sees."""

    def __init__(self, url: str, *, connections: int = 0, ask: str = DEFAULT_ASK) -> None:
        self.url = url
        self.ask = ask
        self.run_id = ""
        self.call_ids: list[str] = []
        self.new_run()
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        # One connection per call in flight (each holds a request with ?wait=), kept alive. No
        # cap by default (0): the plan bounds the calls, and with a cap the POSTs of new calls
        # would queue behind other calls' waits (at 50 calls/s over 1000 calls are in flight
        # while Asterisk's lines are full, and the POST is what places a call).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=WAIT + 30),
        )
        self.in_progress = 0  # what the service's /healthz said last
        self._poller: asyncio.Task[None] | None = None

    def new_run(self) -> None:
        """Calls from now on are a new set (own user names: `verify` and `list_ids` see only
        these; a fraud report blocks its user, so no user is ever used twice)."""
        self.run_id = "bench-" + secrets.token_hex(4)
        self.call_ids = []

    async def close(self) -> None:
        await self.stop_polling()
        await self.session.close()

    async def place(self, call: PlannedCall, result: CallResult) -> None:
        kind = KINDS[call.kind]
        body = {
            "phone": kind.phone,
            "tenant": kind.tenant,
            # One user per call: a fraud report blocks its user (fraud.block_user).
            "user": f"{self.run_id}-{call.index}",
        }
        result.t_request = time.time()
        params = {"wait": str(WAIT)} if self.ask == "post" else None
        async with self.session.post(
            f"{self.url}/v1/calls", json=body, headers=self.headers, params=params
        ) as resp:
            seen = time.time()
            view = await resp.json()
            if resp.status != 201:
                result.error = f"POST answered {resp.status}: {view}"
                return
        result.call_id = call_id = view["id"]
        self.call_ids.append(call_id)
        while view.get("outcome") is None:
            async with self.session.get(
                f"{self.url}/v1/calls/{call_id}", params={"wait": str(WAIT)}, headers=self.headers
            ) as resp:
                seen = time.time()  # the answer's head is here: the outcome is visible
                view = await resp.json()
                if resp.status != 200:
                    result.error = f"GET answered {resp.status}: {view}"
                    return
        result.t_visible = seen
        fill_from_view(result, view)

    async def verify(self, results: list[CallResult], concurrency: int = 16) -> None:
        """After the run: each call read again must show the same one outcome, a finished
        timeline (hung up once), and the service must hold no call we did not ask for."""
        by_id = {r.call_id: r for r in results if r.call_id}
        sem = asyncio.Semaphore(concurrency)

        async def check(result: CallResult) -> None:
            async with (
                sem,
                self.session.get(
                    f"{self.url}/v1/calls/{result.call_id}", headers=self.headers
                ) as resp,
            ):
                view = await resp.json()
            if view.get("outcome") != result.outcome:
                result.error = result.error or (
                    f"outcome changed: {result.outcome} then {view.get('outcome')}"
                )
            hung_up = sum(1 for e in view.get("timeline", []) if e["event"] == "hung_up")
            if hung_up != 1:
                result.error = result.error or f"{hung_up} hung_up steps in the timeline"

        await asyncio.gather(*(check(r) for r in by_id.values()))
        listed = await self.list_ids()
        for extra in sorted(listed - by_id.keys()):
            results[0].notes.append(f"a call nobody asked for: {extra}")
        if len(self.call_ids) != len(set(self.call_ids)):
            results[0].notes.append("the same call id was given to two requests")

    async def list_ids(self) -> set[str]:
        ids: set[str] = set()
        cursor: str | None = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            async with self.session.get(
                f"{self.url}/v1/calls", params=params, headers=self.headers
            ) as resp:
                page = await resp.json()
            ids.update(c["id"] for c in page["calls"] if c["user"].startswith(self.run_id + "-"))
            cursor = page.get("next_cursor")
            if not cursor:
                return ids

    async def health(self) -> dict[str, Any]:
        # With the token: the counts of calls are among the details only it is shown.
        async with self.session.get(f"{self.url}/healthz", headers=self.headers) as resp:
            return dict(await resp.json())

    def start_polling(self, period: float = 0.2) -> None:
        """Keep `in_progress` current from /healthz (the service's own count of calls)."""

        async def poll() -> None:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    self.in_progress = (await self.health())["calls_in_progress"]
                await asyncio.sleep(period)

        self._poller = asyncio.create_task(poll())

    async def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def wait_idle(self, timeout: float = 60) -> int:
        """Wait until the service has no call in progress; how many it still had."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = int((await self.health())["calls_in_progress"])
            if left == 0 or loop.time() > deadline:
                return left
            await asyncio.sleep(0.2)

    async def metric(self, name: str) -> float | None:
        async with self.session.get(f"{self.url}/metrics", headers=self.headers) as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None


def fill_from_view(result: CallResult, view: dict[str, Any]) -> None:
    """Outcome and the timeline's times: our `dialing`, Asterisk's answer, and Asterisk's
    time of the '#' that decided (the last '#' received before the outcome)."""
    result.outcome = view["outcome"]
    result.reason = view.get("reason")
    ended = _iso(view.get("ended_at"))
    result.t_decided = ended
    for step in view.get("timeline", []):
        at = _iso(step["at"])
        event = step["event"]
        if event == "dialing" and result.t_dialing is None:
            result.t_dialing = at
        elif event == "answered" and result.t_answered_ast is None:
            result.t_answered_ast = asterisk_time(step.get("asterisk_at"))
        elif (
            event == "key"
            and step.get("digit") == "#"
            and ended is not None
            and at is not None
            and at <= ended
        ):
            result.t_key_ast = asterisk_time(step.get("asterisk_at"))


def _iso(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
