"""Microbenchmarks of one training step run under the budget's threads and CPUs, set before numpy or torch loads."""

import os

from harness.machine import available_cpus, thread_env
from harness.spec import load_workload, workload_names

BUDGET_CORES = min(max(load_workload(name).budget.cores for name in workload_names()), len(available_cpus()))
"""The thread pools of BLAS and OpenMP read their size once, at import: every workload's budget has 2 cores."""

os.environ.update(thread_env(BUDGET_CORES))
