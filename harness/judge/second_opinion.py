"""The audit's second opinion on a segment that exceeds a tolerance (SPEC §6): how far does float32 itself go here?

The tolerances are constants, calibrated 10x above the worst honest figure over many segments and seeds. Most
segments are well conditioned, and honest float32 stays far below them. Now and then a batch makes one step
ill-conditioned, and every float32 implementation, the honest ones included, lands further from the float64
replay there: on one seed of `standard`, an honest torch loop measured a moment-direction distance of 2.95e-5
against a tolerance of 2e-5, and the C champion 6.1e-6, in the same step, while both stayed under 7e-7 on their
other seeds (the trusted float32 replay itself: 2.63e-5 there). A constant cannot separate that from 16-bit
arithmetic with 10x on both sides: the least detectable dishonest variant is about 13x over the same tolerance.

So a segment that exceeds a tolerance is replayed once more by the same trusted implementation in float32, and
its own figures against the float64 replay measure the segment's float32 noise. The segment is then judged
against MARGIN times that noise wherever that is above the tolerance, never above CAP times the tolerance.
Honest code stays within a few times the trusted float32 replay's noise; 16-bit arithmetic is hundreds of
times over it in every conditioning, so it is still rejected, and on a well-conditioned segment nothing changes.
The submission does not set the noise: the batches are the harness's, and the state the segment starts from is
the audited checkpoint of the segment before. Only the segment-local measures are widened, never the run's
loss bias, and never the weight-decay share, which float32 noise does not reach.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.contract.checkpoint import Checkpoint
from harness.contract.spec import Task, Tolerances, group_measure
from harness.judge import figures, oracle

MARGIN = 10.0
"""A segment may sit this many times above the trusted float32 replay's own figure (SPEC §6's honest margin)."""
CAP = 10.0
"""A widened limit never exceeds this many times the calibrated tolerance."""


def float32_figures(
    task: Task,
    start: Checkpoint,
    batches: np.ndarray,
    replayed: Checkpoint,
    replayed_losses: list[float],
) -> dict[str, float]:
    """The trusted implementation's own float32 replay of the segment, measured against its float64 replay
    with the audit's figures: the segment's float32 noise, per measure."""
    losses, rep32 = oracle.replay(task, start, batches, start.step + 1, replayed.step, dtype=torch.float32)
    if not np.isfinite(losses).all():
        return {}
    fig = figures.end_state(task, start, rep32.as_float64(), replayed)
    return {
        **{f"distance_{group}": d for group, d in fig.groups.items()},
        "tensor_distance": fig.tensor_distance,
        "moments": fig.moments,
        "loss": max(abs(a - b) for a, b in zip(losses, replayed_losses, strict=True)),
    }


def _widened(tolerance: float | None, noise: float) -> float | None:
    if tolerance is None:
        return None
    return min(CAP * tolerance, max(tolerance, MARGIN * noise))


def widened(tol: Tolerances, noise: dict[str, float]) -> Tolerances:
    """The limits one segment is judged by, given its float32 noise: each measure's tolerance, or MARGIN times
    the noise where that is larger, at most CAP times the tolerance. A group tolerance widens by the largest
    noise of the groups it covers (harness.contract.spec.group_measure)."""
    groups: dict[str, float] = {}
    for key, value in noise.items():
        if key.startswith("distance_"):
            measure = group_measure(key.removeprefix("distance_"), tol.moment_group)
            groups[measure] = max(groups.get(measure, 0.0), value)
    return tol.model_copy(
        update={
            "distance": _widened(tol.distance, groups.get("distance", 0.0)),
            "moment_group": _widened(tol.moment_group, groups.get("moment_group", 0.0)),
            "moments": _widened(tol.moments, noise.get("moments", 0.0)),
            "tensor_distance": _widened(tol.tensor_distance, noise.get("tensor_distance", 0.0)),
            "loss": _widened(tol.loss, noise.get("loss", 0.0)),
        }
    )
