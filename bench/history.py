"""Every report in bench/results/ as one Markdown table, oldest first (bench/HISTORY.md).

    python -m bench.history [FOLDER]

Per scenario: phonemfa's CPU per call in ms, then ÷ floor and ÷ peer (the baselines' own
figures are in the JSON); for the sustained scenario, the `#` → visible p99 too. A scenario
the run did not include is `-`; one where any target got an outcome wrong or lost is marked
`(!)`. Figures from different machines and days are not comparable (HISTORY.md says why).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# A scenario's calls when `--calls` did not change them: other counts are said in the cell.
CALLS = {"burst": 400, "sustained": 3000, "mix": 750}


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def _cell(name: str, scenario: dict[str, Any] | None, *, visible_p99: bool = False) -> str:
    if scenario is None:
        return "-"
    targets = scenario["targets"]
    ours = targets.get("phonemfa")
    if ours is None:
        return "-"
    cpu = ours["cpu_ms_per_call"]
    floor = targets.get("floor", {}).get("cpu_ms_per_call")
    peer = targets.get("peer", {}).get("cpu_ms_per_call")
    text = f"{cpu:.2f} ms, {_ratio(cpu, floor)}, {_ratio(cpu, peer)}"
    if ours["calls"] != CALLS[name]:
        text = f"{ours['calls']} calls: {text}"
    if visible_p99:
        p99 = ours["latency_ms"]["key_to_visible"]["p99"]
        text += f"; p99 {p99:.0f} ms" if p99 is not None else ""
    if any(t["wrong"] or t["lost"] or t["duplicated"] for t in targets.values()):
        text += " (!)"
    return text


def row(path: Path) -> str:
    report = json.loads(path.read_text())
    machine = report.get("machine", {})
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(report["started_at"]))
    scenarios = report["scenarios"]
    cells = [
        f"{when} `{path.stem.removeprefix('bench-')}`",
        f"`{machine.get('commit', '?')}`",
        report.get("baseline_loop") or "asyncio",
        _cell("burst", scenarios.get("burst")),
        _cell("sustained", scenarios.get("sustained"), visible_p99=True),
        _cell("mix", scenarios.get("mix")),
    ]
    return "| " + " | ".join(cells) + " |"


def table(folder: Path = RESULTS) -> str:
    head = (
        "| run (UTC) | commit | baselines' loop | burst: ms/call, ÷ floor, ÷ peer "
        "| sustained (and `#` → visible p99) | mix |\n|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(row(p) for p in sorted(folder.glob("bench-*.json")))])


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
