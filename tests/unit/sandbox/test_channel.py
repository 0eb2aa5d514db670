"""The worker's log sink: a checkpoint made of the previous one's arrays is copied by its plan, and reads back
exactly as the values the submission holds at that moment, whatever it changed in between."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from harness.contract import protocol, wire
from harness.contract.areas import LogArea, LogLayout, memfd
from harness.contract.log import Log
from harness.contract.spec import param_shapes
from harness.sandbox.channel import Channel
from harness.trial.collect import collect
from harness.trial.outcome import TrialOutcome
from tests.helpers import tiny_run_inputs


class Worker:
    """A worker's log over a fresh log area, its headers read back from a pipe as the parent reads them."""

    def __init__(self):
        self.task, _, _ = tiny_run_inputs(0)
        layout = LogLayout.of(self.task)
        fd = memfd("test-log", layout.size)
        os.posix_fallocate(fd, 0, layout.size)
        self.area, self.parent_area = LogArea.map(fd, layout), LogArea.map(fd, layout)
        os.close(fd)
        self.r, w = os.pipe()
        self.channel = Channel(w, self.area)
        self.log = Log(self.channel)
        self.headers: list[dict] = []
        self.messages: list[protocol.CheckpointMessage] = []

    def read(self) -> protocol.CheckpointMessage:
        header = wire.read_header(self.r)
        self.headers.append(header)
        previous = self.messages[-1] if self.messages else None
        message = protocol.parse_message(header, param_shapes(self.task), previous)
        assert isinstance(message, protocol.CheckpointMessage)
        self.messages.append(message)
        return message

    def checkpoints(self):
        outcome = TrialOutcome()
        collect(outcome, self.parent_area, self.messages)
        return outcome.checkpoints


def flat_buffers(task, dtype=np.float32):
    """Three flat buffers and their per-name views, as a native loop holds its state."""
    shapes = param_shapes(task)
    n = sum(math.prod(s) for s in shapes.values())
    rng = np.random.default_rng(1)
    bufs = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    views = []
    for buf in bufs:
        at, group = 0, {}
        for name, shape in shapes.items():
            group[name] = buf[at : at + math.prod(shape)].reshape(shape)
            at += math.prod(shape)
        views.append(group)
    return bufs, views


def test_the_same_arrays_again_are_copied_by_the_plan_with_their_new_values():
    w = Worker()
    bufs, views = flat_buffers(w.task)
    w.log.checkpoint(0, *views)
    first = w.read()
    assert "tensors" in w.headers[0] and w.channel.plan is not None and len(w.channel.plan.ranges) == 3
    expected = [[b.copy() for b in bufs]]
    for s in (1, 2):
        for b in bufs:
            b *= 1.5  # the loop trains on, in place
        w.log.checkpoint(s, *views)
        expected.append([b.copy() for b in bufs])
        assert w.read().tensors == first.tensors
    assert all(set(h) == {"type", "s", "slot", "same"} for h in w.headers[1:]), "a repeat says only where it is"
    for cp, want in zip(w.checkpoints(), expected, strict=True):
        for group, buf in zip(("params", "m", "v"), want, strict=True):
            got = np.concatenate([a.reshape(-1) for a in cp.groups()[group].values()])
            np.testing.assert_array_equal(got, buf)


def test_a_replaced_or_reshaped_array_is_handed_over_anew():
    w = Worker()
    _, views = flat_buffers(w.task)
    w.log.checkpoint(0, *views)
    w.read()
    views[1]["wte"] = views[1]["wte"] + 1.0  # a new object
    w.log.checkpoint(1, *views)
    w.read()
    assert "tensors" in w.headers[1]
    w.log.checkpoint(2, *views)  # the same objects as the second: a repeat again
    w.read()
    assert w.headers[2].get("same") is True
    np.testing.assert_array_equal(w.checkpoints()[2].m["wte"], views[1]["wte"])


