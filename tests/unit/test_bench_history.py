"""`python -m bench.history`: the reports of bench/results/ as one table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.history import RESULTS, row, table


def _target(cpu: float, calls: int, *, lost: int = 0, p99: float | None = None) -> dict[str, Any]:
    return {
        "cpu_ms_per_call": cpu,
        "calls": calls,
        "wrong": 0,
        "lost": lost,
        "duplicated": 0,
        "latency_ms": {"key_to_visible": {"p99": p99}},
    }


def _report(folder: Path, name: str, scenarios: dict[str, Any]) -> None:
    body = {
        "started_at": 1796617557.0,
        "machine": {"commit": "abc1234"},
        "baseline_loop": "uvloop",
        "scenarios": scenarios,
    }
    (folder / f"bench-{name}.json").write_text(json.dumps(body))


def test_one_row_per_report_oldest_first_with_ratios_and_marks(tmp_path: Path) -> None:
    _report(
        tmp_path,
        "20261207-044156",
        {
            "burst": {
                "targets": {
                    "phonemfa": _target(6.0, 400),
                    "floor": _target(4.0, 400),
                    "peer": _target(5.0, 400),
                }
            },
            "sustained": {
                "targets": {
                    "phonemfa": _target(8.0, 900, p99=20.4),
                    "floor": _target(8.0, 900, lost=1),
                }
            },
        },
    )
    _report(tmp_path, "20261125-211619", {"mix": {"targets": {"phonemfa": _target(9.0, 750)}}})
    lines = table(tmp_path).splitlines()
    assert len(lines) == 4  # the head, its rule, two reports
    older, newer = lines[2], lines[3]
    assert "`20261125-211619`" in older and "`20261207-044156`" in newer
    cells = [c.strip() for c in newer.strip("|").split("|")]
    assert cells[1:3] == ["`abc1234`", "uvloop"]
    assert cells[3] == "6.00 ms, 1.50, 1.20"
    # Not the scenario's usual count, no peer, and a target lost a call.
    assert cells[4] == "900 calls: 8.00 ms, 1.00, -; p99 20 ms (!)"
    assert cells[5] == "-"  # not in this run
    assert [c.strip() for c in older.strip("|").split("|")][3:6] == ["-", "-", "9.00 ms, -, -"]


def test_every_report_reads_and_history_md_says_what_they_say() -> None:
    # The kept reports are the history: each must still read, whatever version wrote it, and
    # each row of bench/HISTORY.md must be what its report makes (a report of a local run,
    # not kept, may be missing there).
    lines = table(RESULTS).splitlines()
    assert len(lines) == 2 + len(list(RESULTS.glob("bench-*.json")))
    history = (RESULTS.parent / "HISTORY.md").read_text().splitlines()
    rows = [line for line in history if line.startswith("| 20")]
    assert len(rows) >= 25  # the reports kept when this test was written
    for line in rows:
        name = line.split("`")[1]
        assert line == row(RESULTS / f"bench-{name}.json"), "paste `python -m bench.history`"
