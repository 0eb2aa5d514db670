"""What the audit compares (SPEC §6): the end-state figures of a segment, and what it leaves out of them.

Invariance: no figure may be scaled by anything the submission sets freely. Every figure is a gap between the
submission's end state and the float64 replay's, divided by a scale the submission cannot inflate: the
replay's own movement of the same elements (the elements the gap leaves out are left out of the movement
too, and reset to the replay's own values before the next segment is replayed, so a checkpoint cannot buy
movement with them), or the weight decay the spec's schedule implies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.contract.checkpoint import GROUP_LABEL, Arrays, Checkpoint
from harness.contract.spec import Task, param_shapes
from harness.judge.oracle import lr_at
from harness.judge.state import moment_bound


def uncompared(task: Task, name: str) -> slice | None:
    """The elements of a tensor the audit never compares, in any group (params, m, v), or None.

    The key third of each attention bias (attn.b[C:2C]) adds the same q.b_k to every score of a softmax
    row, so it never changes the function: its exact gradient is zero, and in any finite precision
    Adam's normalised update there is driven by rounding alone. An honest float32 run moves it by
    noise while the float64 replay does not, and nothing a submission could gain hides there, once the
    audit leaves it out of both the gap and the movement and restarts every segment from the replay's
    own values of it.
    """
    if name.endswith("attn.b"):
        return slice(task.d_model, 2 * task.d_model)
    return None


CONDITION_FLOOR = 1e-3
"""A parameter whose replayed gradient scale sqrt(v) is nonzero but below this share of its tensor's RMS one
is left out of the parameter figures of that segment (see compared_elements)."""


Masks = dict[str, dict[str, "np.ndarray | None"]]
"""Per group and tensor, the elements a segment's figures compare (a boolean array), or None for all."""


def compared_elements(task: Task, replayed: Checkpoint) -> Masks:
    """The elements each of a segment's figures compares, chosen from the task and the replay alone.

    Every group leaves out the uncompared part (see uncompared). The parameters also leave out the
    ill-conditioned elements: those whose gradients were nearly but not exactly zero (sqrt of the replay's v
    below CONDITION_FLOOR of the tensor's RMS). There AdamW divides a gradient at rounding level by its own
    magnitude, m / (sqrt(v) + eps), so an update of up to the learning rate is decided by rounding: an
    honest float32 gradient off by 1e-9 moved one such weight by 1.4% of the learning rate, which was
    1% of its tensor's weight decay. Their m and v, linear and quadratic in the gradient, are compared as
    everywhere else; nothing in the mask is the submission's to set (the replay's v follows from the
    checkpoint before, itself compared).
    """
    masks: Masks = {}
    for group, arrays in replayed.groups().items():
        masks[group] = {}
        for name, a in arrays.items():
            keep: np.ndarray | None = None
            part = uncompared(task, name)
            if part is not None:
                keep = np.ones(a.shape, dtype=bool)
                keep[part] = False
            if group == "params":
                keep = _well_conditioned(replayed.v[name], keep)
            masks[group][name] = keep
    return masks


def _well_conditioned(v: np.ndarray, keep: np.ndarray | None) -> np.ndarray | None:
    v_kept = v if keep is None else v[keep]
    if v_kept.size == 0:
        return keep
    rms = math.sqrt(float(v_kept.mean()))
    good: np.ndarray = ~((v > 0.0) & (np.sqrt(v) < CONDITION_FLOOR * rms))
    if good.all():
        return keep
    return good if keep is None else keep & good


