"""The verdict on a completed run (SPEC §6): protocol checks, then every segment replayed by the float64 oracle."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.contract import protocol
from harness.contract.checkpoint import GROUP_LABEL, Arrays, Checkpoint
from harness.contract.checks import Check, Failure
from harness.contract.spec import Task, Tolerances
from harness.judge import oracle
from harness.judge.hints import hint
from harness.judge.tolerances import DEFAULT
from harness.records.schema import SegmentRecord

SegmentAudit = SegmentRecord
"""The audit of one segment is what the record stores of it."""


def segment_label(seg: SegmentAudit) -> str:
    return f"segment {seg.index} (steps {seg.first_step}-{seg.last_step})"


def segment_failure(seg: SegmentAudit, tol: Tolerances) -> Failure | None:
    """The first tolerance a segment exceeds, as a failure naming the step or tensor; None if within all."""
    where = segment_label(seg)
    if seg.loss_deviation > tol.loss:
        return Failure(
            Check.LOSS, f"{where}: loss of step {seg.worst_step} is off by {seg.loss_deviation:.3g} > {tol.loss:g}"
        )
    if seg.distance > tol.distance:
        return Failure(
            Check.END_STATE,
            f"{where}: {seg.worst_group} end-state distance {seg.distance:.3g} > {tol.distance:g} "
            f"(largest single gap: {seg.worst_tensor})",
        )
    if seg.tensor_distance > tol.tensor_distance:
        return Failure(
            Check.END_STATE,
            f"{where}: {seg.worst_tensor} end-state distance {seg.tensor_distance:.3g} > {tol.tensor_distance:g}",
        )
    return None


@dataclass
class Verdict:
    failure: Failure | None
    hint: str | None = None
    segments: list[SegmentAudit] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.failure is None

    @property
    def reason(self) -> str:
        return self.failure.reason if self.failure else "every segment matches the float64 replay"


def _ratio(gap: float, moved: float) -> float:
    """Distance from the replay relative to how far the replay moved; a tensor that did not move must match exactly."""
    if moved == 0.0:
        return 0.0 if gap == 0.0 else math.inf
    return gap / moved


def _compared(task: Task, name: str, diff: np.ndarray) -> np.ndarray:
    """The part of a tensor's difference that the audit compares.

    The key third of each attention bias (attn.b[C:2C]) adds the same q.b_k to every score of a softmax
    row, so it never changes the function: its exact gradient is zero, and in any finite precision
    Adam's normalised update there is driven by rounding alone. An honest float32 run moves it by
    noise while the float64 replay does not, and nothing a submission could gain hides there. It is
    left out of the distance (but still checked to be finite).
    """
    if name.endswith("attn.b"):
        C = task.d_model
        diff = diff.copy()
        diff[C : 2 * C] = 0.0
    return diff


def _end_state(task: Task, start: Checkpoint, end: Checkpoint, replayed: Checkpoint) -> tuple[float, str, float, str]:
    """The worst group distance and its group, the worst single-tensor distance and its tensor."""
    worst_group, group_dist = "", -1.0
    worst_tensor, tensor_dist = "", -1.0
    for group, rep in replayed.groups().items():
        st, got = start.groups()[group], end.groups()[group]
        gap2 = moved2 = 0.0
        for name in rep:
            gap = float(np.linalg.norm(_compared(task, name, got[name] - rep[name])))
            moved = float(np.linalg.norm(rep[name] - st[name]))
            gap2, moved2 = gap2 + gap * gap, moved2 + moved * moved
            d = _ratio(gap, moved)
            if d > tensor_dist:
                tensor_dist, worst_tensor = d, GROUP_LABEL[group] + name
        d = _ratio(math.sqrt(gap2), math.sqrt(moved2))
        if d > group_dist:
            group_dist, worst_group = d, group
    return group_dist, worst_group, tensor_dist, worst_tensor


def audit_segment(
    task: Task,
    start: Checkpoint,
    batches: np.ndarray,
    first: int,
    last: int,
    logged: dict[int, float],
    end: Checkpoint,
    index: int,
) -> SegmentAudit:
    """Replay steps first..last from `start` and measure the submission's end state and losses against it."""
    losses, replayed = oracle.replay(task, start, batches, first, last)
    group_dist, worst_group, tensor_dist, worst_tensor = _end_state(task, start, end, replayed)
    deviations = [abs(logged[s] - loss) for s, loss in zip(range(first, last + 1), losses, strict=True)]
    k = int(np.argmax(deviations))
    return SegmentAudit(
        index=index,
        first_step=first,
        last_step=last,
        distance=group_dist,
        worst_group=worst_group,
        tensor_distance=tensor_dist,
        worst_tensor=worst_tensor,
        loss_deviation=float(deviations[k]),
        worst_step=first + k,
        first_loss_deviation=float(deviations[0]),
    )


def audit_run(
    task: Task,
    initial_params: Arrays,
    batches: np.ndarray,
    losses: list[tuple[int, float]],
    checkpoints: list[Checkpoint],
    tolerances: Tolerances = DEFAULT,
    on_segment: Callable[[int], None] | None = None,
) -> Verdict:
    """Accept or reject a completed run; the reason names the check, the segment, the step and the tensor.

    `checkpoints` may hold float32 arrays as the submission sent them: they are compared in float64.
    """
    problem = protocol.check_sequence(task, losses, [cp.step for cp in checkpoints]) or protocol.first_non_finite(
        checkpoints
    )
    if problem:
        return Verdict(Failure(Check.PROTOCOL, problem))
    with oracle.single_thread():
        return _audit_segments(task, initial_params, batches, losses, checkpoints, tolerances, on_segment)


def _audit_segments(
    task: Task,
    initial_params: Arrays,
    batches: np.ndarray,
    losses: list[tuple[int, float]],
    checkpoints: list[Checkpoint],
    tol: Tolerances,
    on_segment: Callable[[int], None] | None,
) -> Verdict:
    logged = dict(losses)
    state = Checkpoint.initial(initial_params)
    segments: list[SegmentAudit] = []
    failure: Failure | None = None
    for k, sent in enumerate(checkpoints):
        end = sent.as_float64()
        seg = audit_segment(task, state, batches, state.step + 1, end.step, logged, end, k)
        segments.append(seg)
        failure = failure or segment_failure(seg, tol)
        if on_segment:
            on_segment(k)
        state = end  # the next segment starts from what the submission says it had: each segment is judged locally
    if failure:
        return Verdict(failure, hint(failure.check, segments, tol), segments)
    return Verdict(None, None, segments)
