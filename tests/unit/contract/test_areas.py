"""The shared-memory areas of a run: the data as the worker sees it, and the log area read back as written."""

from __future__ import annotations

import os

import numpy as np
import pytest

from harness.contract import protocol
from harness.contract.areas import DataLayout, LogArea, LogLayout, map_data, memfd, write_data
from harness.contract.checkpoint import Checkpoint
from harness.contract.spec import param_shapes
from harness.trial.collect import collect
from harness.trial.outcome import TrialOutcome
from tests.helpers import tiny_run_inputs


def test_the_worker_sees_the_data_the_parent_wrote():
    task, params, batches = tiny_run_inputs(2)
    layout = DataLayout.from_json(DataLayout.of(task).to_json())
    fd = write_data(layout, params, batches)
    try:
        got_params, got_batches = map_data(fd, layout)
        np.testing.assert_array_equal(got_batches, batches)
        for name in params:
            np.testing.assert_array_equal(got_params[name], params[name])
        assert not got_batches.flags.writeable, "the batches are read-only"
        got_params["wte"][0, 0] = 123.0  # the parameters are the worker's to change, privately
        again, _ = map_data(fd, layout)
        assert again["wte"][0, 0] == params["wte"][0, 0]
    finally:
        os.close(fd)


def test_the_log_area_reads_back_steps_and_checkpoints():
    task, params, _ = tiny_run_inputs(0)
    layout = LogLayout.of(task)
    fd = memfd("test-log", layout.size)
    worker, parent = LogArea.map(fd, layout), LogArea.map(fd, layout)
    os.close(fd)
    for s in range(3):
        n = int(worker.count[0])
        worker.steps[n], worker.losses[n] = s, 5.0 - s
        worker.count[0] = n + 1
    state = Checkpoint.initial(params)
    cp = Checkpoint(4, {k: a.astype(np.float32) for k, a in state.params.items()}, state.m, state.v)
    message, chunks = protocol.checkpoint_message(cp, slot=0)
    slot = worker.slot(0, message.nbytes)
    at = 0
    for chunk in chunks:
        slot[at : at + chunk.nbytes] = chunk.reshape(-1).view(np.uint8)
        at += chunk.nbytes
    outcome = TrialOutcome()
    collect(outcome, parent, [message])
    assert outcome.losses == [(0, 5.0), (1, 4.0), (2, 3.0)]
    [got] = outcome.checkpoints
    assert got.step == 4 and got.params["wte"].dtype == np.float32
    np.testing.assert_array_equal(got.params["wte"], cp.params["wte"])
    np.testing.assert_array_equal(got.v["lnf.b"], 0.0)
    worker.count[0] = 10**9  # a worker that lies about its count reads as a full area, no more
    assert len(parent.logged()) == layout.step_capacity


def test_a_slot_holds_a_float64_checkpoint_of_every_parameter():
    task, _, _ = tiny_run_inputs(0)
    layout = LogLayout.of(task)
    n_params = sum(int(np.prod(s)) for s in param_shapes(task).values())
    assert layout.slot_size >= 3 * n_params * 8 and layout.slots == len(task.checkpoint_steps())
    assert layout.size == layout.slot_offset(layout.slots)


@pytest.mark.parametrize("steps", [1, 7, 100])
def test_layouts_round_trip(steps):
    task, _, _ = tiny_run_inputs(0, steps=steps)
    assert LogLayout.from_json(LogLayout.of(task).to_json()) == LogLayout.of(task)
    assert DataLayout.from_json(DataLayout.of(task).to_json()) == DataLayout.of(task)
