"""The shared sandbox Asterisk: its lock, bringing it up, and checking it is left clean.

Test sessions (tests/conftest.py) and benchmark runs take the same lock file, so they never
overlap: a benchmark would fail tests' timing, and tests would skew a benchmark. A process that
already holds the lock (the test session running the smoke benchmark) says so with
`lock_held=True`: flock() on a second open file of the same process would wait for itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
SANDBOX = Path(os.environ.get("PHONEMFA_SANDBOX", "/var/tmp/phonemfa-sandbox"))
LOCK_FILE = SANDBOX / "tests.lock"
SANDBOX_SH = REPO / "asterisk" / "sandbox.sh"
ARI_URL = os.environ.get("PHONEMFA_ARI_URL", "http://127.0.0.1:8088")
ARI_USER = os.environ.get("PHONEMFA_ARI_USER", "phonemfa")
ARI_PASSWORD = os.environ.get("PHONEMFA_ARI_PASSWORD", "phonemfa-sandbox-secret")


@contextlib.contextmanager
def sandbox_lock(*, held: bool = False, who: str = "bench", shared: bool = False) -> Iterator[None]:
    """Hold the sandbox lock for the block (waiting for its holder to finish first, and
    saying so as `who`). The bench takes it alone, as test sessions do; scripts/phone.py
    takes it `shared`, so that several phones (an operator and the desk it transfers to)
    run side by side while no test session or bench does."""
    if held:
        yield
        return
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = LOCK_FILE.open("w")
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (
                "a test session or the bench" if shared else "a test session, the bench or a phone"
            )
            print(f"{who}: waiting for the sandbox lock ({holder} runs)", file=sys.stderr)
            fcntl.flock(handle, mode)
        yield
    finally:
        handle.close()  # releases the lock


def sandbox_up() -> None:
    """`asterisk/sandbox.sh up`: start Asterisk, or reload asterisk/etc when it runs.
    Only ever called with the lock held."""
    result = subprocess.run(
        [str(SANDBOX_SH), "up"], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"asterisk/sandbox.sh up failed:\n{result.stdout}{result.stderr}")


def ari_auth() -> str:
    return "Basic " + base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()


async def ari_get(session: aiohttp.ClientSession, path: str) -> Any:
    async with session.get(f"{ARI_URL}/ari{path}", headers={"Authorization": ari_auth()}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def wait_no_channels(timeout: float = 20) -> list[str]:
    """Wait until Asterisk has no channel at all (both legs of every call gone); the names of
    those still there when the time is up. The lock makes every channel ours."""
    left: list[str] = []
    async with aiohttp.ClientSession() as session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            channels = await ari_get(session, "/channels")
            left = [c["name"] for c in channels]
            if not left or loop.time() > deadline:
                return left
            await asyncio.sleep(0.25)


async def asterisk_ready(timeout: float = 2) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            await ari_get(s, "/asterisk/info")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
    return True
