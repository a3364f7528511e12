"""`phonemfa serve` under a service manager's default limit of open files (systemd: 1024 soft).

Every API client waiting for an outcome (`?wait=`) holds a socket, and so does every ARI
request in flight: a soft limit of 1024 would refuse connections, ARI's included (calls
interrupted), long before the trunk is full. `serve` raises its soft limit to the hard one.
"""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import aiohttp

from phonemfa.startup import OPEN_FILES_CAP
from tests.support.service import ServiceProcess, free_port, service_config

START_LIMIT = 256  # a small soft limit, so that the test needs few sockets
CLIENTS = 600  # held at once: more than START_LIMIT allows


def _limit(value: str) -> int:
    return resource.RLIM_INFINITY if value == "unlimited" else int(value)


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return _limit(soft), _limit(hard)
    raise AssertionError(f"no open files limit in /proc/{pid}/limits")


async def test_serve_raises_its_open_files_limit_and_holds_many_clients(tmp_path: Path) -> None:
    # Nothing answers ARI at a free port: this is about the API's sockets, not Asterisk's.
    config = service_config(tmp_path)
    config["ari"]["url"] = f"http://127.0.0.1:{free_port()}"
    service = ServiceProcess(tmp_path, config)
    try:
        await service.start(ari=False, open_files=START_LIMIT)
        assert service.proc is not None
        soft, hard = open_files_limit(service.proc.pid)
        assert hard == resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        assert soft == (
            OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_CAP)
        )

        # CLIENTS connections open at once, each kept open until all have their answer.
        all_in = asyncio.Event()
        answered = 0

        async def client(session: aiohttp.ClientSession) -> int:
            nonlocal answered
            async with session.get(f"{service.url}/healthz") as resp:
                await resp.read()
                answered += 1
                if answered == CLIENTS:
                    all_in.set()
                await all_in.wait()  # holds its connection meanwhile
                return resp.status

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(60):
            statuses = await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
        assert statuses == [200] * CLIENTS
        assert "Too many open files" not in service.log_path.read_text()
    finally:
        await service.stop()


async def test_serve_says_when_its_hard_limit_of_open_files_is_low(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    config["ari"]["url"] = f"http://127.0.0.1:{free_port()}"
    service = ServiceProcess(tmp_path, config)
    try:
        await service.start(ari=False, open_files=START_LIMIT, open_files_hard=1024)
        assert service.proc is not None
        assert open_files_limit(service.proc.pid) == (1024, 1024)
    finally:
        await service.stop()
    warnings = [
        line
        for line in service.log_path.read_text().splitlines()
        if "open files limited to 1024" in line and "LimitNOFILE" in line
    ]
    assert len(warnings) == 1, service.log_tail()
