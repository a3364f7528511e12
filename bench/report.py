"""From measured runs to numbers, verdicts, a table and JSON.

Correctness is a hard failure (the run exits non-zero): a call of phonemfa's with a wrong,
missing or duplicated outcome, a channel left in Asterisk, or a baseline that got calls wrong
(its numbers would not be comparable). The performance targets of the issue are reported as
`ok` / `MISSED`; `--strict` makes a miss fail the run too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.plan import CallResult, percentile
from bench.runner import TargetRun

MIB = 1024 * 1024


def _ms(values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in (50, 95, 99):
        v = percentile(values, q)
        out[f"p{q}"] = None if v is None else round(v * 1000, 1)
    out["max"] = None if not values else round(max(values) * 1000, 1)
    return out


def _spans(results: list[CallResult], start: str, end: str) -> list[float]:
    out = []
    for r in results:
        a, b = getattr(r, start), getattr(r, end)
        if a is not None and b is not None:
            out.append(b - a)
    return out


def summarize(run: TargetRun) -> dict[str, Any]:
    results = run.results
    n = len(results)
    outcomes = Counter(r.outcome or "none" for r in results)
    wrong = [r for r in results if r.error is None and r.outcome != r.expected]
    lost = [r for r in results if r.error is not None or r.outcome is None]
    notes = [note for r in results for note in r.notes]
    growth = max(0, run.peak_rss - run.rss_before)
    return {
        "target": run.target,
        "scenario": run.scenario,
        "calls": n,
        "correct": sum(r.correct for r in results),
        "wrong": len(wrong),
        "lost": len(lost),
        "duplicated": len(notes),
        "outcomes": dict(outcomes),
        "examples": [_example(r) for r in (wrong + lost)[:5]],
        "wall_s": round(run.wall, 2),
        "cpu_s": round(run.cpu, 2),
        "cpu_ms_per_call": round(run.cpu / n * 1000, 3) if n else None,
        "asterisk_cpu_s": round(run.asterisk_cpu, 2),
        "asterisk_cpu_ms_per_call": round(run.asterisk_cpu / n * 1000, 3) if n else None,
        "rss_before_mib": round(run.rss_before / MIB, 1),
        "peak_rss_mib": round(run.peak_rss / MIB, 1),
        "vm_hwm_mib": round(run.hwm / MIB, 1),
        "peak_in_flight": run.peak_in_flight,
        "kib_per_call_in_flight": (
            round(growth / run.peak_in_flight / 1024, 1) if run.peak_in_flight else None
        ),
        "latency_ms": {
            "request_to_dialing": _ms(_spans(results, "t_request", "t_dialing")),
            "request_to_answered": _ms(_spans(results, "t_request", "t_answered_ast")),
            "key_to_decided": _ms(_spans(results, "t_key_ast", "t_decided")),
            "key_to_visible": _ms(_spans(results, "t_key_ast", "t_visible")),
        },
        "channels_left": run.channels_left,
        "problems": run.problems + notes,
        **({"extra": run.extra} if run.extra else {}),
    }


def _example(r: CallResult) -> str:
    got = r.error or f"{r.outcome} ({r.reason})"
    return f"#{r.index} {r.kind}: expected {r.expected}, got {got}"


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str
    hard: bool  # a correctness failure, not a missed performance target


def verdicts(scenario: str, by_target: dict[str, dict[str, Any]]) -> list[Verdict]:
    out: list[Verdict] = []
    for target, s in by_target.items():
        bad = s["wrong"] + s["lost"] + s["duplicated"]
        out.append(
            Verdict(
                f"{scenario}: {target} outcomes",
                bad == 0,
                f"{s['correct']}/{s['calls']} right, {s['wrong']} wrong, {s['lost']} lost, "
                f"{s['duplicated']} duplicated",
                True,
            )
        )
        out.append(
            Verdict(
                f"{scenario}: {target} leaves no channel",
                not s["channels_left"],
                f"{len(s['channels_left'])} left",
                True,
            )
        )
    me = by_target.get("phonemfa")
    if me is None:
        return out
    cpu = me["cpu_ms_per_call"]
    for base, limit, label in (("floor", 2.0, "<= 2x the floor"), ("peer", 1.0, "< the peer")):
        other = by_target.get(base)
        if other and other["cpu_ms_per_call"]:
            ratio = cpu / other["cpu_ms_per_call"]
            ok = ratio <= limit if base == "floor" else ratio < limit
            out.append(Verdict(f"{scenario}: CPU/call {label}", ok, f"{ratio:.2f}x {base}", False))
    ast = me["asterisk_cpu_ms_per_call"]
    if ast:
        share = cpu / ast
        out.append(
            Verdict(
                f"{scenario}: CPU/call <= 10% of Asterisk's",
                share <= 0.10,
                f"{share * 100:.1f}% ({cpu:.2f} vs {ast:.2f} ms)",
                False,
            )
        )
    per_call = me["kib_per_call_in_flight"]
    if per_call is not None:
        out.append(
            Verdict(
                f"{scenario}: memory <= 64 KiB per call in flight",
                per_call <= 64,
                f"{per_call} KiB",
                False,
            )
        )
    if scenario == "sustained":
        p99 = me["latency_ms"]["key_to_visible"]["p99"]
        out.append(
            Verdict(
                f"{scenario}: '#' to outcome visible p99 <= 50 ms",
                p99 is not None and p99 <= 50,
                f"{p99} ms",
                False,
            )
        )
    return out


# --- the table -----------------------------------------------------------------------------

_ROWS: list[tuple[str, Any]] = [
    ("calls right / placed", lambda s: f"{s['correct']}/{s['calls']}"),
    ("wrong / lost / dup", lambda s: f"{s['wrong']}/{s['lost']}/{s['duplicated']}"),
    ("wall time (s)", lambda s: s["wall_s"]),
    ("CPU per call (ms)", lambda s: s["cpu_ms_per_call"]),
    ("Asterisk CPU per call (ms)", lambda s: s["asterisk_cpu_ms_per_call"]),
    ("RSS before / peak (MiB)", lambda s: f"{s['rss_before_mib']} / {s['peak_rss_mib']}"),
    ("peak calls in flight", lambda s: s["peak_in_flight"]),
    ("KiB per call in flight", lambda s: s["kib_per_call_in_flight"]),
    ("request->dialing p50/p99 (ms)", lambda s: _pp(s, "request_to_dialing")),
    ("request->answered p50/p99 (ms)", lambda s: _pp(s, "request_to_answered")),
    ("'#'->decided p50/p99 (ms)", lambda s: _pp(s, "key_to_decided")),
    ("'#'->visible p50/p95/p99 (ms)", lambda s: _pp(s, "key_to_visible", (50, 95, 99))),
    ("load gen. / others (stolen) CPU (s)", lambda s: _others(s)),
]


def _others(s: dict[str, Any]) -> str:
    """The bench's own CPU, the rest of the machine's (not target, not Asterisk), and of that
    what the hypervisor gave to other guests (steal): on a shared box, a busy neighbour
    explains a bad latency."""
    extra = s.get("extra", {})
    if "other_cpu_s" not in extra:
        return "-"
    return f"{extra['bench_cpu_s']:g} / {extra['other_cpu_s']:g} ({extra.get('steal_cpu_s', 0):g})"


def _pp(s: dict[str, Any], name: str, qs: tuple[int, ...] = (50, 99)) -> str:
    lat = s["latency_ms"][name]
    if lat["p50"] is None:
        return "-"
    return " / ".join(f"{lat[f'p{q}']:g}" for q in qs)


def table(scenario: str, description: str, by_target: dict[str, dict[str, Any]]) -> str:
    targets = list(by_target)
    width = max(len(r[0]) for r in _ROWS) + 2
    cells_of = {
        t: ["-" if (v := get(by_target[t])) is None else str(v) for _, get in _ROWS]
        for t in targets
    }
    # Each column as wide as its widest cell, two spaces apart: values never run together.
    cols = [max(14, len(t) + 2, *(len(c) + 2 for c in cells_of[t])) for t in targets]
    lines = [f"== {scenario}: {description}"]
    lines.append("".ljust(width) + "".join(t.rjust(c) for t, c in zip(targets, cols, strict=True)))
    for i, (label, _) in enumerate(_ROWS):
        cells = [cells_of[t][i].rjust(c) for t, c in zip(targets, cols, strict=True)]
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def verdict_lines(items: list[Verdict]) -> str:
    return "\n".join(
        f"  {'ok    ' if v.ok else ('FAILED' if v.hard else 'MISSED')} {v.name}: {v.detail}"
        for v in items
    )
