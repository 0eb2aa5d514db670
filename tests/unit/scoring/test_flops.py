"""The FLOP count agrees with torch's own count of the oracle's forward pass."""

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.judge import oracle
from harness.scoring.flops import run_flops, step_flops
from tests.helpers import tiny_run_inputs


def test_matmul_flops_match_torch_flop_counter():
    task, params, batches = tiny_run_inputs(0)
    p = {k: torch.tensor(v) for k, v in params.items()}
    with FlopCounterMode(display=False) as counter:
        oracle._forward_loss(task, p, torch.tensor(np.asarray(batches[0])))
    counted = counter.get_total_flops()
    ours = step_flops(task)
    B, T, C, L = task.batch_size, task.ctx_len, task.d_model, task.n_layer
    # torch counts the full T x T attention; the count keeps only the causal pairs
    full_attention = L * 2 * 2 * B * T * T * C
    assert counted == ours["forward_matmul"] + full_attention
    assert ours["forward_attention"] == full_attention * (T + 1) // (2 * T)


def test_a_run_is_steps_times_a_step():
    task, _, _ = tiny_run_inputs(0)
    assert run_flops(task) == task.steps * sum(step_flops(task).values())
    assert step_flops(task)["backward_matmul"] == 2 * step_flops(task)["forward_matmul"]
