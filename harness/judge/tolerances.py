"""The audit's tolerances and why they have their values (docs/calibration.md has the measurements).

Each workload may set its own in its TOML file (a `[tolerances]` table, SPEC §6: calibrated per workload and
per measure); a workload without one is audited with DEFAULT.
"""

from __future__ import annotations

from harness.contract.spec import Tolerances, Workload, group_measure

DISTANCE_TOL = 2e-4
"""Normalised end-state distance allowed for the params group (see docs/calibration.md)."""
MOMENT_GROUP_TOL = 1e-2
"""Normalised end-state distance allowed for the m group and the v group: their scale, loosely."""
MOMENTS_TOL = 3e-5
"""Moment-direction distance allowed: m/sqrt(v) against the replay's, in gradient units."""
TENSOR_TOL = 1e-2
"""Normalised end-state distance allowed for any single tensor of any group."""
DECAY_SHARE_TOL = 2e-3
"""Share of a segment's weight decay that any decayed tensor may miss (or gain)."""
LOSS_TOL = 1e-4
"""Absolute deviation allowed between a logged loss and the replay's."""
LOSS_BIAS_TOL = 5e-6
"""Mean signed deviation allowed between the logged losses and the replay's, over the whole run."""

DEFAULT = Tolerances(
    distance=DISTANCE_TOL,
    moment_group=MOMENT_GROUP_TOL,
    moments=MOMENTS_TOL,
    tensor_distance=TENSOR_TOL,
    decay_share=DECAY_SHARE_TOL,
    loss=LOSS_TOL,
    loss_bias=LOSS_BIAS_TOL,
)


def for_workload(workload: Workload) -> Tolerances:
    """The tolerances a run of `workload` is audited with: its own table's, else DEFAULT."""
    return workload.tolerances or DEFAULT


def group_tolerance(group: str, tol: Tolerances) -> float:
    """The tolerance of a whole group's distance (harness.contract.spec.group_measure)."""
    limit = getattr(tol, group_measure(group, tol.moment_group))
    assert isinstance(limit, float)
    return limit
