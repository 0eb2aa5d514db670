"""When a run is no measurement (SPEC §7): the thresholds on what it lost, and the refusal of a busy machine.

A run is disturbed when other processes, or the hypervisor, took a share of its cores' time above the
thresholds below; a trial is disturbed when the GEMM probe before or after it runs well below the ceiling
measured when the command started; a ceiling whose repeats spread too widely was measured on a busy
machine. The thresholds are calibrated in docs/calibration.md (no idle run trips them; every run beside one
competing busy process does).
"""

from __future__ import annotations

from typing import Any, Literal

from harness.errors import MachineBusy
from harness.records.schema import Disturbance
from harness.trial.disturbance import Lost

OTHERS_SHARE = 0.04
"""Others' CPU time on the budget's cores, as a share of cores x wall, above which a run is disturbed."""
STEAL_SHARE = 0.04
FLOOR_S = 0.05
"""An absolute floor under both shares: /proc/stat counts in 10 ms ticks, so short runs read coarse figures."""
PROBE_RATIO = 0.75
"""A trial whose GEMM probe before or after it falls below this share of the ceiling was run on a busy machine."""
CEILING_SPREAD = 0.25
"""(highest - lowest) / median of the ceiling's repeats above which the ceiling itself was measured busy."""
MAX_ATTEMPTS = 3
"""Runs of one trial (or of one run within it) before a score gives up with "machine busy"."""

BusyPolicy = Literal["refuse", "record"]
"""refuse: re-run disturbed runs, then end with "machine busy"; record: keep them, marked (no score then)."""


def judge(lost: Lost | None, attempts: int = 1) -> Disturbance | None:
    """The record of what a run lost, with the verdict of the thresholds."""
    if lost is None:
        return None
    limit_others = max(FLOOR_S, OTHERS_SHARE * lost.capacity_s)
    limit_steal = max(FLOOR_S, STEAL_SHARE * lost.capacity_s)
    why = None
    if lost.others_cpu_s > limit_others:
        why = f"other processes took {lost.others_cpu_s:.2f} CPU-s of the budget's {lost.capacity_s:.2f} core-s"
    elif lost.steal_s > limit_steal:
        why = f"the hypervisor stole {lost.steal_s:.2f} s of the budget's {lost.capacity_s:.2f} core-s"
    return Disturbance(
        others_cpu_seconds=round(lost.others_cpu_s, 4),
        steal_seconds=round(lost.steal_s, 4),
        wait_seconds=round(lost.wait_s, 4),
        granted=round(lost.granted, 4),
        disturbed=why is not None,
        why=why,
        attempts=attempts,
    )


def probes_busy(probes: list[float], ceiling: float) -> str | None:
    """Why a trial's probes say the machine was busy, or None."""
    low = min(probes, default=ceiling)
    if ceiling > 0 and low < PROBE_RATIO * ceiling:
        return f"the GEMM probe ran at {low:.0f} GFLOP/s, {100 * low / ceiling:.0f}% of the ceiling of {ceiling:.0f}"
    return None


def ceiling_busy(machine: dict[str, Any]) -> str | None:
    """Why the ceiling was measured on a busy machine (other processes on its cores, or repeats spread), or None."""
    repeats, spread = machine.get("gemm_repeats") or [], machine.get("gemm_spread")
    others = machine.get("gemm_others_share")
    if others is not None and others > OTHERS_SHARE:
        return f"other processes took {100 * others:.0f}% of the budget's cores while the ceiling was measured"
    if spread is not None and spread > CEILING_SPREAD:
        return (
            f"the ceiling's repeats spread by {100 * spread:.0f}% ({min(repeats):.0f}-{max(repeats):.0f} GFLOP/s), "
            f"over the {100 * CEILING_SPREAD:.0f}% an idle machine gives"
        )
    return None


def refusal(what: str, why: str) -> MachineBusy:
    return MachineBusy(
        f"machine busy: {what}: {why}; score on an idle machine (or keep marked runs with --busy record)"
    )
