"""Checking and scoring: trials run under one budget, each audited, paired with the baseline, recorded."""

from __future__ import annotations

import platform
import secrets
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Protocol

from tqdm import tqdm

from harness import audit, data, oracle, records, runner, stats
from harness.errors import LoopbenchError
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


def make_setting(workload: Workload, budget: Budget, corpus: data.Corpus, measure: bool = True) -> Setting:
    """The setting of a command; `measure=False` leaves the machine empty, for executors whose nodes measure
    their own (the machine that times a trial is the one whose ceiling counts)."""
    data.check_corpus_fits(corpus, workload.task())
    return Setting(workload, budget, corpus, describe(budget.cores) if measure else {})


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


@dataclass
class TrialRuns:
    """One trial as it came back from the node that ran it: its runs, that node, and the attempts lost before."""

    index: int
    seed: int
    node: str
    machine: dict
    """The machine description of the node, its GEMM rate measured under the budget there."""
    baseline: records.RunSummary | None
    submissions: list[records.RunSummary]
    retries: list[str] = field(default_factory=list)


def local_node() -> str:
    """The name of this machine as a record's trials give it."""
    return platform.node() or "localhost"


def _trial_data(setting: Setting, seed: int):
    task = setting.task
    return data.init_params(task, seed), data.make_batches(setting.corpus, task, seed)


def timed_trial(subs: list[Submission], baseline: Submission, setting: Setting, index: int, trials: int, seed: int,
                progress: bool, node: str | None = None, on_run=None) -> TrialRuns:
    """Trial `index`: the baseline and every submission back to back on one seed, here, under one budget.

    The order alternates from one trial to the next, so that slow drift of the machine favours neither side.
    """
    params, batches = _trial_data(setting, seed)
    order = [None, *range(len(subs))]
    if index % 2:
        order.reverse()
    runs: dict = {}
    for who in order:
        sub = baseline if who is None else subs[who]
        runs[who] = run_once(sub, setting, params, batches, progress, f"trial {index + 1}/{trials} {sub.name}")
        if on_run:
            on_run()
    if not runs[None].accepted:
        raise LoopbenchError(f"the baseline itself failed in trial {index + 1}: {runs[None].reason} (is the budget too small?)")
    return TrialRuns(index, seed, node or local_node(), setting.machine, runs[None], [runs[i] for i in range(len(subs))])


def verify(sub: Submission, setting: Setting, seed: int, progress: bool, node: str | None = None) -> TrialRuns:
    """One audited run of `sub` on `seed`, here, with no baseline: what `check` asks for."""
    params, batches = _trial_data(setting, seed)
    run = run_once(sub, setting, params, batches, progress, sub.name)
    return TrialRuns(0, seed, node or local_node(), setting.machine, None, [run])


class Executor(Protocol):
    """Where trials run: this machine (LocalExecutor) or a cluster (harness.cluster.RayExecutor)."""

    def timed_trials(self, subs: list[Submission], baseline: Submission, setting: Setting, seeds: list[int],
                     progress: bool) -> list[TrialRuns]: ...

    def verify(self, sub: Submission, setting: Setting, seed: int, progress: bool) -> TrialRuns: ...


class LocalExecutor:
    """Every trial on this machine, one after another."""

    def timed_trials(self, subs: list[Submission], baseline: Submission, setting: Setting, seeds: list[int],
                     progress: bool) -> list[TrialRuns]:
        outer = tqdm(total=len(seeds) * (len(subs) + 1), desc=f"score on {setting.workload.name}", unit="run", disable=not progress)
        done = [timed_trial(subs, baseline, setting, k, len(seeds), seed, progress, on_run=lambda: outer.update(1))
                for k, seed in enumerate(seeds)]
        outer.close()
        return done

    def verify(self, sub: Submission, setting: Setting, seed: int, progress: bool) -> TrialRuns:
        return verify(sub, setting, seed, progress)


