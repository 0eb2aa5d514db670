"""Graded attempts of the sealed task, from their records alone: the timeline page and the leaderboard's table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import LoopbenchError
from harness.records.schema import AttemptInfo, RunRecord
from harness.records.store import load_records
from harness.report import plots
from harness.report.html import Table, esc, figure, machine_label, num, page, workload_label
from harness.scoring.stats import HUMAN_REFERENCE

Found = tuple[Path, RunRecord]
HUMAN_LABEL = f"human reference {HUMAN_REFERENCE:g}x (published, different harness)"


def duration(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _info(record: RunRecord) -> AttemptInfo:
    assert record.attempt is not None
    return record.attempt


@dataclass
class GradedState:
    """One state of one grade: its records, one per workload, in the order the grade scored them."""

    records: list[Found]

    @property
    def info(self) -> AttemptInfo:
        return _info(self.records[0][1])

    @property
    def accepted(self) -> bool:
        return all(rec.verdict == "accepted" for _, rec in self.records)

    def reason(self) -> str:
        first = next((rec for _, rec in self.records if rec.verdict != "accepted"), None)
        return "" if first is None else f"on {first.workload.name}: {first.reason}"

    def speedup(self, workload: str) -> float | None:
        return next((rec.speedup for _, rec in self.records if rec.workload.name == workload), None)


@dataclass
class Attempt:
    """The latest grade of one attempt: its states in the order reached."""

    id: str
    graded: str
    states: list[GradedState]

    @property
    def final(self) -> GradedState:
        return next((s for s in self.states if s.info.final), self.states[-1])

    @property
    def first(self) -> RunRecord:
        return self.states[0].records[0][1]

    def workloads(self) -> list[RunRecord]:
        """One record per workload of the grade (the first state's), headlines first as graded."""
        return [rec for _, rec in self.states[0].records]


def _order(item: Found) -> tuple[int, str, str]:
    info = _info(item[1])
    return info.index, item[1].created, item[0].name


def attempts(found: list[Found]) -> list[Attempt]:
    """The latest grade of every attempt in `found`, ordered by attempt id."""
    grades: dict[str, dict[str, list[Found]]] = {}
    for item in found:
        if item[1].attempt is not None:
            info = item[1].attempt
            grades.setdefault(info.id, {}).setdefault(info.graded, []).append(item)
    out = []
    for attempt_id in sorted(grades):
        graded = max(grades[attempt_id])
        by_state: dict[int, list[Found]] = {}
        for item in sorted(grades[attempt_id][graded], key=_order):
            by_state.setdefault(_info(item[1]).index, []).append(item)
        out.append(Attempt(attempt_id, graded, [GradedState(by_state[i]) for i in sorted(by_state)]))
    return out


def _canonical(record: RunRecord) -> str:
    return json.dumps(record.workload.model_dump(mode="json"), sort_keys=True)


def ladder(found: list[Found], attempt: Attempt) -> list[Found]:
    """The project's own submissions (kind baseline, the reference left out) accepted on a headline workload of
    the attempt: the latest record of each, best first."""
    headlines = {_canonical(rec) for rec in attempt.workloads() if rec.attempt and rec.attempt.variant_seed is None}
    latest: dict[tuple[str, str], Found] = {}
    for path, rec in sorted(found, key=lambda f: (f[1].created, f[0].name)):
        shipped = rec.attempt is None and rec.submission.kind == "baseline" and rec.submission.name != rec.baseline.name
        if shipped and rec.verdict == "accepted" and rec.speedup and _canonical(rec) in headlines:
            latest[(rec.workload.name, rec.submission.name)] = (path, rec)
    return sorted(latest.values(), key=lambda f: (-(f[1].speedup or 0.0), f[1].submission.name))


def _state_label(info: AttemptInfo) -> str:
    return "working tree" if info.state == "working-tree" else info.state[:10]


def states_table(attempt: Attempt) -> Table:
    names = [rec.workload.name for rec in attempt.workloads()]
    table = Table(
        "states",
        "Graded states, in the order reached (speedups per workload; a state's score is their geometric mean)",
        ["#", "elapsed", "state", "final", "content hash", "verdict", "score", *names, "reason"],
        numeric=frozenset({0, 1, 6, *range(7, 7 + len(names))}),
    )
    for i, state in enumerate(attempt.states):
        info = state.info
        table.rows.append(
            [
                str(info.index),
                duration(info.elapsed_seconds),
                _state_label(info),
                "final" if info.final else "",
                info.content_hash[:12],
                "accepted" if state.accepted else "rejected",
                num(info.score, ".2f", "x"),
                *[num(state.speedup(name), ".2f", "x") for name in names],
                state.reason(),
            ]
        )
        if not state.accepted:
            table.failed |= {i}
    return table


def workloads_table(attempt: Attempt) -> Table:
    table = Table("workloads", "Workloads of the grade", ["workload", "role", "sizes", "seed it was drawn from"])
    for rec in attempt.workloads():
        info = _info(rec)
        role = "headline" if info.variant_seed is None else f"held-out variant of {info.headline}"
        table.rows.append([rec.workload.name, role, workload_label(rec.workload), num(info.variant_seed, "d")])
    return table


def ladder_table(rungs: list[Found]) -> Table:
    table = Table(
        "ladder",
        "The ladder: the project's own submissions on the headline (reference lines of the chart)",
        ["submission", "workload", "speedup", "machine", "date", "record"],
        numeric=frozenset({2}),
        empty="no record of the ladder in the folder read",
    )
    for path, rec in rungs:
        table.rows.append(
            [
                rec.submission.name,
                rec.workload.name,
                num(rec.speedup, ".2f", "x"),
                machine_label(rec.machine),
                rec.created[:10],
                path.name,
            ]
        )
    return table


def timeline_svg(attempt: Attempt, rungs: list[Found]) -> str:
    points = [
        plots.TimelinePoint(s.info.elapsed_seconds / 60, s.info.score if s.accepted else None, f"#{s.info.index}")
        for s in attempt.states
    ]
    lines = [plots.ContextLine(rec.speedup or 1.0, f"{rec.submission.name} {rec.speedup:.1f}x") for _, rec in rungs]
    return plots.timeline_chart(points, lines, HUMAN_REFERENCE, HUMAN_LABEL, "timeline-chart")


def _summary(attempt: Attempt) -> str:
    final, first = attempt.final, attempt.first
    score = final.info.score
    outcome = f"score {score:.2f}x" if score else f"rejected ({final.reason()})"
    return (
        f"System {first.submission.system}; graded {attempt.graded} on {machine_label(first.machine)}, "
        f"{len(first.trials) or '–'} paired trial(s) per workload, on the headline and "
        f"{sum(1 for r in attempt.workloads() if _info(r).variant_seed is not None)} held-out variant(s). "
        f"Final state (#{final.info.index}, {duration(final.info.elapsed_seconds)} after the export): {outcome}."
    )


ATTEMPTS_NOTE = (
    "Each attempt had the sealed task for a time, in a workspace of its own, and was graded from outside it by "
    "`loopbench task grade`: its final state re-scored on fresh seeds, on the headline and on held-out variants "
    "of it (other sizes, drawn at grade time). Score: the geometric mean of those speedups. Elapsed: the time "
    "from the export to the final state, as the workspace's history states it. Each attempt's timeline page is "
    "reports/attempt-ID.html."
)
TRUST_NOTE = (
    "Every state was copied out of the attempt's workspace and re-scored from its files alone, on fresh seeds, "
    "against the installed naive reference; nothing the workspace says about verdicts or speedups is used. The "
    "elapsed times are those the workspace's history states (each snapshot commit's time since the export; for "
    "a final state edited after its last snapshot, its newest file's): they order the states, and are only as "
    "trustworthy as the attempt's sandbox kept its clock and history."
)


def timeline_html(attempt: Attempt, rungs: list[Found]) -> str:
    body = [
        f"<h1>Attempt {esc(attempt.id)}: its timeline</h1>\n",
        f'<p class="meta">{esc(_summary(attempt))}</p>\n',
        f'<p class="note">{esc(TRUST_NOTE)}</p>\n',
        figure(
            timeline_svg(attempt, rungs),
            "timeline",
            "Best accepted score against the time since the export (a step at each state that improved it); "
            "each graded state is a point, a rejected one a cross at the foot, numbered as in the table. "
            "Dashed lines: the ladder's measured rungs on the headline. Solid line: the human reference, "
            "published, from a different harness.",
        ),
        states_table(attempt).html(),
        workloads_table(attempt).html(),
        ladder_table(rungs).html(),
    ]
    return page(f"loopbench attempt {attempt.id}", "".join(body))


def timeline_path(results: Path, attempt_id: str) -> Path:
    return Path(results) / "reports" / f"attempt-{attempt_id}.html"


def write_timeline(results: Path, attempt_id: str, ladder_dir: Path, out: Path | None = None) -> Path:
    """The timeline page of the latest grade of `attempt_id` among the records of results/runs."""
    found = load_records(results)
    graded = next((a for a in attempts(found) if a.id == attempt_id), None)
    if graded is None:
        raise LoopbenchError(f"no graded attempt {attempt_id} among the records of {Path(results) / 'runs'}")
    others = found if Path(ladder_dir) == Path(results) else load_records(ladder_dir)
    target = out or timeline_path(results, attempt_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(timeline_html(graded, ladder(others, graded)).encode("utf-8"))
    return target


def attempt_rows(found: list[Found]) -> list[dict[str, Any]]:
    """The final state of the latest grade of each attempt, as data (what `leaderboard --json` prints)."""
    rows = []
    for attempt in attempts(found):
        final = attempt.final
        headline = final.records[0][1]
        rows.append(
            {
                "attempt": attempt.id,
                "system": headline.submission.system,
                "headline": headline.workload.name,
                "accepted": final.accepted,
                "score": final.info.score,
                "headline_speedup": headline.speedup,
                "variants": sum(1 for _, rec in final.records if _info(rec).variant_seed is not None),
                "elapsed_seconds": final.info.elapsed_seconds,
                "states": len(attempt.states),
                "graded": attempt.graded,
                "reason": final.reason(),
            }
        )
    return rows


def attempts_table(found: list[Found]) -> Table:
    """The leaderboard's table of graded attempts."""
    table = Table(
        "attempts",
        "Graded attempts of the sealed task (the final state of each attempt's latest grade)",
        ["attempt", "system", "headline", "score", "headline speedup", "variants", "elapsed", "states", "graded"],
        numeric=frozenset({3, 4, 5, 6, 7}),
        empty="no graded attempt",
    )
    for i, row in enumerate(attempt_rows(found)):
        table.rows.append(
            [
                row["attempt"],
                row["system"],
                row["headline"],
                num(row["score"], ".2f", "x") if row["accepted"] else f"rejected: {row['reason']}",
                num(row["headline_speedup"], ".2f", "x"),
                str(row["variants"]),
                duration(row["elapsed_seconds"]),
                str(row["states"]),
                row["graded"][:10],
            ]
        )
        if not row["accepted"]:
            table.failed |= {i}
    return table
