"""One training step of each submission on each workload, timed in this process by pytest-benchmark.

For fast iteration between full scores: `pytest bench --benchmark-only` (README, "Microbenchmarks").
Each case loads a submission's entry point in this process, runs its prepare(task) and one untimed
warm-up step, then times train() on the workload's task cut to one step, with the workload's initial
parameters and first batch. A step here includes one checkpoint copy, which a real run pays every
`audit_every` steps, and no isolation or audit: `loopbench check` and `loopbench score` are the judges.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from pathlib import Path

import pytest

from harness import data
from harness.flops import run_flops
from harness.local import MemoryLog
from harness.machine import budget_cpus
from harness.scaffold import find_submissions
from harness.spec import load_workload, workload_names
from harness.submission import REFERENCE_DIR, Submission, load_submission

PROJECT = Path(__file__).resolve().parents[1]
FOLDERS = [REFERENCE_DIR, *find_submissions(PROJECT / "submissions")]
SEED = 0


@pytest.fixture
def entry_point(request):
    """Load a submission's entry module in this process under a name of its own; undo its traces on sys.path and sys.modules."""
    loaded: list[tuple[Submission, object]] = []
    before = set(sys.modules)

    def load(folder: Path):
        sub = load_submission(folder)
        sys.path.insert(0, str(sub.path))
        spec = importlib.util.spec_from_file_location(f"loopbench_step_{len(loaded)}", sub.path / sub.entry_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append((sub, module))
        return sub, module

    yield load
    for sub, _ in loaded:
        sys.path.remove(str(sub.path))
    for name in set(sys.modules) - before:  # a submission's own helper modules would shadow the next one's
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(tuple(str(s.path) for s, _ in loaded)):
            del sys.modules[name]


def under_budget(cores: int) -> None:
    """The budget's CPUs and torch threads, reset before each case (a submission may change them)."""
    import torch

    os.sched_setaffinity(0, budget_cpus(cores))
    torch.set_num_threads(cores)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
@pytest.mark.parametrize("workload", workload_names())
def test_step(benchmark, request, entry_point, workload, folder):
    wl = load_workload(workload)
    task = wl.task().model_copy(update={"steps": 1})
    params = data.init_params(task, SEED)
    batches = data.make_batches(data.load_corpus(), task, SEED)
    under_budget(wl.budget.cores)
    sub, module = entry_point(folder)
    train = getattr(module, sub.entry_function)
    if callable(getattr(module, "prepare", None)):
        module.prepare(task)

    def fresh_inputs():
        # a submission may update the arrays it is given in place; every round starts from the same state
        return (task, {k: a.copy() for k, a in params.items()}, batches, MemoryLog()), {}

    warm_up = MemoryLog()
    train(task, {k: a.copy() for k, a in params.items()}, batches, warm_up)
    assert [s for s, _ in warm_up.losses] == [0] and len(warm_up.checkpoints) == 1, "one step logged and checkpointed"
    assert math.isfinite(warm_up.losses[0][1])

    benchmark.group = f"one step on {workload}"
    benchmark.extra_info.update(workload=workload, submission=sub.name, flops=run_flops(task))
    # as many rounds as fit in --benchmark-max-time, at least --benchmark-min-rounds, each on fresh inputs
    max_time = float(request.config.getoption("benchmark_max_time"))
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    start = time.perf_counter()
    train(*fresh_inputs()[0])
    seconds = time.perf_counter() - start
    rounds = max(min_rounds, min(10_000, int(max_time / max(seconds, 1e-6))))
    benchmark.pedantic(train, setup=fresh_inputs, rounds=rounds, iterations=1)
