"""Whether a checkpoint is a state AdamW can have reached (SPEC §3): a segment is replayed only from one.

Adam's moments are tied: m and v are averages of the same gradients, so v >= 0 and, by Cauchy-Schwarz,
|m_t| <= K_t sqrt(v_t) element by element after t updates, with
K_t = (1 - beta1) / sqrt(1 - beta2) * sqrt(sum_{k<t} (beta1^2 / beta2)^k).
A checkpoint outside those bounds (a large m over a small v buys the replay an update as large as the
submission likes) is rejected before it is replayed.
"""

from __future__ import annotations

import math

import numpy as np

from harness.contract.checkpoint import GROUP_LABEL, Checkpoint
from harness.contract.spec import Task

RELATIVE_SLACK = 1e-3
"""Rounding room on the bound: float32 moments are each rounded, and the bound may be nearly attained."""
ABSOLUTE_SLACK = 1e-3
"""Room in units of the task's eps: an m that small moves a parameter by at most ~1e-2 lr per step however
small v is (honest float32 squares of tiny gradients underflow to 0 while the gradient itself does not)."""


def moment_bound(task: Task, t: int) -> float:
    """K_t: the largest |m| / sqrt(v) AdamW's moments can reach after t updates."""
    r = task.beta1**2 / task.beta2
    total = float(t) if r == 1.0 else (1.0 - r**t) / (1.0 - r)
    return (1.0 - task.beta1) / math.sqrt(1.0 - task.beta2) * math.sqrt(total)


def state_problem(task: Task, cp: Checkpoint) -> str | None:
    """Why `cp` cannot be an AdamW state after step cp.step, naming the tensor and element; None if it can be."""
    t = cp.step + 1
    bound = moment_bound(task, t) * (1.0 + RELATIVE_SLACK)
    room = ABSOLUTE_SLACK * task.eps
    where = f"the checkpoint after step {cp.step}"
    for name, v in cp.v.items():
        if (v < 0).any():
            i = int(np.argmin(v))
            return f"{where}: {GROUP_LABEL['v']}{name} has a negative element ({float(v.flat[i]):.3g} at {i})"
        m = cp.m[name]
        excess = np.abs(m) - (bound * np.sqrt(v) + room)
        if (excess > 0).any():
            i = int(np.argmax(excess))
            return (
                f"{where}: {GROUP_LABEL['m']}{name} is {float(m.flat[i]):.3g} at element {i} with v "
                f"{float(v.flat[i]):.3g}, beyond what AdamW's moments allow after {t} updates "
                f"(|m| <= {moment_bound(task, t):.3g} sqrt(v))"
            )
    return None
