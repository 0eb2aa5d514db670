"""The likely cause of a rejection, read from the pattern of the failing segments."""

from __future__ import annotations

from harness.contract.checkpoint import GROUP_LABEL
from harness.contract.checks import Check
from harness.contract.spec import Tolerances
from harness.judge.tolerances import group_tolerance
from harness.records.schema import SegmentRecord as SegmentAudit


def hint(check: Check | None, segments: list[SegmentAudit], tol: Tolerances) -> str | None:
    """The first loss of a segment depends only on the checkpoint the segment starts from (the submission's
    own) and on its batch, so if it is off in any segment, the forward pass differs; if the losses match
    and the end state does not, the update does; if the first segment matches and a later one does not,
    something carried from step to step does.
    """
    bad = [s for s in segments if _exceeds(s, tol)]
    if not bad:
        if check == Check.LOSS and _biased(segments, tol):  # no single step beyond its tolerance
            return (
                "the logged losses are off the replay's in one direction on average: look at what is logged "
                "(the loss reduction, a constant added or a different precision of the loss)"
            )
        return None
    first_bad = bad[0]
    off_at_start = next((s for s in segments if s.first_loss_deviation > tol.loss), None)
    if off_at_start is not None:
        cause = (
            f"the loss of step {off_at_start.first_step}, the first of segment {off_at_start.index}, is already off, "
            "and that step starts from your own checkpoint: look at the forward pass (model maths, the batch it reads, "
            "the loss reduction)"
        )
    elif check == Check.LOSS:
        cause = (
            "the first loss of the segment matches but later ones drift: the updates differ; "
            "look at the gradients and the optimiser step"
        )
    elif _failed_group(first_bad, tol) in ("m", "v"):
        cause = (
            "the losses match but the moments m or v at the segment's end do not: "
            "look at the optimiser's moment updates (betas, which gradient they use, clipping)"
        )
    else:
        cause = (
            "the losses match but the parameters at the segment's end do not: look at the optimiser "
            "(learning-rate schedule, weight decay and which tensors get it, clipping, bias correction)"
        )
    if first_bad.index > 0:
        cause += (
            "; the first segment matched and a later one did not, which points at state carried between steps "
            "(moments, the step count, the schedule, a stale buffer)"
        )
    return cause


def _biased(segments: list[SegmentAudit], tol: Tolerances) -> bool:
    steps = sum(s.last_step - s.first_step + 1 for s in segments)
    bias = sum(s.loss_bias * (s.last_step - s.first_step + 1) for s in segments) / max(steps, 1)
    return tol.loss_bias is not None and abs(bias) > tol.loss_bias


def _exceeds(s: SegmentAudit, tol: Tolerances) -> bool:
    decay = tol.decay_share is not None and s.decay_share > tol.decay_share
    moments = tol.moments is not None and s.moment_distance > tol.moments
    return (
        s.loss_deviation > tol.loss
        or _group_over(s, tol) is not None
        or s.tensor_distance > tol.tensor_distance
        or decay
        or moments
    )


def _group_over(seg: SegmentAudit, tol: Tolerances) -> str | None:
    groups = seg.group_distances or {seg.worst_group: seg.distance}
    for group, d in groups.items():
        if d > group_tolerance(group, tol):
            return group
    return None


def _failed_group(seg: SegmentAudit, tol: Tolerances) -> str:
    """The group (params, m or v) whose end state failed: the whole group's, else the moments', else the single
    tensor's."""
    group = _group_over(seg, tol)
    if group:
        return group
    if tol.moments is not None and seg.moment_distance > tol.moments:
        return "m"
    return next((g for g, label in GROUP_LABEL.items() if label and seg.worst_tensor.startswith(label)), "params")
