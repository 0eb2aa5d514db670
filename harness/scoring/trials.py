"""Trials: a timed trial runs the baseline and every submission back to back on one seed; a check runs one."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.contract.submission import Submission
from harness.errors import LoopbenchError
from harness.records.schema import RunSummary
from harness.scoring import data
from harness.scoring.disturbance import MAX_ATTEMPTS, probes_busy, refusal
from harness.scoring.machine import probe_gflops
from harness.scoring.runs import clean_run, run_once
from harness.scoring.setting import Setting


@dataclass
class TrialRuns:
    """One trial as it came back from the node that ran it: its runs, that node, and the attempts lost before."""

    index: int
    seed: int
    node: str
    machine: dict[str, Any]
    """The machine description of the node, its GEMM rate measured under the budget there."""
    baseline: RunSummary | None
    submissions: list[RunSummary]
    retries: list[str] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)
    """The GEMM probe (GFLOP/s) before and after the trial's runs."""


def local_node() -> str:
    """The name of this machine as a record's trials give it."""
    return platform.node() or "localhost"


def _trial_data(setting: Setting, seed: int) -> tuple[data.Arrays, data.Batches]:
    task = setting.task
    return data.init_params(task, seed), data.make_batches(setting.corpus, task, seed)


def timed_trial(
    subs: list[Submission],
    baseline: Submission,
    setting: Setting,
    index: int,
    trials: int,
    seed: int,
    progress: bool,
    node: str | None = None,
    on_run: Callable[[], None] | None = None,
) -> TrialRuns:
    """Trial `index`: the baseline and every submission back to back on one seed, here, under one budget.

    The order alternates from one trial to the next, so that slow drift of the machine favours neither side.
    A GEMM probe before and after says whether the machine stayed as fast as its ceiling; a trial it says was
    busy is run again, then refused with "machine busy"; a run still disturbed after its own attempts is refused
    at once.
    """
    params, batches = _trial_data(setting, seed)
    order: list[int | None] = [None, *range(len(subs))]
    if index % 2:
        order.reverse()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        probes = [probe_gflops(setting.budget.cores)]
        runs: dict[int | None, RunSummary] = {}
        for who in order:
            sub = baseline if who is None else subs[who]
            runs[who] = run = clean_run(
                sub, setting, params, batches, progress, f"trial {index + 1}/{trials} {sub.name}"
            )
            if on_run:
                on_run()
            if setting.busy == "refuse" and run.disturbance is not None and run.disturbance.disturbed:
                # clean_run already ran it again: running the whole trial again would only repeat that
                raise refusal(f"{sub.name} disturbed in {MAX_ATTEMPTS} attempts", run.disturbance.why or "disturbed")
        probes.append(probe_gflops(setting.budget.cores))
        why = probes_busy(probes, setting.gemm_gflops)  # a disturbed run has already ended the score above
        if why is None or setting.busy == "record":
            break
        if attempt == MAX_ATTEMPTS:
            raise refusal(f"trial {index + 1} was disturbed in {MAX_ATTEMPTS} attempts", why)
    if not runs[None].accepted:
        raise LoopbenchError(
            f"the baseline itself failed in trial {index + 1}: {runs[None].reason} (is the budget too small?)"
        )
    subs_runs = [runs[i] for i in range(len(subs))]
    return TrialRuns(
        index, seed, node or local_node(), setting.machine, runs[None], subs_runs, probes=[round(p, 2) for p in probes]
    )


def verify(sub: Submission, setting: Setting, seed: int, progress: bool, node: str | None = None) -> TrialRuns:
    """One audited run of `sub` on `seed`, here, with no baseline: what `check` asks for."""
    params, batches = _trial_data(setting, seed)
    run = run_once(sub, setting, params, batches, progress, sub.name)
    return TrialRuns(0, seed, node or local_node(), setting.machine, None, [run])
