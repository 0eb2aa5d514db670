"""The cores of a budget, as both sides of a trial see them: which CPUs, and every thread-count variable."""

from __future__ import annotations

import os

from harness.errors import LoopbenchError

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "TORCH_NUM_THREADS",
)


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def budget_cpus(cores: int) -> list[int]:
    """The CPUs a budget of `cores` runs on: the first `cores` this process may use."""
    cpus = available_cpus()
    if cores > len(cpus):
        raise LoopbenchError(f"the budget asks for {cores} cores but this machine offers {len(cpus)}")
    return cpus[:cores]


def thread_env(cores: int) -> dict[str, str]:
    """Every thread-count variable set to the budget's core count."""
    return {var: str(cores) for var in THREAD_VARS}


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list such as '0-3,6' as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        elif part:
            cpus.add(int(part))
    return cpus
