"""The naive reference run in this process: for `loopbench reference` and the tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.contract.checkpoint import Arrays
from harness.contract.log import MemoryLog
from harness.contract.spec import Workload
from harness.judge import oracle
from harness.scoring import data
from harness.scoring.progress import bar as progress_bar


@dataclass
class LocalRun:
    losses: list[float]
    final_params: Arrays
    eval_loss: float
    seconds: float
    log: MemoryLog


class _Progress(MemoryLog):
    """A MemoryLog that moves a progress bar at every step."""

    def __init__(self, bar: Any) -> None:
        super().__init__()
        self.bar = bar

    def step(self, s: object, loss: object) -> None:
        super().step(s, loss)
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss={self.losses[-1][1]:.4f}")


def run_reference(workload: Workload, seed: int, corpus: data.Corpus, progress: bool = True) -> LocalRun:
    """The naive reference on `workload` in this process, with a progress bar over steps on stderr."""
    from reference_loop.train import train

    task = workload.task()
    batches = data.make_batches(corpus, task, seed)
    params = data.init_params(task, seed)
    bar = progress_bar(task.steps, f"reference {workload.name}", "step", progress, outer=True)
    log = _Progress(bar)
    start = time.perf_counter()
    train(task, params, batches, log)
    seconds = time.perf_counter() - start
    bar.close()
    final = log.final_params()
    return LocalRun(
        losses=[loss for _, loss in log.losses],
        final_params=final,
        eval_loss=oracle.eval_loss(task, final, data.eval_windows(corpus, task)),
        seconds=seconds,
        log=log,
    )