@contextmanager
def open_executor(name: str = "local", address: str | None = None) -> Iterator[Executor]:
    """The executor a command asked for; Ray is imported only when it is the one asked for."""
    if name == "local":
        if address is not None:
            raise LoopbenchError("--address names a Ray cluster: it needs --executor ray")
        yield LocalExecutor()
    elif name == "ray":
        from harness.cluster import ray_executor

        with ray_executor(address) as executor:
            yield executor
    else:
        raise LoopbenchError(f"unknown executor {name!r}: local or ray")


def check(sub: Submission, setting: Setting, seed: int | None = None, progress: bool = True,
          executor: Executor | None = None) -> dict:
    """One trial of `sub`, verification only (no baseline): the object `loopbench check --json` prints."""
    seed = new_seed() if seed is None else seed
    done = (executor or LocalExecutor()).verify(sub, setting, seed, progress)
    run = done.submissions[0]
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
        "ceiling_fraction": _ceiling(replace(setting, machine=done.machine), run.seconds) if run.accepted else None,
        "trials": [{"seed": seed, "baseline_seconds": None, "submission_seconds": run.seconds,
                    "submission_cpu_seconds": run.cpu_seconds, "setup_seconds": run.setup_seconds,
                    "peak_memory_mib": run.peak_memory_mib, "eval_loss": run.eval_loss,
                    "node": done.node, "retries": done.retries}],
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
          progress: bool = True, executor: Executor | None = None) -> list[tuple[records.RunRecord, Path | None]]:
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
        trial_records = [records.TrialRecord(index=t.index, seed=t.seed, baseline=t.baseline, submission=t.submissions[i],
                                             node=t.node, retries=t.retries) for t in done]
        record = _record(sub, baseline, timed_on, trial_records, nodes)
        path = records.write_record(record, results_dir) if results_dir is not None else None
        out.append((record, path))
    return out


def _machines(done: list[TrialRuns]) -> tuple[dict, dict[str, dict]]:
    """The machine of the node that timed the most trials (the earliest on a tie), and every node's machine
    when more than one node timed trials."""
    machines = {t.node: t.machine for t in done}
    main = Counter(t.node for t in done).most_common(1)[0][0]
    return machines[main], (machines if len(machines) > 1 else {})


def _record(sub: Submission, baseline: Submission, setting: Setting, trials: list[records.TrialRecord],
            nodes: dict[str, dict]) -> records.RunRecord:
    rejected = next((t for t in trials if not t.submission.accepted), None)
    base_times = [t.baseline.seconds for t in trials]
    sub_times = [t.submission.seconds for t in trials]
    timed_on = [t.node for t in trials]
    rec = records.RunRecord(
        created=records.utc_now(), submission=_info(sub), baseline=_info(baseline),
        workload=setting.workload.model_dump(), budget=setting.budget.model_dump(), machine=setting.machine, nodes=nodes,
        versions=versions(), corpus={"name": setting.corpus.name, "sha256": setting.corpus.sha256},
        tolerances={"distance": audit.DISTANCE_TOL, "tensor_distance": audit.TENSOR_TOL, "loss": audit.LOSS_TOL},
        flops=setting.flops, floor_seconds=setting.floor_seconds, trials=trials,
        verdict="rejected" if rejected else "accepted",
        reason=(f"trial {rejected.index + 1}: {rejected.submission.reason}" if rejected else "every trial accepted"),
        baseline_median_seconds=stats.median(base_times),
    )
    if rejected is None:
        s = stats.speedup(base_times, sub_times, timed_on)
        lo, hi = stats.speedup_interval(base_times, sub_times, timed_on)
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
             "verdict": "accepted" if t.submission.accepted else "rejected", "reason": t.submission.reason,
             "node": t.node, "retries": t.retries}
            for t in record.trials
        ],
        "record": str(path) if path else None,
    }
