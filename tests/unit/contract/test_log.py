"""The one `log` implementation: what it accepts from a submission, what it refuses, and what MemoryLog keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.contract.checkpoint import Checkpoint, CheckpointValueError, float_array, to_float64
from harness.contract.log import LogError, MemoryLog, discarding_log
from harness.contract.spec import param_shapes
from tests.helpers import tiny_task

SHAPES = param_shapes(tiny_task())


def groups(make) -> tuple[dict, dict, dict]:
    return tuple({k: make(s) for k, s in SHAPES.items()} for _ in range(3))


def test_numpy_and_torch_float_values_are_accepted_and_copied_at_once():
    log = MemoryLog()
    params, m, v = groups(lambda s: torch.ones(s))
    log.step(np.int64(0), np.float32(2.5))
    log.checkpoint(0, params, m, v)
    params["wte"].fill_(7.0)  # the submission goes on writing into its buffers
    [cp] = log.checkpoints
    assert log.losses == [(0, 2.5)] and isinstance(log.losses[0][0], int)
    assert cp.step == 0 and cp.params["wte"].dtype == np.float64 and (cp.params["wte"] == 1.0).all()


@pytest.mark.parametrize(
    "value, fragment",
    [
        (torch.ones(2, dtype=torch.bfloat16), "dtype bfloat16"),
        (np.ones(2, dtype=np.float16), "dtype float16"),
        (np.ones(2, dtype=np.int64), "dtype int64"),
        ([1.0, 2.0], "is a builtins.list, not a numpy array or a torch tensor"),
    ],
)
def test_a_value_that_is_not_a_float_array_is_refused_naming_it(value, fragment):
    with pytest.raises(CheckpointValueError, match=fragment):
        float_array(value)
    params, m, v = groups(np.zeros)
    m["wpe"] = value
    with pytest.raises(LogError, match=rf"checkpoint after step 4: m\['wpe'\] .*{fragment.split()[0]}"):
        MemoryLog().checkpoint(4, params, m, v)


def test_a_group_that_is_not_a_dict_or_a_step_that_is_not_a_number_is_refused():
    params, m, v = groups(np.zeros)
    with pytest.raises(LogError, match="v is a list, not a dict"):
        MemoryLog().checkpoint(4, params, m, list(v.values()))
    with pytest.raises(LogError, match="not a number"):
        MemoryLog().step("four", 1.0)
    with pytest.raises(LogError, match="not a number"):
        discarding_log().step(1, "low")


def test_float64_conversion_copies_and_keeps_the_values():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = to_float64(a)
    a[0, 0] = 99.0
    assert b.dtype == np.float64 and b[0, 0] == 0.0 and b[1, 2] == 5.0


def test_the_initial_checkpoint_starts_with_zero_moments():
    params = {k: np.ones(s) for k, s in SHAPES.items()}
    start = Checkpoint.initial(params)
    assert start.step == -1 and all((a == 0).all() for a in start.m.values()) and (start.params["wte"] == 1).all()
