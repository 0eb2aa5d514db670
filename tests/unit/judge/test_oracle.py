"""The naive reference agrees with the independent float64 oracle: gradients, one step, a whole run."""

import numpy as np
import pytest

from harness.contract.checkpoint import Checkpoint
from harness.contract.log import MemoryLog
from harness.judge import oracle
from reference_loop import train as ref
from tests.helpers import rel_err, tiny_run_inputs


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_hand_written_gradients_equal_autograd(seed):
    task, params, batches = tiny_run_inputs(seed)
    x, y = batches[0, :, :-1], batches[0, :, 1:]
    loss = ref.compute_loss(params, x, y, task)
    grads = ref.compute_gradients(params, x, y, task)
    oracle_loss, oracle_grads = oracle.loss_and_grads(task, params, batches[0])
    assert loss == pytest.approx(oracle_loss, rel=1e-12)
    assert set(grads) == set(oracle_grads)
    for name in grads:
        assert rel_err(grads[name], oracle_grads[name]) < 1e-9, name


def test_gradients_agree_on_odd_sizes():
    # one head, three layers, a context that is not a power of two
    task, params, batches = tiny_run_inputs(3, n_head=1, n_layer=3, ctx_len=11, d_model=24)
    grads = ref.compute_gradients(params, batches[0, :, :-1], batches[0, :, 1:], task)
    _, oracle_grads = oracle.loss_and_grads(task, params, batches[0])
    for name in grads:
        assert rel_err(grads[name], oracle_grads[name]) < 1e-9, name


def test_one_reference_step_equals_one_oracle_step():
    task, params, batches = tiny_run_inputs(2)
    state = Checkpoint.initial(params)
    # take the run a few steps in, so that the moments and the schedule are not at their start
    _, state = oracle.replay(task, state, batches, 0, 5)
    params = {k: a.copy() for k, a in state.params.items()}
    m = {k: a.copy() for k, a in state.m.items()}
    v = {k: a.copy() for k, a in state.v.items()}
    s = 6
    grads = ref.compute_gradients(params, batches[s, :, :-1], batches[s, :, 1:], task)
    ref.adamw_update(params, grads, m, v, s + 1, task)
    _, expected = oracle.adamw_step(task, state, s, batches[s])
    for name in params:
        assert rel_err(params[name], expected.params[name]) < 1e-9, name
        assert rel_err(m[name], expected.m[name]) < 1e-9, name
        assert rel_err(v[name], expected.v[name]) < 1e-9, name


def test_whole_tiny_run_reproduces_the_oracle_trajectory():
    task, params, batches = tiny_run_inputs(5)
    log = MemoryLog()
    ref.train(task, params, batches, log)
    losses, end = oracle.replay(task, Checkpoint.initial(params), batches, 0, task.steps - 1)
    assert [s for s, _ in log.losses] == list(range(task.steps))
    np.testing.assert_allclose([loss for _, loss in log.losses], losses, rtol=0, atol=1e-8)
    assert [cp.step for cp in log.checkpoints] == task.checkpoint_steps()
    final = log.final_params()
    for name in final:
        assert rel_err(final[name], end.params[name]) < 1e-8, name


def test_the_reference_leaves_its_inputs_alone():
    task, params, batches = tiny_run_inputs(0, steps=2)
    before = {k: a.copy() for k, a in params.items()}
    ref.train(task, params, batches, MemoryLog())
    for name in before:
        np.testing.assert_array_equal(params[name], before[name])
