"""From trials to results: `check` (one audited run, no baseline) and `score` (paired trials, one record each)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.contract.submission import Submission, reference_submission
from harness.judge.tolerances import for_workload
from harness.records.outputs import CheckOutput, TrialView
from harness.records.schema import CorpusRef, Machine, RunRecord, RunSummary, SubmissionInfo, TrialRecord, Versions
from harness.records.store import utc_now, write_record
from harness.scoring import stats
from harness.scoring.executors import Executor, LocalExecutor
from harness.scoring.machine import versions
from harness.scoring.setting import Setting, new_seed
from harness.scoring.trials import TrialRuns


def check(
    sub: Submission, setting: Setting, seed: int | None = None, progress: bool = True, executor: Executor | None = None
) -> CheckOutput:
    """One trial of `sub`, verification only (no baseline): what `loopbench check --json` prints."""
    seed = new_seed() if seed is None else seed
    done = (executor or LocalExecutor()).verify(sub, setting, seed, progress)
    run = done.submissions[0]
    trial = TrialRecord(index=0, seed=seed, baseline=None, submission=run, node=done.node, retries=done.retries)
    return CheckOutput(
        submission=sub.name,
        workload=setting.workload.name,
        verdict="accepted" if run.accepted else "rejected",
        reason=run.reason,
        check=run.check,
        hint=run.hint,
        trials=[TrialView.of(trial)],
        isolation=run.isolation,
        ceiling_fraction=replace(setting, machine=done.machine).ceiling_fraction(run.seconds) if run.accepted else None,
    )


def score(
    subs: list[Submission],
    setting: Setting,
    trials: int,
    results_dir: str | Path | None,
    progress: bool = True,
    executor: Executor | None = None,
) -> list[tuple[RunRecord, Path | None]]:
    """Paired trials: in trial k the baseline and every submission run back to back on seed k, on one node.

    Every run is audited; a submission is accepted only if every one of its runs is. The records are written
    here, by the caller of the trials, once every trial is in: never by whatever ran the trials.
    """
    baseline = reference_submission()
    seeds = [new_seed() for _ in range(trials)]
    done = (executor or LocalExecutor()).timed_trials(subs, baseline, setting, seeds, progress)
    machine, nodes = _machines(done)
    timed_on = replace(setting, machine=machine)
    out = []
    for i, sub in enumerate(subs):
        trial_records = [_trial_record(t, t.submissions[i]) for t in done]
        record = _record(sub, baseline, timed_on, trial_records, nodes)
        path = write_record(record, results_dir) if results_dir is not None else None
        out.append((record, path))
    return out


def _trial_record(t: TrialRuns, run: RunSummary) -> TrialRecord:
    return TrialRecord(
        index=t.index, seed=t.seed, baseline=t.baseline, submission=run, node=t.node, retries=t.retries, probes=t.probes
    )


def _machines(done: list[TrialRuns]) -> tuple[dict[str, Any], dict[str, Machine]]:
    """The machine of the node that timed the most trials (the earliest on a tie), and every node's machine
    when more than one node timed trials."""
    machines = {t.node: t.machine for t in done}
    main = Counter(t.node for t in done).most_common(1)[0][0]
    nodes = {name: Machine.model_validate(m) for name, m in machines.items()} if len(machines) > 1 else {}
    return machines[main], nodes


def _disturbed(run: RunSummary | None) -> int:
    return int(run is not None and run.disturbance is not None and run.disturbance.disturbed)


def submission_info(sub: Submission) -> SubmissionInfo:
    m = sub.manifest
    return SubmissionInfo(
        name=m.name,
        kind=m.kind,
        system=m.system,
        authors=m.authors,
        date=str(m.date),
        description=m.description,
        entrypoint=m.entrypoint,
        path=str(sub.path),
        file_hashes=sub.file_hashes(),
    )


def _record(
    sub: Submission, baseline: Submission, setting: Setting, trials: list[TrialRecord], nodes: dict[str, Machine]
) -> RunRecord:
    rejected = next((t for t in trials if not t.submission.accepted), None)
    base_times = [t.baseline.seconds for t in trials if t.baseline and t.baseline.seconds]
    sub_times = [t.submission.seconds or 0.0 for t in trials]
    rec = _frame(
        submission_info(sub),
        baseline,
        setting,
        trials,
        nodes,
        rejected="" if rejected is None else f"trial {rejected.index + 1}: {rejected.submission.reason}",
    )
    rec.baseline_median_seconds = stats.median(base_times)
    if rejected is None:
        timed_on = [t.node or "" for t in trials]
        s = stats.speedup(base_times, sub_times, timed_on)
        if len(trials) >= stats.MIN_TRIALS_FOR_INTERVAL:  # one trial has no interval
            rec.speedup_ci = list(stats.speedup_interval(base_times, sub_times, timed_on))
        med = stats.median(sub_times)
        rec.speedup, rec.x_human = s, stats.x_human(s)
        rec.submission_median_seconds = med
        rec.achieved_gflops = setting.flops / med / 1e9
        rec.ceiling_fraction = setting.ceiling_fraction(med)
    return rec


def _frame(
    info: SubmissionInfo,
    baseline: Submission,
    setting: Setting,
    trials: list[TrialRecord],
    nodes: dict[str, Machine],
    rejected: str,
) -> RunRecord:
    """A record's facts but the statistics: accepted when `rejected` (the reason) is empty."""
    return RunRecord(
        created=utc_now(),
        submission=info,
        baseline=submission_info(baseline),
        workload=setting.workload,
        budget=setting.budget,
        machine=Machine.model_validate(setting.machine),
        nodes=nodes,
        versions=Versions.model_validate(versions()),
        corpus=CorpusRef(name=setting.corpus.name, sha256=setting.corpus.sha256),
        tolerances=for_workload(setting.workload),
        flops=setting.flops,
        floor_seconds=setting.floor_seconds,
        trials=trials,
        verdict="rejected" if rejected else "accepted",
        reason=rejected or "every trial accepted",
        disturbed_runs=sum(_disturbed(t.baseline) + _disturbed(t.submission) for t in trials),
    )


def unrun_record(info: SubmissionInfo, setting: Setting, reason: str) -> RunRecord:
    """The record of a folder that could not be run at all (it is not a valid submission): rejected, no trial."""
    return _frame(info, reference_submission(), setting, [], {}, rejected=reason)
