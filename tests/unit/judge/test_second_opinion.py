"""The audit's second opinion (harness.judge.second_opinion): a segment over a tolerance is judged against the
float32 noise the trusted implementation itself has there, never looser than CAP times the tolerance.

The honest submission here is the trusted implementation run in float32, checkpoint by checkpoint: its figures
are then exactly the segment's float32 noise, so the audit's tolerances can be set just under them to stand in
for the ill-conditioned segment that a constant tolerance cannot allow for.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.contract.checkpoint import Checkpoint
from harness.contract.spec import Tolerances
from harness.judge import audit, oracle, second_opinion
from harness.judge.tolerances import DEFAULT
from tests.helpers import tiny_run_inputs


def float32_run(seed: int = 0):
    """The trusted implementation's float32 trajectory, each segment from the float32 checkpoint before it."""
    task, params, batches = tiny_run_inputs(seed)
    state, losses, checkpoints = Checkpoint.initial(params), [], []
    for step in task.checkpoint_steps():
        logged, end = oracle.replay(task, state, batches, state.step + 1, step, dtype=torch.float32)
        losses += list(zip(range(step - len(logged) + 1, step + 1), logged, strict=True))
        checkpoints.append(end)
        state = end.as_float64()
    return task, params, batches, losses, checkpoints


@pytest.fixture(scope="module")
def run():
    task, params, batches, losses, checkpoints = float32_run()
    plain = audit.audit_run(task, params, batches, losses, checkpoints)
    assert plain.accepted, plain.reason
    assert all(not s.float32_noise for s in plain.segments), "no second opinion where every figure is within"
    return task, params, batches, losses, checkpoints, plain


def test_the_float32_replay_is_float32_and_lands_near_the_float64_one(run):
    task, params, batches, _, checkpoints, _ = run
    assert all(a.dtype == np.float32 for a in checkpoints[0].params.values())
    start = Checkpoint.initial(params)
    losses, replayed = oracle.replay(task, start, batches, 0, checkpoints[0].step)
    noise = second_opinion.float32_figures(task, start, batches, replayed, losses)
    assert set(noise) >= {"distance_params", "distance_m", "distance_v", "moments", "tensor_distance", "loss"}
    assert all(v > 0.0 for k, v in noise.items() if k != "loss"), noise
    assert noise["moments"] < DEFAULT.moments and noise["distance_params"] < DEFAULT.distance


def test_widened_limits_lie_between_the_tolerance_and_cap_times_it():
    tol = DEFAULT
    low = second_opinion.widened(tol, {"moments": 0.0, "distance_params": 0.0})
    assert low == tol.model_copy(update={}), "no noise, no change"
    mid = second_opinion.widened(tol, {"moments": 0.3 * tol.moments})
    assert mid.moments == pytest.approx(second_opinion.MARGIN * 0.3 * tol.moments)
    assert tol.moments < mid.moments < second_opinion.CAP * tol.moments
    high = second_opinion.widened(
        tol, dict.fromkeys(("moments", "distance_params", "tensor_distance", "loss"), 1000000000.0)
    )
    assert high.moments == second_opinion.CAP * tol.moments
    assert high.distance == second_opinion.CAP * tol.distance
    assert high.loss == second_opinion.CAP * tol.loss
    assert high.loss_bias == tol.loss_bias and high.decay_share == tol.decay_share, "run-level and decay untouched"
    unset = second_opinion.widened(Tolerances(distance=1e-3, tensor_distance=1e-2, loss=1e-4), {"moments": 1.0})
    assert unset.moments is None


def _just_under(plain: audit.Verdict) -> Tolerances:
    """Tolerances a third of the honest float32 run's worst figures: a constant too tight for its noise."""
    worst = {
        "moments": max(s.moment_distance for s in plain.segments),
        "distance": max(s.group_distances["params"] for s in plain.segments),
    }
    return DEFAULT.model_copy(update={k: v / 3 for k, v in worst.items()})


def test_honest_float32_over_a_tight_constant_is_accepted_on_its_noise(run):
    task, params, batches, losses, checkpoints, plain = run
    tight = _just_under(plain)
    assert audit.segment_failure(plain.segments[0], tight) or any(
        audit.segment_failure(s, tight) for s in plain.segments
    ), "the tight constant alone must reject the honest run"
    verdict = audit.audit_run(task, params, batches, losses, checkpoints, tight)
    assert verdict.accepted, verdict.reason
    second = [s for s in verdict.segments if s.float32_noise]
    assert second, "some segment needed the second opinion"
    for s in second:
        assert s.limits["moments"] >= tight.moments
        assert s.limits["moments"] <= second_opinion.CAP * tight.moments


def test_scattered_moments_stay_rejected_however_tight_the_constant(run):
    # elementwise noise on m far above float32's, as 16-bit arithmetic in the gradient leaves it
    task, params, batches, losses, checkpoints, plain = run
    rng = np.random.default_rng(0)
    bad = list(checkpoints)
    cp = bad[0]
    m = {k: (a * (1 + 3e-2 * rng.standard_normal(a.shape))).astype(np.float32) for k, a in cp.m.items()}
    bad[0] = Checkpoint(cp.step, cp.params, m, cp.v)
    verdict = audit.audit_run(task, params, batches, losses, bad, _just_under(plain))
    assert not verdict.accepted
    assert "segment 0" in verdict.reason and "float32 noise" in verdict.reason, verdict.reason
    assert verdict.segments[0].float32_noise and verdict.segments[0].limits
