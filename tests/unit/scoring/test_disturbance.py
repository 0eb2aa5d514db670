"""The policy on what a run lost: which figures make it no measurement, and the refusal of a busy machine."""

from __future__ import annotations

import pytest

from harness.errors import MachineBusy
from harness.scoring import disturbance
from harness.trial.disturbance import CpuSample, Lost, lost


def run_lost(others: float = 0.0, steal: float = 0.0, wall: float = 10.0, cores: int = 2) -> Lost:
    return Lost(wall_s=wall, cores=cores, others_cpu_s=others, steal_s=steal, wait_s=0.1, cpu_s=cores * wall * 0.9)


def test_an_idle_run_is_clean_and_keeps_its_figures():
    record = disturbance.judge(run_lost(others=0.05))
    assert record is not None and not record.disturbed and record.why is None
    assert record.granted == pytest.approx(0.9) and record.others_cpu_seconds == 0.05


@pytest.mark.parametrize(
    "others, steal, why", [(2.0, 0.0, "other processes took 2.00 CPU-s"), (0.0, 1.5, "the hypervisor stole 1.50 s")]
)
def test_a_share_of_the_cores_taken_by_others_disturbs_a_run(others, steal, why):
    record = disturbance.judge(run_lost(others=others, steal=steal), attempts=2)
    assert record is not None and record.disturbed and why in (record.why or "") and record.attempts == 2


def test_a_short_run_is_judged_above_the_tick_floor():
    # 0.3 s on 2 cores: 0.04 CPU-s of others is within /proc/stat's 10 ms ticks, not a disturbance
    assert not disturbance.judge(run_lost(others=0.04, wall=0.3)).disturbed
    assert disturbance.judge(run_lost(others=0.2, wall=0.3)).disturbed


def test_others_cpu_is_busy_time_less_the_run_and_the_harness():
    before, after = CpuSample(busy_s=100.0, steal_s=1.0, own_s=5.0), CpuSample(busy_s=120.0, steal_s=1.5, own_s=5.5)
    figures = lost(before, after, {(1, 1): 0.5}, {(1, 1): 0.7, (1, 2): 0.1}, wall_s=10.0, cores=2, run_cpu_s=18.0)
    assert figures.others_cpu_s == pytest.approx(1.5) and figures.steal_s == pytest.approx(0.5)
    assert figures.wait_s == pytest.approx(0.3) and figures.granted == pytest.approx(0.9)


def test_probes_below_the_ceiling_and_a_spread_ceiling_say_busy():
    assert disturbance.probes_busy([290.0, 280.0], 300.0) is None
    assert "probe ran at 150 GFLOP/s" in disturbance.probes_busy([290.0, 150.0], 300.0)
    assert (
        disturbance.ceiling_busy({"gemm_repeats": [290, 300, 310], "gemm_spread": 0.066, "gemm_others_share": 0.01})
        is None
    )
    assert "spread by 80%" in disturbance.ceiling_busy({"gemm_repeats": [100, 300, 340], "gemm_spread": 0.8})
    assert "took 45% of the budget's cores" in disturbance.ceiling_busy(
        {"gemm_spread": 0.01, "gemm_others_share": 0.45}
    )


def test_the_refusal_is_a_one_line_machine_busy_with_its_own_exit_code():
    err = disturbance.refusal("trial 2 was disturbed in 3 attempts", "other processes took 5 CPU-s")
    assert isinstance(err, MachineBusy) and err.exit_code == 3
    assert str(err).startswith("machine busy: trial 2") and "\n" not in str(err)
