"""The protocol's pure checks, with no worker spawned: what the parent accepts from the pipe, and what a run reports."""

from __future__ import annotations

import numpy as np
import pytest

from harness.contract import protocol
from harness.contract.checkpoint import Checkpoint
from harness.contract.spec import param_shapes
from tests.helpers import tiny_task

TASK = tiny_task(audit_every=5)  # the cases below name the checkpoints of 5-step segments
SHAPES = param_shapes(TASK)


def zeros_checkpoint(step: int, dtype: str = "float32") -> Checkpoint:
    return Checkpoint(step, *({k: np.zeros(s, dtype) for k, s in SHAPES.items()} for _ in range(3)))


def header_of(message: protocol.Message) -> dict:
    return protocol.encode(message)


# ---------------------------------------------------------------- messages round-trip


@pytest.mark.parametrize(
    "message",
    [
        protocol.Ready(),
        protocol.ErrorMessage("train", "ZeroDivisionError: boom", "Traceback ..."),
        protocol.Done(("time.perf_counter",)),
    ],
)
def test_every_message_reads_back_as_itself(message):
    assert protocol.parse_message(header_of(message), SHAPES) == message


def test_a_checkpoint_header_reads_back_with_its_layout():
    message, chunks = protocol.checkpoint_message(zeros_checkpoint(4))
    parsed = protocol.parse_message(header_of(message), SHAPES)
    assert parsed == message and parsed.nbytes == sum(c.nbytes for c in chunks)
    assert [t.group for t in parsed.tensors][:1] == ["params"] and len(parsed.tensors) == 3 * len(SHAPES)


def test_orders_read_back_as_themselves():
    order = protocol.Order(TASK.model_dump(), "/x/submission", "train.py", "train", {"slots": 4})
    assert protocol.parse_order(protocol.encode_order(order)) == order
    go = protocol.Go({"size": 4096})
    assert protocol.parse_order(protocol.encode_order(go)) == go


# ---------------------------------------------------------------- what the parent refuses


def checkpoint_header(**changes) -> dict:
    header = header_of(protocol.checkpoint_message(zeros_checkpoint(4))[0])
    return header | changes


def edited(edit) -> dict:
    """A valid checkpoint header whose tensor list is changed by `edit`."""
    return checkpoint_header(tensors=edit([list(t) for t in checkpoint_header()["tensors"]]))


@pytest.mark.parametrize(
    "header, fragment",
    [
        ({"type": "warp"}, "unknown message type 'warp'"),
        ({"type": "step", "s": 3, "loss": 1.0}, "unknown message type 'step'"),
        (checkpoint_header(slot=-1), "a checkpoint message is malformed"),
        ({"type": "error", "phase": 1, "message": "x"}, "an error message is malformed"),
        ({"type": "done", "clocks_patched": "time.time"}, "a done message is malformed"),
        (checkpoint_header(s="4"), "a checkpoint message is malformed"),
        (checkpoint_header(nbytes=1), "announces 1 bytes"),
        (
            edited(lambda t: [*t[:-1], ["v", "wpe", "float32", [16, 32]]]),
            "given twice",
        ),
        (edited(lambda t: t[1:]), "params is missing wte"),
        (edited(lambda t: [["p", *t[0][1:]], *t[1:]]), "unknown group 'p'"),
        (
            edited(lambda t: [[t[0][0], "ln_f", *t[0][2:]], *t[1:]]),
            "unexpected tensor",
        ),
        (
            edited(lambda t: [[*t[0][:2], "bfloat16", t[0][3]], *t[1:]]),
            "dtype bfloat16",
        ),
        (edited(lambda t: [[*t[0][:3], [32, 256]], *t[1:]]), "shape (32, 256)"),
        (edited(lambda t: [t[0][:3], *t[1:]]), "a malformed tensor entry"),
    ],
)
def test_a_header_that_breaks_the_protocol_is_refused_with_its_reason(header, fragment):
    with pytest.raises(protocol.ProtocolError, match=None) as refused:
        protocol.parse_message(header, SHAPES)
    assert fragment in str(refused.value)


# ---------------------------------------------------------------- the run as a whole


def all_steps() -> list[tuple[int, float]]:
    return [(s, 5.0 - 0.1 * s) for s in range(TASK.steps)]


def test_a_complete_run_breaks_nothing():
    assert protocol.check_sequence(TASK, all_steps(), TASK.checkpoint_steps()) is None


@pytest.mark.parametrize(
    "losses, checkpoints, fragment",
    [
        ([(0, 5.0), (0, 5.0)], None, "step 0 was logged twice"),
        ([(0, 5.0), (2, 5.0)], None, "step 1 was never logged (the next logged step is 2)"),
        ([(0, 5.0), (1, 5.0), (0, 5.0)], None, "step 0 was logged twice"),
        ([(0, 5.0), (1, float("nan"))], None, "the loss of step 1 is not finite"),
        ([(99, 5.0)], None, "outside the run's steps"),
        (all_steps()[:-1], None, f"step {TASK.steps - 1} was never logged"),
        (None, [4, 9, 14], "no checkpoint after step 19"),
        (None, [4, 9, 9, 14, 19], "two checkpoints after step 9"),
        (None, [4, 5, 9, 14, 19], "an unexpected checkpoint after step 5"),
        (None, [9, 4, 14, 19], "checkpoints arrived out of order"),
    ],
)
def test_a_run_that_breaks_the_protocol_says_where(losses, checkpoints, fragment):
    found = protocol.check_sequence(TASK, losses or all_steps(), checkpoints or TASK.checkpoint_steps())
    assert found is not None and fragment in found


def test_a_non_finite_checkpoint_value_is_named():
    cp = zeros_checkpoint(9)
    cp.v["h1.fc.b"][3] = np.inf
    assert protocol.first_non_finite([zeros_checkpoint(4), cp]) == (
        "checkpoint after step 9: v of h1.fc.b holds values that are not finite"
    )
    assert protocol.first_non_finite([zeros_checkpoint(4)]) is None
