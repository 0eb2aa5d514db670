"""No figure the audit compares may be scaled by anything a submission sets freely (SPEC §6, invariance).

The honest run here is the float64 oracle's own trajectory, rounded to float32 at every checkpoint (as a
float32 submission would hand it over): every figure is then small but nonzero, so a change shows.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.contract.checkpoint import Checkpoint
from harness.contract.checks import Check
from harness.judge import audit, figures, oracle
from harness.judge.state import moment_bound, state_problem
from tests.helpers import tiny_run_inputs

FIELDS = ("distance", "tensor_distance", "loss_deviation", "loss_bias", "decay_share", "moment_distance")


def honest_run(seed: int = 0):
    """The oracle's trajectory from the initial parameters, its checkpoints rounded to float32."""
    task, params, batches = tiny_run_inputs(seed)
    state, losses, checkpoints = Checkpoint.initial(params), [], []
    for step in task.checkpoint_steps():
        logged, state = oracle.replay(task, state, batches, state.step + 1, step)
        losses += list(zip(range(step - len(logged) + 1, step + 1), logged, strict=True))
        rounded = {g: {k: a.astype(np.float32) for k, a in arrays.items()} for g, arrays in state.groups().items()}
        checkpoints.append(Checkpoint.of(step, rounded))
        state = checkpoints[-1].as_float64()
    return task, params, batches, losses, checkpoints


def figures_of(verdict: audit.Verdict) -> list[dict[str, float]]:
    return [{**{f: getattr(s, f) for f in FIELDS}, **s.group_distances} for s in verdict.segments]


def with_values(cp: Checkpoint, group: str, name: str, part: slice | np.ndarray, value: float) -> Checkpoint:
    groups = {g: {k: a.copy() for k, a in arrays.items()} for g, arrays in cp.groups().items()}
    groups[group][name][part] = value
    return Checkpoint.of(cp.step, groups)


@pytest.fixture(scope="module")
def run():
    task, params, batches, losses, checkpoints = honest_run()
    clean = audit.audit_run(task, params, batches, losses, checkpoints)
    assert clean.accepted, clean.reason
    assert all(s.distance > 0 for s in clean.segments), "the rounding must show, or nothing here could move"
    return task, params, batches, losses, checkpoints, figures_of(clean)


@pytest.mark.parametrize("group", ["params", "m", "v"])
@pytest.mark.parametrize("value", [1e3, -1e6, 1e-30, 0.0])
def test_values_where_the_audit_does_not_compare_change_no_figure(run, group, value):
    # the key third of attn.b, in any group, at every checkpoint: a huge m over a tiny v there once made the
    # replay move so far that every normalised figure collapsed
    task, params, batches, losses, checkpoints, clean = run
    key = figures.uncompared(task, "h0.attn.b")
    assert key is not None
    tampered = [with_values(cp, group, f"h{i}.attn.b", key, value) for cp in checkpoints for i in range(task.n_layer)]
    tampered = [tampered[k * task.n_layer] for k in range(len(checkpoints))]  # h0 only, every checkpoint
    verdict = audit.audit_run(task, params, batches, losses, tampered)
    assert verdict.accepted, verdict.reason
    for got, want in zip(figures_of(verdict), clean, strict=True):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-18)


@pytest.mark.parametrize("group", ["params", "m", "v"])
def test_a_value_written_in_one_tensor_moves_only_its_own_figures(run, group):
    task, _, batches, _, checkpoints, _ = run
    start, end = checkpoints[1].as_float64(), checkpoints[2].as_float64()
    _, replayed = oracle.replay(task, start, batches, start.step + 1, end.step)
    before = figures.tensor_figures(task, start, end, replayed)
    changed = with_values(end, group, "h1.fc.w", np.s_[0, :5], 0.5)
    after = figures.tensor_figures(task, start, changed, replayed)
    for g, tensors in before.items():
        for name, pair in tensors.items():
            if (g, name) != (group, "h1.fc.w"):
                assert after[g][name] == pytest.approx(pair, rel=1e-12), (g, name)
    assert after[group]["h1.fc.w"][0] > 10 * before[group]["h1.fc.w"][0]
    assert after[group]["h1.fc.w"][1] == before[group]["h1.fc.w"][1], "the movement is the replay's alone"


def test_the_next_segment_restarts_from_the_replays_own_uncompared_values(run):
    task, *_ = run
    _, params, batches, _, checkpoints = honest_run()
    end = with_values(checkpoints[0].as_float64(), "m", "h1.attn.b", figures.uncompared(task, "h1.attn.b"), 1e9)
    _, replayed = oracle.replay(task, Checkpoint.initial(params), batches, 0, end.step)
    restart = figures.restart(task, Checkpoint.initial(params), end, replayed)
    key = figures.uncompared(task, "h1.attn.b")
    np.testing.assert_array_equal(restart.m["h1.attn.b"][key], replayed.m["h1.attn.b"][key])
    np.testing.assert_array_equal(restart.params["wte"], end.params["wte"])  # the rest is the submission's


def test_a_negative_second_moment_is_no_adamw_state(run):
    task, _, _, _, checkpoints, _ = run
    bad = with_values(checkpoints[1].as_float64(), "v", "wpe", np.s_[3, 4], -1e-12)
    assert "v of wpe has a negative element" in state_problem(task, bad)


