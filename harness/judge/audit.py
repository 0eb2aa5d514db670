"""The verdict on a completed run (SPEC §6): protocol checks, then every segment replayed by the float64 oracle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.contract import protocol
from harness.contract.checkpoint import Arrays, Checkpoint
from harness.contract.checks import Check, Failure
from harness.contract.spec import Task, Tolerances
from harness.judge import figures, oracle, second_opinion
from harness.judge.hints import hint
from harness.judge.state import state_problem
from harness.judge.tolerances import DEFAULT, group_tolerance
from harness.records.schema import SegmentRecord

SegmentAudit = SegmentRecord
"""The audit of one segment is what the record stores of it."""


class NonFiniteReplay(ValueError):
    """The float64 replay from a checkpoint overflowed: the checkpoint is no state to train on from."""


def segment_label(seg: SegmentAudit) -> str:
    return f"segment {seg.index} (steps {seg.first_step}-{seg.last_step})"


def _group_failure(seg: SegmentAudit, tol: Tolerances) -> Failure | None:
    groups = seg.group_distances or {seg.worst_group: seg.distance}
    for group, d in groups.items():
        limit = group_tolerance(group, tol)
        if d > limit:
            return Failure(
                Check.END_STATE,
                f"{segment_label(seg)}: {group} end-state distance {d:.3g} > {limit:g} "
                f"(largest single gap: {seg.worst_tensor})",
            )
    return None


def segment_failure(seg: SegmentAudit, tol: Tolerances) -> Failure | None:
    """The first tolerance a segment exceeds, as a failure naming the step or tensor; None if within all.

    The end state first: a run that trains differently shows in its losses too, but its end state says where."""
    where = segment_label(seg)
    group = _group_failure(seg, tol)
    if group:
        return group
    if tol.moments is not None and seg.moment_distance > tol.moments:
        return Failure(
            Check.END_STATE,
            f"{where}: the moments point elsewhere: m/sqrt(v) distance {seg.moment_distance:.3g} > {tol.moments:g}",
        )
    if seg.tensor_distance > tol.tensor_distance:
        return Failure(
            Check.END_STATE,
            f"{where}: {seg.worst_tensor} end-state distance {seg.tensor_distance:.3g} > {tol.tensor_distance:g}",
        )
    if tol.decay_share is not None and seg.decay_share > tol.decay_share:
        return Failure(
            Check.END_STATE,
            f"{where}: {seg.worst_decay_tensor} misses or gains {seg.decay_share:.3g} of its weight decay "
            f"> {tol.decay_share:g}",
        )
    if seg.loss_deviation > tol.loss:
        return Failure(
            Check.LOSS, f"{where}: loss of step {seg.worst_step} is off by {seg.loss_deviation:.3g} > {tol.loss:g}"
        )
    return None


def _second_failure(seg: SegmentAudit, tol: Tolerances) -> Failure | None:
    """The segment judged against the limits its float32 noise allows (harness.judge.second_opinion)."""
    limits = second_opinion.widened(tol, seg.float32_noise)
    seg.limits = {k: v for k, v in limits.model_dump().items() if v is not None}
    failure = segment_failure(seg, limits)
    if failure is None:
        return None
    before = tol.model_dump()
    wider = {k: v for k, v in seg.limits.items() if v != before[k]}
    if not wider:
        return failure  # the segment's float32 noise is far below every tolerance: a plain rejection
    allowed = ", ".join(f"{k} {v:.3g}" for k, v in sorted(wider.items()))
    return Failure(
        failure.check,
        f"{failure.reason}, after this segment's own float32 noise (the trusted float32 replay's) had widened "
        f"the limits to {allowed}",
    )


def run_loss_bias(segments: list[SegmentAudit]) -> float:
    """Mean signed deviation of every logged loss from the replay's, over all the audited steps."""
    steps = sum(s.last_step - s.first_step + 1 for s in segments)
    return sum(s.loss_bias * (s.last_step - s.first_step + 1) for s in segments) / steps if steps else 0.0


def run_failure(segments: list[SegmentAudit], tol: Tolerances) -> Failure | None:
    """What no single segment shows: a bias of the logged losses too small for any one step's tolerance."""
    bias = run_loss_bias(segments)
    if tol.loss_bias is not None and abs(bias) > tol.loss_bias:
        steps = sum(s.last_step - s.first_step + 1 for s in segments)
        return Failure(
            Check.LOSS,
            f"the logged losses are biased: over all {steps} steps they differ from the replay's by "
            f"{bias:+.3g} on average, beyond {tol.loss_bias:g}",
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


def audit_segment(
    task: Task,
    start: Checkpoint,
    batches: np.ndarray,
    first: int,
    last: int,
    logged: dict[int, float],
    end: Checkpoint,
    index: int,
) -> tuple[SegmentAudit, Checkpoint, list[float]]:
    """Replay steps first..last from `start` and measure the submission's end state and losses against it;
    the segment's figures, the replay's end state and its losses. Raises NonFiniteReplay if the replay is not
    finite."""
    losses, replayed = oracle.replay(task, start, batches, first, last)
    if not (
        np.isfinite(losses).all() and all(np.isfinite(a).all() for g in replayed.groups().values() for a in g.values())
    ):
        raise NonFiniteReplay(
            f"the float64 replay of steps {first}-{last} from the checkpoint after step {start.step} "
            "is not finite: that checkpoint is no state training can continue from"
        )
    fig = figures.end_state(task, start, end, replayed)
    signed = [logged[s] - loss for s, loss in zip(range(first, last + 1), losses, strict=True)]
    deviations = [abs(d) for d in signed]
    k = int(np.argmax(deviations))
    seg = SegmentAudit(
        index=index,
        first_step=first,
        last_step=last,
        distance=fig.distance,
        worst_group=fig.worst_group,
        tensor_distance=fig.tensor_distance,
        worst_tensor=fig.worst_tensor,
        loss_deviation=float(deviations[k]),
        worst_step=first + k,
        first_loss_deviation=float(deviations[0]),
        loss_bias=float(np.mean(signed)),
        decay_share=fig.decay_share,
        worst_decay_tensor=fig.worst_decay_tensor,
        group_distances=fig.groups,
        moment_distance=fig.moments,
    )
    return seg, replayed, losses


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
        try:
            seg, replayed, replay_losses = audit_segment(task, state, batches, state.step + 1, end.step, logged, end, k)
        except NonFiniteReplay as err:
            failure = failure or Failure(Check.PROTOCOL, str(err))
            break
        segments.append(seg)
        if failure is None and segment_failure(seg, tol):
            # a second opinion while the verdict is open: the limits it sets are never tighter than the tolerances
            seg.float32_noise = second_opinion.float32_figures(task, state, batches, replayed, replay_losses)
            failure = _second_failure(seg, tol)
        if on_segment:
            on_segment(k)
        # the next segment starts from what the submission says it had (each segment is judged locally), with
        # what the audit never compares put back to the replay's own values and the ill-conditioned parameters
        # kept within AdamW's reach of the replay's; never from a state AdamW cannot have reached
        state = figures.restart(task, state, end, replayed)
        problem = state_problem(task, state)
        if problem:
            failure = failure or Failure(Check.PROTOCOL, problem)
            break
    failure = failure or run_failure(segments, tol)
    if failure:
        return Verdict(failure, hint(failure.check, segments, tol), segments)
    return Verdict(None, None, segments)
