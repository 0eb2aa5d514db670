"""Checking and scoring: trials run under one budget, each audited, paired with the baseline, recorded."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from harness import audit, data, oracle, records, runner, stats
from harness.flops import run_flops
from harness.machine import describe, versions
from harness.spec import Budget, Task, Workload
from harness.submission import Submission, reference_submission


@dataclass
class Setting:
    """Everything a command fixes once: the workload, the budget, the corpus and the machine's ceiling."""

    workload: Workload
    budget: Budget
    corpus: data.Corpus
    machine: dict

    @property
    def task(self) -> Task:
        return self.workload.task()

    @property
    def flops(self) -> int:
        return run_flops(self.task)

    @property
    def floor_seconds(self) -> float:
        return self.flops / (self.machine["gemm_gflops"] * 1e9)


def make_setting(workload: Workload, budget: Budget, corpus: data.Corpus) -> Setting:
    data.check_corpus_fits(corpus, workload.task())
    return Setting(workload, budget, corpus, describe(budget.cores))


def new_seed() -> int:
    """Unpredictable, so that nothing a submission prepares or caches can know a trial's data."""
    return secrets.randbelow(2**31)


def run_once(sub: Submission, setting: Setting, params, batches, progress: bool, label: str) -> records.RunSummary:
    """One run of `sub` in a fresh process, then its verdict: runner failures, the audit, the physical floor."""
    task = setting.task
    bar = tqdm(total=task.steps, desc=label, unit="step", leave=False, disable=not progress)
    outcome = runner.run_trial(sub, task, setting.budget, params, batches, on_step=lambda s: bar.update(1))
    bar.close()
    summary = records.RunSummary(
        accepted=False, reason="", seconds=round(outcome.seconds, 4) if outcome.seconds else None,
        setup_seconds=round(outcome.setup_seconds, 3), cpu_seconds=round(outcome.cpu_seconds, 3),
        peak_memory_mib=outcome.peak_memory_mib, isolation=outcome.isolation,
        losses=[loss for _, loss in outcome.losses],
    )
    if not outcome.completed:
        summary.reason, summary.check = outcome.failure, outcome.failed_check
        return summary
    bar = tqdm(total=len(task.checkpoint_steps()), desc=f"{label} audit", unit="segment", leave=False, disable=not progress)
    verdict = audit.audit_run(task, params, batches, outcome.losses, outcome.checkpoints, on_segment=lambda k: bar.update(1))
    bar.close()
    summary.segments = [records.SegmentRecord(**vars(s)) for s in verdict.segments]
    summary.accepted, summary.reason, summary.check, summary.hint = verdict.accepted, verdict.reason, verdict.check, verdict.hint
    if verdict.accepted and outcome.seconds < setting.floor_seconds:
        summary.accepted, summary.check = False, "implausible"
        summary.reason = (f"implausible time: {outcome.seconds:.4f} s is below the physical floor of {setting.floor_seconds:.4f} s "
                          f"({setting.flops / 1e9:.1f} GFLOP at the measured {setting.machine['gemm_gflops']:.0f} GFLOP/s)")
    if outcome.checkpoints:
        final = outcome.checkpoints[-1][1]["params"]
        summary.eval_loss = oracle.eval_loss(task, final, data.eval_windows(setting.corpus, task))
    return summary


def check(sub: Submission, setting: Setting, seed: int | None = None, progress: bool = True) -> dict:
    """One trial of `sub`, verification only (no baseline): the object `loopbench check --json` prints."""
    seed = new_seed() if seed is None else seed
    task = setting.task
    params, batches = data.init_params(task, seed), data.make_batches(setting.corpus, task, seed)
    run = run_once(sub, setting, params, batches, progress, sub.name)
    return {
        "submission": sub.name,
        "workload": setting.workload.name,
        "verdict": "accepted" if run.accepted else "rejected",
        "reason": run.reason,
        "check": run.check,
        "hint": run.hint,
        "speedup": None,
        "speedup_ci": None,
        "x_human": None,
        "ceiling_fraction": _ceiling(setting, run.seconds) if run.accepted else None,
        "trials": [{"seed": seed, "baseline_seconds": None, "submission_seconds": run.seconds,
                    "submission_cpu_seconds": run.cpu_seconds, "setup_seconds": run.setup_seconds,
                    "peak_memory_mib": run.peak_memory_mib, "eval_loss": run.eval_loss}],
        "isolation": run.isolation,
    }


def _ceiling(setting: Setting, seconds: float | None) -> float | None:
    if not seconds:
        return None
    return setting.flops / seconds / (setting.machine["gemm_gflops"] * 1e9)


