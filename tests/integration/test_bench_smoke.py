"""The benchmark in miniature, so that `make test` keeps `make bench` working: one call of each
kind (direct, auto attendant, operator; approved and fraud) through a real `phonemfa serve` and
through the floor baseline and the aioari peer (its venv, bench/.venv-peer, is made by
`make test` as by `make bench`). Every outcome must be right and no channel left; the numbers
are not checked here (that is `make bench`).

The test session already holds the sandbox lock (the `asterisk` fixture): `run_bench` never
takes it itself, only `python -m bench` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ari_transport import TRANSPORTS, measure
from bench.runner import PEER_PYTHON
from bench.suite import Options, render, run_bench
from tests.conftest import Sandbox

pytestmark = pytest.mark.integration


async def test_bench_smoke(asterisk: Sandbox, tmp_path: Path) -> None:
    if not PEER_PYTHON.exists():  # never a silent skip: the peer's harness would rot
        pytest.fail(f"no {PEER_PYTHON}: run `make bench/.venv-peer/.installed` (make test does)")
    targets = ["phonemfa", "floor", "peer"]
    data = await run_bench(["smoke"], targets, tmp_path, Options(warmup=0))
    assert data["ok"], render(data)
    smoke = data["scenarios"]["smoke"]["targets"]
    for target in targets:
        summary = smoke[target]
        assert (summary["correct"], summary["calls"]) == (6, 6), render(data)
        assert summary["cpu_s"] >= 0 and summary["peak_rss_mib"] > 0
    # phonemfa's timeline carries Asterisk's times: the '#' to outcome latency is measured.
    assert smoke["phonemfa"]["latency_ms"]["key_to_visible"]["p50"] is not None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_ari_transport_bench(asterisk: Sandbox, transport: str) -> None:
    # `python -m bench.ari_transport` in miniature: each transport gets Asterisk's answer (a
    # 404 for the missing channel, or measure() raises) to every request it sends.
    result = await measure(transport, requests=40, concurrency=4)
    assert result["requests"] == 40
    assert result["ours_us"] > 0