def test_a_torch_tensor_whose_memory_changed_is_not_copied_from_the_old_memory():
    w = Worker()
    shapes = param_shapes(w.task)
    params = {k: torch.randn(s) for k, s in shapes.items()}
    m = {k: torch.zeros(s) for k, s in shapes.items()}
    v = {k: torch.ones(s) for k, s in shapes.items()}
    w.log.checkpoint(0, params, m, v)
    w.read()
    params["wpe"].data = torch.full(shapes["wpe"], 7.0)  # same object, new storage
    w.log.checkpoint(1, params, m, v)
    w.read()
    assert "tensors" in w.headers[1]
    np.testing.assert_array_equal(w.checkpoints()[1].params["wpe"], 7.0)


def test_a_strided_view_is_copied_every_time():
    # no plan: the contiguous copy made of a strided view is not the submission's memory
    w = Worker()
    shapes = param_shapes(w.task)
    wide = {k: np.zeros((*s, 2), dtype=np.float32) for k, s in shapes.items()}
    params = {k: a[..., 0] for k, a in wide.items()}
    zeros = {k: np.zeros(s, dtype=np.float32) for k, s in shapes.items()}
    w.log.checkpoint(0, params, zeros, zeros)
    w.read()
    assert w.channel.plan is None
    wide["lnf.g"][..., 0] = 3.0
    w.log.checkpoint(1, params, zeros, zeros)
    w.read()
    np.testing.assert_array_equal(w.checkpoints()[1].params["lnf.g"], 3.0)


@pytest.mark.parametrize(
    "header",
    [
        {"type": "checkpoint", "s": 1, "slot": 1, "same": False},
        {"type": "checkpoint", "s": 1, "slot": -1, "same": True},
        {"type": "checkpoint", "s": "1", "slot": 1, "same": True},
        {"type": "checkpoint", "s": 1, "slot": 1, "same": True, "nbytes": 10**12},
    ],
)
def test_a_malformed_repeat_is_a_protocol_error(header):
    w = Worker()
    _, views = flat_buffers(w.task)
    w.log.checkpoint(0, *views)
    first = w.read()
    with pytest.raises(protocol.ProtocolError, match="malformed"):
        protocol.parse_message(json.loads(json.dumps(header)), param_shapes(w.task), first)


def test_a_repeat_of_nothing_is_a_protocol_error():
    header = {"type": "checkpoint", "s": 0, "slot": 0, "same": True}
    task, _, _ = tiny_run_inputs(0)
    with pytest.raises(protocol.ProtocolError, match="never came"):
        protocol.parse_message(header, param_shapes(task), None)


def test_repeats_send_no_header_but_the_final_one_and_read_back_from_the_log_area():
    w = Worker()
    final = w.task.checkpoint_steps()[-1]
    w.channel.final_step = final
    bufs, views = flat_buffers(w.task)
    steps = [0, 1, 2, final]
    for s in steps:
        bufs[0][:] = s
        w.log.checkpoint(s, *views)
    first, last = w.read(), w.read()
    assert "tensors" in w.headers[0] and w.headers[1].get("same") is True and (first.s, last.s) == (0, final)
    assert w.area.written_slots() == steps
    messages, problem = protocol.complete_checkpoints([first, last], w.parent_area.written_slots())
    assert problem is None and [m.s for m in messages] == steps and [m.slot for m in messages] == [0, 1, 2, 3]
    outcome = TrialOutcome()
    collect(outcome, w.parent_area, messages)
    assert [float(cp.params["wte"].flat[0]) for cp in outcome.checkpoints] == steps


def test_checkpoints_the_log_area_cannot_account_for_are_protocol_errors():
    first = protocol.CheckpointMessage(0, (), 0, 0)
    assert (
        protocol.complete_checkpoints([], [4])[1]
        == "checkpoint after step 4 came without any header to give its layout"
    )
    assert "never written" in protocol.complete_checkpoints([first, protocol.CheckpointMessage(9, (), 0, 2)], [0])[1]
    assert "says step 0, the log area step 5" in protocol.complete_checkpoints([first], [5])[1]
    messages, problem = protocol.complete_checkpoints([first], [0, 1])
    assert problem is None and [m.s for m in messages] == [0, 1]
