"""A rejection's hint points at the likely cause: the forward pass, the optimiser, or state carried between steps."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from harness.contract.checks import Check
from harness.contract.log import MemoryLog
from harness.judge import audit
from harness.judge.audit import SegmentAudit
from harness.judge.hints import hint
from harness.judge.tolerances import DEFAULT
from tests.helpers import ATTACKS, tiny_run_inputs

FORWARD, OPTIMISER, MOMENTS, CARRIED = (
    "look at the forward pass",
    "look at the optimiser",
    "moments m or v",
    "state carried between steps",
)


def segment(
    index: int,
    first_loss: float = 0.0,
    loss: float = 0.0,
    distance: float = 0.0,
    group: str = "params",
    tensor: float = 0.0,
    tensor_name: str = "wte",
) -> SegmentAudit:
    """A segment's audit with the given deviations; the defaults are a perfect match."""
    first = 5 * index
    return SegmentAudit(
        index=index,
        first_step=first,
        last_step=first + 4,
        distance=distance,
        worst_group=group,
        tensor_distance=tensor,
        worst_tensor=tensor_name,
        loss_deviation=max(loss, first_loss),
        worst_step=first,
        first_loss_deviation=first_loss,
    )


def hint_of(check: str, *segments: SegmentAudit) -> str | None:
    return hint(Check(check), list(segments), DEFAULT)


# ---------------------------------------------------------------- the patterns, one by one


def test_no_failing_segment_no_hint():
    assert hint_of("loss", segment(0), segment(1)) is None


def test_a_first_loss_already_off_points_at_the_forward_pass():
    hint = hint_of("loss", segment(0, first_loss=0.05), segment(1))
    assert FORWARD in hint and "step 0, the first of segment 0" in hint and CARRIED not in hint


def test_a_first_loss_off_in_a_later_segment_still_points_at_the_forward_pass():
    # segment 0 fails first on a later loss, but segment 2's very first loss (from the submission's checkpoint) is off
    hint = hint_of("loss", segment(0, loss=0.05), segment(1, loss=0.05), segment(2, first_loss=0.05))
    assert FORWARD in hint and "step 10, the first of segment 2" in hint


def test_losses_that_drift_within_a_segment_point_at_the_update():
    hint = hint_of("loss", segment(0, loss=0.05), segment(1, loss=0.05))
    assert "the updates differ" in hint and "optimiser step" in hint and FORWARD not in hint


def test_an_end_state_off_while_the_losses_match_points_at_the_optimiser():
    hint = hint_of("end-state", segment(0, distance=0.01), segment(1, distance=0.01))
    assert "the losses match but the parameters" in hint and OPTIMISER in hint and FORWARD not in hint


def test_moments_off_point_at_the_moment_updates():
    assert MOMENTS in hint_of("end-state", segment(0, distance=0.05, group="v"))
    assert MOMENTS in hint_of("end-state", segment(0, tensor=0.5, tensor_name="m of h0.fc.w"))


def test_the_failing_group_decides_not_the_largest_single_tensor():
    # the params group fails as a whole; that a v tensor has the largest single gap does not make it a moment problem
    hint = hint_of("end-state", segment(0, distance=0.01, group="params", tensor=0.005, tensor_name="v of wte"))
    assert "parameters" in hint and MOMENTS not in hint


def test_a_first_segment_fine_and_later_ones_off_points_at_carried_state():
    hint = hint_of("end-state", segment(0), segment(1, distance=0.01), segment(2, distance=0.01))
    assert CARRIED in hint and OPTIMISER in hint


def test_a_failure_from_the_first_segment_on_is_not_about_carried_state():
    assert CARRIED not in hint_of("end-state", segment(0, distance=0.01), segment(1, distance=0.01))


# ---------------------------------------------------------------- real runs of the attack catalogue, audited in-process


@pytest.fixture
def attack_verdict():
    """An attack's train run in this process on tiny, audited as the harness does (no worker: a quick verdict)."""
    threads = torch.get_num_threads()

    def verdict(name: str, seed: int) -> audit.Verdict:
        spec = importlib.util.spec_from_file_location(f"attack_{name}", ATTACKS / name / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        task, params, batches = tiny_run_inputs(seed)
        log = MemoryLog()
        module.train(task, params, batches, log)
        return audit.audit_run(task, params, batches, log.losses, log.checkpoints)

    yield verdict
    torch.set_num_threads(threads)  # the attacks set their own thread count


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_on_half_of_each_batch_is_traced_to_the_forward_pass(attack_verdict, seed):
    verdict = attack_verdict("half_batches", seed)
    assert not verdict.accepted and FORWARD in verdict.hint, verdict.hint


def test_dropping_weight_decay_is_traced_to_the_optimiser(attack_verdict):
    verdict = attack_verdict("no_weight_decay", 0)
    assert (
        verdict.failure is not None
        and verdict.failure.check == Check.END_STATE
        and OPTIMISER in verdict.hint
        and "weight decay" in verdict.hint
    ), verdict.hint
    assert FORWARD not in verdict.hint


def test_training_only_the_first_segment_is_traced_to_carried_state(attack_verdict):
    verdict = attack_verdict("first_segment_only", 0)
    assert "segment 1" in verdict.reason and CARRIED in verdict.hint, verdict.hint