def compared(mask: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    """`a` with the elements `mask` leaves out set to zero (a copy where any are)."""
    if mask is None:
        return a
    return np.where(mask, a, 0.0)


def restart(task: Task, start: Checkpoint, sent: Checkpoint, replayed: Checkpoint) -> Checkpoint:
    """The state the next segment is replayed from: the submission's checkpoint `sent`, with the uncompared
    elements (in params, m and v) replaced by the replay's own values, and each ill-conditioned parameter
    the segment's figures left out kept within what AdamW could have moved it (update_room) of the replay's.

    The ill-conditioned parameters stay the submission's own: the next segment's replay goes on from where
    the submission's training went, so rounding decided once is not counted again as a gap.
    """
    masks = compared_elements(task, replayed)
    room = update_room(task, start.step + 1, replayed.step)
    groups: dict[str, Arrays] = {}
    for group, arrays in sent.groups().items():
        own = replayed.groups()[group]
        fixed: Arrays = {}
        for name, a in arrays.items():
            part = uncompared(task, name)
            if part is not None:
                a = a.copy()
                a[part] = own[name][part]
            mask = masks[group][name]
            if group == "params" and mask is not None:
                near = np.clip(
                    a, own[name] - room * (1.0 + np.abs(own[name])), own[name] + room * (1.0 + np.abs(own[name]))
                )
                a = np.where(mask, a, near)
            fixed[name] = a
        groups[group] = fixed
    return Checkpoint.of(sent.step, groups)


def update_room(task: Task, first: int, last: int) -> float:
    """How far apart two AdamW runs of steps first..last can move one parameter p, per unit of (1 + |p|):
    twice the sum over the steps of lr x (the largest |m_hat / sqrt(v_hat)| the moment bound allows + weight
    decay)."""
    total = 0.0
    for s in range(first, last + 1):
        t = s + 1
        c1, c2 = 1.0 - task.beta1**t, 1.0 - task.beta2**t
        total += lr_at(task, t) * (moment_bound(task, t) * math.sqrt(c2) / c1 + task.weight_decay)
    return 2.0 * total


def _norm(a: np.ndarray) -> float:
    """The 2-norm, in plain numpy: never through BLAS, whose thread pool spins on a busy machine (the audit
    runs on one thread)."""
    flat = a.reshape(-1)
    return math.sqrt(float(np.einsum("i,i->", flat, flat)))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.einsum("i,i->", a.reshape(-1), b.reshape(-1)))


def ratio(gap: float, moved: float) -> float:
    """Distance from the replay relative to how far the replay moved; a tensor that did not move must match exactly."""
    if moved == 0.0:
        return 0.0 if gap == 0.0 else math.inf
    return gap / moved


@dataclass(frozen=True)
class EndState:
    """A segment's end-state figures: the worst group, the worst single tensor, the worst decay share."""

    distance: float
    worst_group: str
    tensor_distance: float
    worst_tensor: str
    decay_share: float
    worst_decay_tensor: str
    groups: dict[str, float]
    """Every group's distance."""
    moments: float
    """The moment-direction distance (see moment_direction)."""


