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
from harness.scoring.runs import run_once
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
    """
    params, batches = _trial_data(setting, seed)
    order: list[int | None] = [None, *range(len(subs))]
    if index % 2:
        order.reverse()
    runs: dict[int | None, RunSummary] = {}
    for who in order:
        sub = baseline if who is None else subs[who]
        runs[who] = run_once(sub, setting, params, batches, progress, f"trial {index + 1}/{trials} {sub.name}")
        if on_run:
            on_run()
    if not runs[None].accepted:
        raise LoopbenchError(
            f"the baseline itself failed in trial {index + 1}: {runs[None].reason} (is the budget too small?)"
        )
    return TrialRuns(
        index, seed, node or local_node(), setting.machine, runs[None], [runs[i] for i in range(len(subs))]
    )


def verify(sub: Submission, setting: Setting, seed: int, progress: bool, node: str | None = None) -> TrialRuns:
    """One audited run of `sub` on `seed`, here, with no baseline: what `check` asks for."""
    params, batches = _trial_data(setting, seed)
    run = run_once(sub, setting, params, batches, progress, sub.name)
    return TrialRuns(0, seed, node or local_node(), setting.machine, None, [run])
