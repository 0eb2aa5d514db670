"""The audit's tolerances and why they have their values (docs/calibration.md has the measurements)."""

from __future__ import annotations

from harness.contract.spec import Tolerances

DISTANCE_TOL = 3e-4
"""Normalised end-state distance allowed for a whole group: params, m or v (see docs/calibration.md)."""
TENSOR_TOL = 1e-2
"""Normalised end-state distance allowed for any single tensor."""
LOSS_TOL = 1e-3
"""Absolute deviation allowed between a logged loss and the replay's."""

DEFAULT = Tolerances(distance=DISTANCE_TOL, tensor_distance=TENSOR_TOL, loss=LOSS_TOL)
