"""`loopbench task grade`: an attempt's states re-scored outside its workspace, on fresh seeds and held-out variants.

Run by the evaluator, outside the attempt's sandbox. The workspace is read through a clone (never in place),
each graded state is copied into a folder of the evaluator's and scored in paired trials against the
installed reference, on the headline workloads and on variants of each drawn now from a seed the workspace
never saw. The records (kind "agent", the state, its elapsed time, its content hash, its score) and the
attempt's timeline page are written once every trial is in: an interrupted grade leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.contract.spec import Workload
from harness.errors import LoopbenchError
from harness.records.schema import AttemptInfo, RunRecord, SubmissionInfo
from harness.records.store import utc_now, write_record
from harness.report.attempts import timeline_path, write_timeline
from harness.scoring import data
from harness.scoring.disturbance import BusyPolicy, ceiling_busy, refusal
from harness.scoring.machine import describe
from harness.scoring.results import score, unrun_record
from harness.scoring.setting import Setting
from harness.task.history import Clone
from harness.task.marker import MARKER, SUBMISSION, parse_marker
from harness.task.states import State, graded_states
from harness.task.variants import draw_variants

PROJECT_RESULTS = Path("results")
"""The project's own results folder: its records give a timeline's ladder lines unless --ladder says otherwise."""
MIN_VARIANTS = 1


@dataclass(frozen=True)
class Planned:
    """One workload of the grade: a headline, or a held-out variant of one (with the seed it was drawn from)."""

    workload: Workload
    headline: Workload
    variant_seed: int | None = None


@dataclass
class Graded:
    attempt: str
    graded: str
    states: list[State]
    plan: list[Planned]
    records: dict[int, list[RunRecord]]
    """Each state's records, by the state's index, in the order of `plan`."""
    paths: list[Path] = field(default_factory=list)
    timeline: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def final(self) -> State:
        return next(s for s in self.states if s.final)

    def info(self, state: State) -> AttemptInfo:
        """What the state's records say of it (the same in each)."""
        attempt = self.records[state.index][0].attempt
        if attempt is None:
            raise ValueError("the records of the grade are not annotated yet")
        return attempt

    def score(self, state: State) -> float | None:
        return self.info(state).score


def plan_workloads(headlines: list[Workload], variants: int, seed: int) -> list[Planned]:
    """Each headline, then `variants` variants of it drawn from `seed` (plus the headline's position)."""
    plan = []
    for i, headline in enumerate(headlines):
        plan.append(Planned(headline, headline))
        plan += [Planned(v, headline, seed + i) for v in draw_variants(headline, variants, seed + i)]
    return plan


def _state_info(state: State, system: str) -> SubmissionInfo:
    files = {}
    for path in sorted(p for p in state.folder.rglob("*") if p.is_file()):
        files[str(path.relative_to(state.folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return SubmissionInfo(
        name=Path(SUBMISSION).name,
        kind="agent",
        system=system,
        authors=[],
        date="",
        description="",
        entrypoint="",
        path=f"{SUBMISSION} at {state.state}",
        file_hashes=files,
    )


def _score_plan(
    states: list[State], plan: list[Planned], trials: int, progress: bool, busy: BusyPolicy
) -> dict[int, list[RunRecord]]:
    """Every state on every planned workload: the runnable ones in paired trials together, the others rejected."""
    runnable = [s for s in states if s.submission is not None]
    machines: dict[int, dict[str, object]] = {}
    corpus = data.load_corpus()
    out: dict[int, list[RunRecord]] = {s.index: [] for s in states}
    for item in plan:
        budget = item.headline.budget
        machine = machines.setdefault(budget.cores, describe(budget.cores))
        why = ceiling_busy(machine)
        if why and busy == "refuse":
            raise refusal("the ceiling could not be measured", why)
        data.check_corpus_fits(corpus, item.workload.task())
        setting = Setting(item.workload, budget, corpus, dict(machine), busy)
        subs = [s.submission for s in runnable if s.submission is not None]
        scored = score(subs, setting, trials, None, progress) if subs else []
        for state, (record, _) in zip(runnable, scored, strict=True):
            out[state.index].append(record)
        for state in states:
            if state.submission is None:
                out[state.index].append(unrun_record(_state_info(state, "unknown"), setting, state.error or ""))
    return out


def _geometric_mean(records: list[RunRecord]) -> float | None:
    if any(r.verdict != "accepted" or not r.speedup for r in records):
        return None
    return math.exp(sum(math.log(r.speedup or 1.0) for r in records) / len(records))


def _annotate(graded: Graded, system: str) -> None:
    """Each record: kind agent, the evaluator's system, where it came from, and its state's score."""
    for state in graded.states:
        records = graded.records[state.index]
        state_score = _geometric_mean(records)
        for record, item in zip(records, graded.plan, strict=True):
            record.submission = record.submission.model_copy(
                update={"kind": "agent", "system": system, "path": f"{SUBMISSION} at {state.state}"}
            )
            record.attempt = AttemptInfo(
                id=graded.attempt,
                graded=graded.graded,
                state=state.state,
                index=state.index,
                final=state.final,
                elapsed_seconds=round(state.elapsed, 1),
                content_hash=state.content_hash,
                headline=item.headline.name,
                variant_seed=item.variant_seed,
                score=state_score,
            )


def _system(states: list[State], system: str | None) -> str:
    if system:
        return system
    final = next(s for s in states if s.final)
    return final.submission.manifest.system if final.submission else "unknown"


def grade_attempt(
    workspace: Path,
    headlines: list[Workload],
    results: Path,
    trials: int = 3,
    every: int = 1,
    variants: int = 2,
    system: str | None = None,
    ladder: Path | None = None,
    progress: bool = True,
    busy: BusyPolicy = "refuse",
) -> Graded:
    """Grade the attempt in `workspace`; the records go to results/runs, the timeline to results/reports."""
    if not (workspace / MARKER).is_file():
        raise LoopbenchError(f"{workspace} is not a task workspace (no {MARKER}: `loopbench task export` makes one)")
    if trials < 1 or every < 0 or variants < MIN_VARIANTS:
        raise LoopbenchError(f"a grade needs --trials >= 1, --every >= 0 and --variants >= {MIN_VARIANTS}")
    plan = plan_workloads(headlines, variants, secrets.randbits(62))
    with tempfile.TemporaryDirectory(prefix="loopbench-grade-") as tmp:
        clone = Clone(workspace, Path(tmp))
        first = clone.first_commit()
        marker = parse_marker(clone.show(first, MARKER) or "")
        if marker is None:
            raise LoopbenchError(f"the first commit of {workspace} holds no valid {MARKER}: not a task export")
        states = graded_states(clone, workspace, SUBMISSION, marker.started(), every, Path(tmp) / "states")
        graded = Graded(first[:12], utc_now(), states, plan, _score_plan(states, plan, trials, progress, busy))
    if marker.headline != [w.name for w in headlines]:
        graded.warnings.append(
            f"the workspace was exported with the headline {', '.join(marker.headline)}; graded on "
            f"{', '.join(w.name for w in headlines)} (--workload)"
        )
    _annotate(graded, _system(states, system))
    graded.paths = [write_record(r, results) for s in states for r in graded.records[s.index]]
    graded.timeline = write_timeline(
        results, graded.attempt, ladder or PROJECT_RESULTS, timeline_path(results, graded.attempt)
    )
    return graded