def test_a_first_moment_beyond_its_bound_is_no_adamw_state(run):
    # a large m over a small v buys the replay as large an update as the submission likes
    task, params, batches, losses, checkpoints, _ = run
    cp = checkpoints[1].as_float64()
    v = float(cp.v["h0.fc.w"][0, 0])
    bound = moment_bound(task, cp.step + 1) * np.sqrt(v)
    within = with_values(cp, "m", "h0.fc.w", np.s_[0, 0], 0.999 * bound)
    assert state_problem(task, within) is None
    beyond = with_values(cp, "m", "h0.fc.w", np.s_[0, 0], 1.01 * bound + 1e-9)
    assert "m of h0.fc.w" in state_problem(task, beyond) and "beyond what AdamW's moments allow" in state_problem(
        task, beyond
    )
    # v zeroed under a nonzero m, in the audit: rejected (by the end state of its segment or by the state check)
    zeroed = with_values(checkpoints[1], "v", "h0.fc.w", np.s_[0, :3], 0.0)
    verdict = audit.audit_run(task, params, batches, losses, [checkpoints[0], zeroed, *checkpoints[2:]])
    assert not verdict.accepted


def test_the_moment_bound_is_tight_for_a_constant_gradient(run):
    # m and v of the same constant gradient g after t steps: |m| / sqrt(v) is below K_t, and K_1 is attained
    task, *_ = run
    b1, b2 = task.beta1, task.beta2
    for t in (1, 2, 5, 50):
        m, v = 1 - b1**t, 1 - b2**t  # g = 1
        assert m / np.sqrt(v) <= moment_bound(task, t) * (1 + 1e-12)
    assert (1 - b1) / np.sqrt(1 - b2) == pytest.approx(moment_bound(task, 1))


def test_every_honest_state_is_within_the_moment_bound(run):
    task, _, _, _, checkpoints, _ = run
    for cp in checkpoints:
        assert state_problem(task, cp.as_float64()) is None


def test_a_replay_that_overflows_is_a_rejection_not_a_crash(run):
    task, params, batches, losses, checkpoints, _ = run
    huge = with_values(checkpoints[1].as_float64(), "params", "lnf.g", np.s_[:], 1e300)
    bad = [*checkpoints[:1], huge, *checkpoints[2:]]
    verdict = audit.audit_run(task, params, batches, losses, bad)
    assert not verdict.accepted


def test_a_small_constant_loss_bias_is_rejected_and_honest_noise_is_not(run):
    task, params, batches, losses, checkpoints, _ = run
    biased = audit.audit_run(task, params, batches, [(s, x - 1e-4) for s, x in losses], checkpoints)
    assert biased.failure is not None and biased.failure.check == Check.LOSS
    assert "biased" in biased.reason and "-0.0001" in biased.reason
    rng = np.random.default_rng(0)  # float32-like noise of each logged loss: no bias
    noisy = [(s, x + float(rng.normal(0, 1e-6))) for s, x in losses]
    assert audit.audit_run(task, params, batches, noisy, checkpoints).accepted


def ill_conditioned_case(run):
    """A segment of the honest run, its replay, and a parameter the replay leaves ill-conditioned."""
    task, _, batches, _, checkpoints, _ = run
    start, end = checkpoints[2].as_float64(), checkpoints[3].as_float64()
    _, replayed = oracle.replay(task, start, batches, start.step + 1, end.step)
    v = replayed.v["h0.fc.w"].copy()
    v.flat[7] = (1e-2 * figures.CONDITION_FLOOR) ** 2 * float(v.mean())  # a gradient at rounding level
    groups = {g: dict(a) for g, a in replayed.groups().items()}
    groups["v"]["h0.fc.w"] = v
    return task, start, end, Checkpoint.of(replayed.step, groups)


def test_an_ill_conditioned_parameter_is_left_out_of_the_parameter_figures_only(run):
    task, start, end, replayed = ill_conditioned_case(run)
    masks = figures.compared_elements(task, replayed)
    assert not masks["params"]["h0.fc.w"].flat[7] and masks["params"]["h0.fc.w"].sum() == end.params["h0.fc.w"].size - 1
    assert masks["m"]["h0.fc.w"] is None and masks["v"]["h0.fc.w"] is None, "m and v are well conditioned"
    assert masks["params"]["wte"] is None or masks["params"]["wte"].all()
    before = figures.end_state(task, start, end, replayed)
    lr = oracle.lr_at(task, end.step + 1)
    moved = with_values(end, "params", "h0.fc.w", np.s_[0, 7], float(end.params["h0.fc.w"][0, 7]) + 0.5 * lr)
    after = figures.end_state(task, start, moved, replayed)
    assert after.distance == pytest.approx(before.distance, rel=1e-12)
    assert after.decay_share == pytest.approx(before.decay_share, rel=1e-12, abs=1e-18)
    # one step's rounding at such an element is kept in the next segment's start (not counted twice), within
    # what AdamW could have moved it; a value beyond that is pulled back to that reach
    restart = figures.restart(task, start, moved, replayed)
    assert restart.params["h0.fc.w"][0, 7] == moved.params["h0.fc.w"][0, 7]
    far = with_values(end, "params", "h0.fc.w", np.s_[0, 7], 1e6)
    pulled = figures.restart(task, start, far, replayed).params["h0.fc.w"][0, 7]
    rep = float(replayed.params["h0.fc.w"][0, 7])
    room = figures.update_room(task, start.step + 1, end.step) * (1.0 + abs(rep))
    assert pulled == pytest.approx(rep + room, rel=1e-12) and room < 20 * lr


def test_a_well_conditioned_gap_still_counts(run):
    task, start, end, replayed = ill_conditioned_case(run)
    before = figures.end_state(task, start, end, replayed)
    lr = oracle.lr_at(task, end.step + 1)
    moved = with_values(end, "params", "h0.fc.w", np.s_[0, 8], float(end.params["h0.fc.w"][0, 8]) + 0.5 * lr)
    assert figures.end_state(task, start, moved, replayed).distance > 10 * before.distance