def tensor_figures(
    task: Task, start: Checkpoint, end: Checkpoint, replayed: Checkpoint, masks: Masks | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per group and tensor: the gap between the submission's and the replay's end state, and how far the
    replay moved the tensor, both over the compared elements only."""
    masks = masks or compared_elements(task, replayed)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for group, rep in replayed.groups().items():
        st, got = start.groups()[group], end.groups()[group]
        out[group] = {
            name: (
                _norm(compared(masks[group][name], got[name] - rep[name])),
                _norm(compared(masks[group][name], rep[name] - st[name])),
            )
            for name in rep
        }
    return out


def end_state(task: Task, start: Checkpoint, end: Checkpoint, replayed: Checkpoint) -> EndState:
    """The figures of SPEC §6 for one segment, from the state it was replayed from, the submission's end state
    and the replay's."""
    worst_group, group_dist = "", -1.0
    worst_tensor, tensor_dist = "", -1.0
    groups: dict[str, float] = {}
    masks = compared_elements(task, replayed)
    for group, tensors in tensor_figures(task, start, end, replayed, masks).items():
        for name, (gap, moved) in tensors.items():
            d = ratio(gap, moved)
            if d > tensor_dist:
                tensor_dist, worst_tensor = d, GROUP_LABEL[group] + name
        gap2 = sum(gap * gap for gap, _ in tensors.values())
        moved2 = sum(moved * moved for _, moved in tensors.values())
        d = groups[group] = ratio(math.sqrt(gap2), math.sqrt(moved2))
        if d > group_dist:
            group_dist, worst_group = d, group
    share, worst_decay = decay_share(task, start, end, replayed, masks)
    moments = moment_direction(task, start, end, replayed, masks)
    return EndState(group_dist, worst_group, tensor_dist, worst_tensor, share, worst_decay, groups, moments)


def gradient_scale(
    task: Task, start: Checkpoint, end: Checkpoint, replayed: Checkpoint, masks: Masks | None = None
) -> float:
    """The common scale c of the segment's gradients that best maps the replay's new first moment onto the
    submission's: m - beta1^n m_start = c (m_rep - beta1^n m_start) in the least-squares sense (1 if the replay
    added nothing). A float32 gradient norm makes c differ from 1 by rounding; the m and v distances bound it."""
    keep = task.beta1 ** (end.step - start.step)
    m_masks = (masks or compared_elements(task, replayed))["m"]
    num = den = 0.0
    for name, m_rep in replayed.m.items():
        new_rep = compared(m_masks[name], m_rep - keep * start.m[name])
        new_got = compared(m_masks[name], end.m[name] - keep * start.m[name])
        num += _dot(new_got, new_rep)
        den += _dot(new_rep, new_rep)
    return num / den if den > 0.0 else 1.0


def moment_direction(
    task: Task, start: Checkpoint, end: Checkpoint, replayed: Checkpoint, masks: Masks | None = None
) -> float:
    """How far the submission's moments point from the replay's, in gradient units, relative to how far the
    replay moved m: |sqrt(v_rep) (m/sqrt(v) - m_rep/sqrt(v_rep))| / |m_rep - m_start| over every compared element,
    with the replay's new gradients scaled by the submission's common gradient scale (gradient_scale).

    AdamW steps along m/sqrt(v). An inaccurate but honest gradient norm (a float32 dot product over every
    element) scales each clipped gradient by a common factor, which this figure does not see; 16-bit arithmetic
    anywhere in the gradient scatters it element by element, which it does. Weighting by sqrt(v_rep) counts
    each element in the units of its own gradient, so the elements whose tiny v makes m/sqrt(v) pure rounding
    weigh what their gradients do.
    """
    n = end.step - start.step
    masks = masks or compared_elements(task, replayed)
    c = gradient_scale(task, start, end, replayed, masks)
    keep_m, keep_v = task.beta1**n, task.beta2**n
    m_masks = masks["m"]
    gap2 = moved2 = 0.0
    for name, m_rep in replayed.m.items():
        m0, v0 = start.m[name], start.v[name]
        m_fit = keep_m * m0 + c * (m_rep - keep_m * m0)
        v_fit = np.maximum(keep_v * v0 + c * c * (replayed.v[name] - keep_v * v0), 0.0)
        m_got, v_got = end.m[name], end.v[name]
        root = np.sqrt(v_fit)
        with np.errstate(divide="ignore", invalid="ignore"):
            r_got = np.where(v_got > 0, m_got / np.sqrt(v_got), 0.0)
            r_fit = np.where(v_fit > 0, m_fit / root, 0.0)
        gap2 += _norm(compared(m_masks[name], root * (r_got - r_fit))) ** 2
        moved2 += _norm(compared(m_masks[name], m_rep - m0)) ** 2
    return ratio(math.sqrt(gap2), math.sqrt(moved2))


def decay_share(
    task: Task, start: Checkpoint, end: Checkpoint, replayed: Checkpoint, masks: Masks | None = None
) -> tuple[float, str]:
    """The largest share of the segment's weight decay that a decayed tensor misses or gains, and its name.

    Over a segment of steps first..last the decay moves tensor p by about -D p, D = weight_decay x the sum of
    the steps' learning rates (fixed by the task, not by the submission). A tensor that skipped its decay ends
    about D p away from the replay, along p: the share is the gap projected on p, over D |p|^2 (1 for a
    tensor with no decay, 0 for an exact one), over the compared elements. Float32 noise has almost no
    component along p, once the ill-conditioned elements are left out (see compared_elements).
    """
    first, last = start.step + 1, end.step
    D = task.weight_decay * sum(lr_at(task, s + 1) for s in range(first, last + 1))
    worst, name_of = 0.0, ""
    if D == 0.0:
        return worst, name_of
    p_masks = (masks or compared_elements(task, replayed))["params"]
    for name, shape in param_shapes(task).items():
        if len(shape) != 2:
            continue
        p = compared(p_masks[name], start.params[name])
        scale = D * _dot(p, p)
        if scale == 0.0:
            continue
        share = abs(_dot(end.params[name] - replayed.params[name], p)) / scale
        if share > worst:
            worst, name_of = share, name
    return worst, name_of
