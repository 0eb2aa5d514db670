"""Microbenchmarks of one training step run under the budget's threads and CPUs, set before numpy or torch loads."""

import os

from harness.contract.cores import thread_env
from harness.contract.spec import load_workload, workload_names

BUDGET_CORES = max(load_workload(name).budget.cores for name in workload_names())
"""BLAS and OpenMP size their thread pools once, when loaded; every workload's budget has 2 cores today."""

os.environ.update(thread_env(BUDGET_CORES))
