"""The verdict on a trial (SPEC §6): protocol checks, then every segment replayed by the float64 oracle."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness import oracle
from harness.spec import Task

DISTANCE_TOL = 3e-4
"""Normalised end-state distance allowed for a whole group: params, m or v (see docs/calibration.md)."""
TENSOR_TOL = 1e-2
"""Normalised end-state distance allowed for any single tensor."""
LOSS_TOL = 1e-3
"""Absolute deviation allowed between a logged loss and the replay's."""
GROUP_LABEL = {"params": "", "m": "m of ", "v": "v of "}


@dataclass
class SegmentAudit:
    index: int
    first_step: int
    last_step: int
    distance: float
    """Largest normalised end-state distance of a whole group (params, m or v, all tensors together)."""
    worst_group: str
    tensor_distance: float
    """Largest normalised end-state distance of a single tensor."""
    worst_tensor: str
    loss_deviation: float
    """Largest |logged loss - replayed loss| in the segment."""
    worst_step: int
    first_loss_deviation: float = 0.0
    """|logged - replayed| loss of the segment's first step, which depends only on the checkpoint it starts from."""


@dataclass
class Verdict:
    accepted: bool
    reason: str
    check: str | None = None
    """Which check failed: protocol, loss, end-state, or one of the runner's (crash, timeout, memory, ...)."""
    hint: str | None = None
    segments: list[SegmentAudit] = field(default_factory=list)


def _segment_label(k: int, first: int, last: int) -> str:
    return f"segment {k} (steps {first}-{last})"


def check_protocol(task: Task, losses: list[tuple[int, float]], checkpoints: list[tuple[int, dict]]) -> str | None:
    """The first protocol violation, or None: every step logged once in order, every checkpoint present, all finite."""
    seen: set[int] = set()
    expected_next = 0
    for s, loss in losses:
        if s in seen:
            return f"protocol: step {s} was logged twice"
        if not 0 <= s < task.steps:
            return f"protocol: step {s} is outside the run's steps 0-{task.steps - 1}"
        if s != expected_next:
            return f"protocol: step {expected_next} was never logged (the next logged step is {s})" if s > expected_next else f"protocol: step {s} was logged out of order"
        if not math.isfinite(loss):
            return f"protocol: the loss of step {s} is not finite ({loss})"
        seen.add(s)
        expected_next = s + 1
    if expected_next != task.steps:
        return f"protocol: step {expected_next} was never logged"
    due = task.checkpoint_steps()
    got = [s for s, _ in checkpoints]
    for s in got:
        if s not in due:
            return f"protocol: an unexpected checkpoint after step {s} (due after steps {_short(due)})"
    for s in due:
        if got.count(s) == 0:
            return f"protocol: no checkpoint after step {s}"
        if got.count(s) > 1:
            return f"protocol: two checkpoints after step {s}"
    if got != sorted(got):
        return "protocol: checkpoints arrived out of order"
    for s, groups in checkpoints:
        for group, tensors in groups.items():
            for name, array in tensors.items():
                if not np.isfinite(array).all():
                    return f"protocol: checkpoint after step {s}: {GROUP_LABEL[group]}{name} holds values that are not finite"
    return None


