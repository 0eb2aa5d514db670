"""One run and its verdict: the trial's own failures, then the audit, then the physical floor; the held-out loss."""

from __future__ import annotations

from harness.contract.checks import Check
from harness.contract.submission import Submission
from harness.judge import oracle
from harness.judge.audit import audit_run
from harness.judge.tolerances import for_workload
from harness.records.schema import Isolation, RunSummary
from harness.scoring import data
from harness.scoring.disturbance import MAX_ATTEMPTS, judge
from harness.scoring.flops import product_flops
from harness.scoring.progress import RunProgress, bar
from harness.scoring.setting import Setting
from harness.trial.session import run_trial

Arrays = data.Arrays
TIME_DEPENDENT = (None, Check.TIMEOUT, Check.IMPLAUSIBLE)
"""Verdicts a busy machine could have changed: an accepted run (its time), a timeout, an implausible time."""


def run_once(
    sub: Submission,
    setting: Setting,
    params: Arrays,
    batches: data.Batches,
    progress: bool,
    label: str,
    attempts: int = 1,
) -> RunSummary:
    """One run of `sub` in a fresh process, then its verdict."""
    task = setting.task
    shown = RunProgress(label, task.steps, progress)
    try:
        outcome = run_trial(sub, task, setting.budget, params, batches, on_step=shown.step)
    finally:
        shown.close()
    summary = RunSummary(
        accepted=False,
        reason="",
        seconds=round(outcome.seconds, 4) if outcome.seconds else None,
        setup_seconds=round(outcome.setup_seconds, 3),
        cpu_seconds=round(outcome.cpu_seconds, 3),
        peak_memory_mib=outcome.peak_memory_mib,
        isolation=Isolation.model_validate(outcome.isolation),
        losses=[loss for _, loss in outcome.losses],
        disturbance=judge(outcome.lost, attempts),
    )
    if outcome.failure is not None:
        summary.reason, summary.check = outcome.failure.reason, outcome.failure.check
        return summary
    segments = bar(len(task.checkpoint_steps()), f"{label}: audit", "segment", progress)
    try:
        verdict = audit_run(
            task,
            params,
            batches,
            outcome.losses,
            outcome.checkpoints,
            for_workload(setting.workload),
            on_segment=lambda k: segments.update(1),
        )
    finally:
        segments.close()
    summary.segments = verdict.segments
    summary.accepted, summary.reason, summary.hint = verdict.accepted, verdict.reason, verdict.hint
    summary.check = verdict.failure.check if verdict.failure else None
    if verdict.accepted and outcome.seconds < setting.floor_seconds:
        summary.accepted, summary.check = False, Check.IMPLAUSIBLE
        summary.reason = (
            f"implausible time: {outcome.seconds:.4f} s is below the physical floor of {setting.floor_seconds:.4f} s "
            f"({product_flops(task) / 1e9:.1f} GFLOP of matrix products at the machine's measured peak of "
            f"{setting.peak_gflops:.0f} GFLOP/s)"
        )
    if outcome.checkpoints:
        final = outcome.checkpoints[-1].as_float64().params
        summary.eval_loss = oracle.eval_loss(task, final, data.eval_windows(setting.corpus, task))
    return summary


def clean_run(
    sub: Submission, setting: Setting, params: Arrays, batches: data.Batches, progress: bool, label: str
) -> RunSummary:
    """A run that the machine did not disturb: run again (bounded) while it was, under the refuse policy.

    The last attempt is returned whatever it says: the caller decides whether a disturbed run ends the score.
    Verdicts that do not depend on time (the audit's, a crash) are never run again.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        shown = label if attempt == 1 else f"{label} (attempt {attempt}/{MAX_ATTEMPTS}: the last was disturbed)"
        run = run_once(sub, setting, params, batches, progress, shown, attempt)
        disturbed = run.disturbance is not None and run.disturbance.disturbed
        if not disturbed or setting.busy == "record" or run.check not in TIME_DEPENDENT:
            return run
    return run
