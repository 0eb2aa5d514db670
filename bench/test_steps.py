"""One training step of each submission on each workload, timed in this process by pytest-benchmark.

For fast iteration between full scores: `pytest bench --benchmark-only` (README, "Microbenchmarks").
Each case loads a submission's entry point in this process, runs its prepare(task) and one untimed
warm-up step, then times train() on the workload's task cut to one step, with the workload's initial
parameters and first batch. A step here includes one checkpoint copy, which a real run pays every
`audit_every` steps, and no isolation or audit: `loopbench check` and `loopbench score` are the judges.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pytest

from harness.contract.cores import budget_cpus
from harness.contract.log import MemoryLog
from harness.contract.spec import load_workload, workload_names
from harness.contract.submission import REFERENCE_DIR, load_submission
from harness.dev.scaffold import find_submissions
from harness.sandbox.loader import import_entry
from harness.scoring import data
from harness.scoring.flops import run_flops

PROJECT = Path(__file__).resolve().parents[1]
FOLDERS = [REFERENCE_DIR, *find_submissions(PROJECT / "submissions")]
SEED = 0


@pytest.fixture
def submission(folder):
    """The submission at `folder` with its entry module loaded in this process, as the worker loads it; undone after."""
    sub = load_submission(folder)
    before = set(sys.modules)
    module = import_entry(sub.path, sub.entry_file)
    yield sub, module
    if str(sub.path) in sys.path:
        sys.path.remove(str(sub.path))
    for name in set(sys.modules) - before:  # its own helper modules would shadow the next submission's
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(sub.path) + os.sep):
            del sys.modules[name]


def under_budget(cores: int) -> None:
    """The budget's CPUs and torch threads, reset before each case (a submission may change them)."""
    import torch

    os.sched_setaffinity(0, budget_cpus(cores))
    torch.set_num_threads(cores)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
@pytest.mark.parametrize("workload", workload_names())
def test_step(benchmark, request, submission, workload):
    """One step of `submission` on `workload`: prepare, one untimed step, then timed rounds on fresh inputs."""
    wl = load_workload(workload)
    task = wl.task().model_copy(update={"steps": 1})
    params = data.init_params(task, SEED)
    batches = data.make_batches(data.load_corpus(), task, SEED)
    under_budget(wl.budget.cores)
    sub, module = submission
    train = getattr(module, sub.entry_function)
    if callable(getattr(module, "prepare", None)):
        module.prepare(task)

    def fresh_inputs():
        # a submission may update the arrays it is given in place: every round starts from the same state
        return (task, {k: a.copy() for k, a in params.items()}, batches, MemoryLog()), {}

    args, _ = fresh_inputs()
    train(*args)  # untimed: first-call costs (lazy initialisation, compilation) stay out of the rounds
    log = args[-1]
    assert [s for s, _ in log.losses] == [0] and len(log.checkpoints) == 1, "one step, logged and checkpointed"
    assert math.isfinite(log.losses[0][1])

    # as many rounds as fit in --benchmark-max-time, at least --benchmark-min-rounds
    max_time = float(request.config.getoption("benchmark_max_time"))
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    start = time.perf_counter()
    train(*fresh_inputs()[0])
    rounds = max(min_rounds, min(10_000, int(max_time / max(time.perf_counter() - start, 1e-6))))
    benchmark.group = f"one step on {workload}"
    benchmark.extra_info.update(workload=workload, submission=sub.name, flops=run_flops(task))
    benchmark.pedantic(train, setup=fresh_inputs, rounds=rounds, iterations=1)
