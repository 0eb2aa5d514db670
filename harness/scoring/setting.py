"""What a command fixes once: the workload, the budget, the corpus and the machine's ceiling; and fresh seeds."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from harness.contract.spec import Budget, Task, Workload
from harness.scoring import data
from harness.scoring.disturbance import BusyPolicy, ceiling_busy, refusal
from harness.scoring.flops import product_flops, run_flops
from harness.scoring.machine import describe


@dataclass
class Setting:
    workload: Workload
    budget: Budget
    corpus: data.Corpus
    machine: dict[str, Any]
    """The machine description; `gemm_gflops` is the ceiling of the node that times the runs."""
    busy: BusyPolicy = "refuse"
    """What a disturbed run makes of a score: re-run, then "machine busy" (refuse), or kept and marked (record)."""

    @property
    def task(self) -> Task:
        return self.workload.task()

    @property
    def flops(self) -> int:
        return run_flops(self.task)

    @property
    def gemm_gflops(self) -> float:
        return float(self.machine["gemm_gflops"])

    @property
    def peak_gflops(self) -> float:
        """The fastest rate products can run at here: the FMA peak where it was measured, and never below the
        GEMM rate (a library's products are products too)."""
        return max(self.gemm_gflops, float(self.machine.get("fma_peak_gflops") or 0.0))

    @property
    def floor_seconds(self) -> float:
        """The physical floor: the run's matrix products at the peak rate (element-wise work not counted)."""
        return product_flops(self.task) / (self.peak_gflops * 1e9)

    def ceiling_fraction(self, seconds: float | None) -> float | None:
        """The FLOP rate of a run of `seconds` over the measured GEMM rate."""
        if not seconds:
            return None
        return self.flops / seconds / (self.gemm_gflops * 1e9)


def make_setting(
    workload: Workload, budget: Budget, corpus: data.Corpus, measure: bool = True, busy: BusyPolicy = "refuse"
) -> Setting:
    """The setting of a command; `measure=False` leaves the machine empty, for executors whose nodes measure
    their own (the machine that times a trial is the one whose ceiling counts). A ceiling measured on a busy
    machine refuses the setting under the refuse policy."""
    data.check_corpus_fits(corpus, workload.task())
    machine = describe(budget.cores) if measure else {}
    why = ceiling_busy(machine) if measure else None
    if why and busy == "refuse":
        raise refusal("the ceiling could not be measured", why)
    return Setting(workload, budget, corpus, machine, busy)


def new_seed() -> int:
    """Unpredictable, so that nothing a submission prepares or caches can know a trial's data."""
    return secrets.randbelow(2**31)