def _info(sub: Submission) -> records.SubmissionInfo:
    m = sub.manifest
    return records.SubmissionInfo(
        name=m.name, kind=m.kind, system=m.system, authors=m.authors, date=str(m.date),
        description=m.description, entrypoint=m.entrypoint, path=str(sub.path), file_hashes=sub.file_hashes(),
    )


def score(subs: list[Submission], setting: Setting, trials: int, results_dir: str | Path | None,
          progress: bool = True) -> list[tuple[records.RunRecord, Path | None]]:
    """Paired trials: in trial k the baseline and every submission run back to back on seed k.

    The order within a trial alternates from one trial to the next, so that slow drift of the machine
    favours neither side. Every run is audited; a submission is accepted only if every one of its runs is.
    """
    baseline = reference_submission()
    task = setting.task
    per_sub: dict[int, list[records.TrialRecord]] = {i: [] for i in range(len(subs))}
    outer = tqdm(total=trials * (len(subs) + 1), desc=f"score on {setting.workload.name}", unit="run", disable=not progress)
    for k in range(trials):
        seed = new_seed()
        params, batches = data.init_params(task, seed), data.make_batches(setting.corpus, task, seed)
        order = [None, *range(len(subs))]
        if k % 2:
            order.reverse()
        runs: dict = {}
        for who in order:
            sub = baseline if who is None else subs[who]
            runs[who] = run_once(sub, setting, params, batches, progress, f"trial {k + 1}/{trials} {sub.name}")
            outer.update(1)
        base = runs[None]
        if not base.accepted:
            from harness.errors import LoopbenchError

            raise LoopbenchError(f"the baseline itself failed in trial {k + 1}: {base.reason} (is the budget too small?)")
        for i in range(len(subs)):
            per_sub[i].append(records.TrialRecord(index=k, seed=seed, baseline=base, submission=runs[i]))
    outer.close()
    out = []
    for i, sub in enumerate(subs):
        record = _record(sub, baseline, setting, per_sub[i])
        path = records.write_record(record, results_dir) if results_dir is not None else None
        out.append((record, path))
    return out


def _record(sub: Submission, baseline: Submission, setting: Setting, trials: list[records.TrialRecord]) -> records.RunRecord:
    rejected = next((t for t in trials if not t.submission.accepted), None)
    base_times = [t.baseline.seconds for t in trials]
    sub_times = [t.submission.seconds for t in trials]
    rec = records.RunRecord(
        created=records.utc_now(), submission=_info(sub), baseline=_info(baseline),
        workload=setting.workload.model_dump(), budget=setting.budget.model_dump(), machine=setting.machine,
        versions=versions(), corpus={"name": setting.corpus.name, "sha256": setting.corpus.sha256},
        tolerances={"distance": audit.DISTANCE_TOL, "tensor_distance": audit.TENSOR_TOL, "loss": audit.LOSS_TOL},
        flops=setting.flops, floor_seconds=setting.floor_seconds, trials=trials,
        verdict="rejected" if rejected else "accepted",
        reason=(f"trial {rejected.index + 1}: {rejected.submission.reason}" if rejected else "every trial accepted"),
        baseline_median_seconds=stats.median(base_times),
    )
    if rejected is None:
        s = stats.speedup(base_times, sub_times)
        lo, hi = stats.speedup_interval(base_times, sub_times)
        med = stats.median(sub_times)
        rec.speedup, rec.speedup_ci, rec.x_human = s, [lo, hi], stats.x_human(s)
        rec.submission_median_seconds = med
        rec.achieved_gflops = setting.flops / med / 1e9
        rec.ceiling_fraction = _ceiling(setting, med)
    return rec


def score_summary(record: records.RunRecord, path: Path | None) -> dict:
    """The object `loopbench score --json` prints for one submission."""
    return {
        "submission": record.submission.name,
        "workload": record.workload["name"],
        "verdict": record.verdict,
        "reason": record.reason,
        "hint": next((t.submission.hint for t in record.trials if t.submission.hint), None),
        "speedup": record.speedup,
        "speedup_ci": record.speedup_ci,
        "x_human": record.x_human,
        "ceiling_fraction": record.ceiling_fraction,
        "baseline_median_seconds": record.baseline_median_seconds,
        "submission_median_seconds": record.submission_median_seconds,
        "trials": [
            {"seed": t.seed, "baseline_seconds": t.baseline.seconds, "submission_seconds": t.submission.seconds,
             "submission_cpu_seconds": t.submission.cpu_seconds, "submission_peak_memory_mib": t.submission.peak_memory_mib,
             "verdict": "accepted" if t.submission.accepted else "rejected", "reason": t.submission.reason}
            for t in record.trials
        ],
        "record": str(path) if path else None,
    }