def _short(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


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


def audit_segment(
    task: Task, start: oracle.TrainState, batches: np.ndarray, first: int, last: int,
    logged: dict[int, float], end: dict[str, dict[str, np.ndarray]], index: int,
) -> SegmentAudit:
    """Replay steps first..last from `start` and measure the submission's end state and losses against it."""
    losses, replayed = oracle.replay(task, start, batches, first, last)
    worst_group, group_dist = "", -1.0
    worst_tensor, tensor_dist = "", -1.0
    for group, rep, st in (("params", replayed.params, start.params), ("m", replayed.m, start.m), ("v", replayed.v, start.v)):
        gap2 = moved2 = 0.0
        for name in rep:
            gap = float(np.linalg.norm(_compared(task, name, end[group][name] - rep[name])))
            moved = float(np.linalg.norm(rep[name] - st[name]))
            gap2, moved2 = gap2 + gap * gap, moved2 + moved * moved
            d = _ratio(gap, moved)
            if d > tensor_dist:
                tensor_dist, worst_tensor = d, GROUP_LABEL[group] + name
        d = _ratio(math.sqrt(gap2), math.sqrt(moved2))
        if d > group_dist:
            group_dist, worst_group = d, group
    deviations = [abs(logged[s] - loss) for s, loss in zip(range(first, last + 1), losses)]
    k = int(np.argmax(deviations))
    return SegmentAudit(index, first, last, group_dist, worst_group, tensor_dist, worst_tensor, float(deviations[k]), first + k,
                        float(deviations[0]))


def hint(check: str | None, segments: list[SegmentAudit], distance_tol: float, tensor_tol: float, loss_tol: float) -> str | None:
    """The likely cause of a rejection, read from the pattern of the failing segments.

    The first loss of a segment depends only on the checkpoint the segment starts from (the submission's
    own) and on its batch, so if it is off in any segment, the forward pass differs; if the losses match
    and the end state does not, the update does; if the first segment matches and a later one does not,
    something carried from step to step does.
    """
    bad = [s for s in segments if s.loss_deviation > loss_tol or s.distance > distance_tol or s.tensor_distance > tensor_tol]
    if not bad:
        return None
    first_bad = bad[0]
    off_at_start = next((s for s in segments if s.first_loss_deviation > loss_tol), None)
    if off_at_start is not None:
        cause = (f"the loss of step {off_at_start.first_step}, the first of segment {off_at_start.index}, is already off, and that "
                 "step starts from your own checkpoint: look at the forward pass (model maths, the batch it reads, the loss reduction)")
    elif check == "loss":
        cause = ("the first loss of the segment matches but later ones drift: the updates differ; "
                 "look at the gradients and the optimiser step")
    elif _failed_group(first_bad, distance_tol) in ("m", "v"):
        cause = ("the losses match but the moments m or v at the segment's end do not: "
                 "look at the optimiser's moment updates (betas, which gradient they use, clipping)")
    else:
        cause = ("the losses match but the parameters at the segment's end do not: look at the optimiser "
                 "(learning-rate schedule, weight decay and which tensors get it, clipping, bias correction)")
    if first_bad.index > 0:
        cause += ("; the first segment matched and a later one did not, which points at state carried between steps "
                  "(moments, the step count, the schedule, a stale buffer)")
    return cause


def _failed_group(seg: SegmentAudit, distance_tol: float) -> str:
    """The group (params, m or v) whose end state failed: the whole group's, else the single tensor's."""
    if seg.distance > distance_tol:
        return seg.worst_group
    return next((g for g, label in GROUP_LABEL.items() if label and seg.worst_tensor.startswith(label)), "params")


def audit_run(
    task: Task, initial_params: dict[str, np.ndarray], batches: np.ndarray,
    losses: list[tuple[int, float]], checkpoints: list[tuple[int, dict]],
    distance_tol: float = DISTANCE_TOL, tensor_tol: float = TENSOR_TOL, loss_tol: float = LOSS_TOL, on_segment=None,
) -> Verdict:
    """Accept or reject a completed trial; the reason names the check, the segment, the step and the tensor."""
    problem = check_protocol(task, losses, checkpoints)
    if problem:
        return Verdict(False, problem, "protocol")
    with oracle.single_thread():
        return _audit_segments(task, initial_params, batches, losses, checkpoints, distance_tol, tensor_tol, loss_tol, on_segment)


def _audit_segments(task, initial_params, batches, losses, checkpoints, distance_tol, tensor_tol, loss_tol, on_segment) -> Verdict:
    logged = dict(losses)
    state = oracle.TrainState.initial(initial_params)
    first = 0
    segments: list[SegmentAudit] = []
    failure: Verdict | None = None
    for k, (last, groups) in enumerate(checkpoints):
        seg = audit_segment(task, state, batches, first, last, logged, groups, k)
        segments.append(seg)
        if failure is None:
            where = _segment_label(k, first, last)
            if seg.loss_deviation > loss_tol:
                failure = Verdict(False, f"{where}: loss of step {seg.worst_step} is off by {seg.loss_deviation:.3g} > {loss_tol:g}", "loss")
            elif seg.distance > distance_tol:
                failure = Verdict(False, f"{where}: {seg.worst_group} end-state distance {seg.distance:.3g} > {distance_tol:g} (largest single gap: {seg.worst_tensor})", "end-state")
            elif seg.tensor_distance > tensor_tol:
                failure = Verdict(False, f"{where}: {seg.worst_tensor} end-state distance {seg.tensor_distance:.3g} > {tensor_tol:g}", "end-state")
        if on_segment:
            on_segment(k)
        # the next segment starts from what the submission says it had: each segment is judged locally
        state = oracle.TrainState(groups["params"], groups["m"], groups["v"])
        first = last + 1
    if failure:
        failure.segments = segments
        failure.hint = hint(failure.check, segments, distance_tol, tensor_tol, loss_tol)
        return failure
    return Verdict(True, "every segment matches the float64 replay", None, segments=segments)
