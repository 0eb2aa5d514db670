"""Running a trusted loop in this process: the naive reference for `loopbench reference` and the tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from harness import data, oracle
from harness.spec import Workload


@dataclass
class MemoryLog:
    """The `log` object of SPEC §5, keeping everything in memory (checkpoints copied at once)."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, dict, dict, dict]] = field(default_factory=list)
    on_step: Callable[[int, float], None] | None = None

    def step(self, s: int, loss: float) -> None:
        self.losses.append((int(s), float(loss)))
        if self.on_step:
            self.on_step(s, loss)

    def checkpoint(self, s: int, params: dict, m: dict, v: dict) -> None:
        copy = lambda d: {k: _float64_copy(a) for k, a in d.items()}  # noqa: E731
        self.checkpoints.append((int(s), copy(params), copy(m), copy(v)))


def _float64_copy(value) -> np.ndarray:
    """A checkpoint value, a numpy array or a CPU torch tensor (SPEC §5), as a float64 copy."""
    if hasattr(value, "detach"):  # torch: through .numpy(), which numpy's own conversion would warn about
        value = value.detach().cpu().numpy()
    return np.array(value, dtype=np.float64)


@dataclass
class LocalRun:
    losses: list[float]
    final_params: dict[str, np.ndarray]
    eval_loss: float
    seconds: float
    log: MemoryLog


def run_reference(workload: Workload, seed: int, corpus: data.Corpus, progress: bool = True) -> LocalRun:
    """The naive reference on `workload` in this process, with a progress bar over steps on stderr."""
    from reference_loop.train import train

    task = workload.task()
    batches = data.make_batches(corpus, task, seed)
    params = data.init_params(task, seed)
    bar = tqdm(total=task.steps, desc=f"reference {workload.name}", unit="step", disable=not progress, leave=False)

    def advance(s: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    log = MemoryLog(on_step=advance)
    start = time.perf_counter()
    train(task, params, batches, log)
    seconds = time.perf_counter() - start
    bar.close()
    final = log.checkpoints[-1][1]
    return LocalRun(
        losses=[loss for _, loss in log.losses],
        final_params=final,
        eval_loss=oracle.eval_loss(task, final, data.eval_windows(corpus, task)),
        seconds=seconds,
        log=log,
    )
