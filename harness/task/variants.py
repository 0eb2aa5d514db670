"""Variant workloads of one model family: other T, C, B, L, H around a headline, drawn from a seed (SPEC §9).

A variant keeps everything of its headline but the five sizes (the optimiser, the steps, the audit interval
and the budget stay), and every one of the five differs from the headline's, so that a submission which
special-cases the headline's sizes meets none of them. The sizes are kept where both the naive reference's
time and the run's arithmetic stay within a factor of two of the headline's: the variant's speedup then
compares with the headline's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from harness.contract.spec import Task, Workload
from harness.scoring.flops import run_flops

COST_RANGE = (0.5, 2.0)
"""A variant's reference cost and FLOPs, each over the headline's, stay inside this range."""
MIN_HEAD_SIZE = 8
DRAWS = 20000
"""Candidates tried before giving up (the ranges below always hold many)."""


def reference_cost(task: Task) -> float:
    """The naive reference's time, up to a constant: its Python loops, which dominate on the headline sizes.

    Per step it runs two forward passes and one backward pass; each visits every (batch, position) once per
    LayerNorm (2L + 1 of them), once per head of every layer in attention, and once in the loss.
    """
    B, T, L, H = task.batch_size, task.ctx_len, task.n_layer, task.n_head
    per_pass = B * T * ((2 * L + 1) + L * H + 1)
    return float(task.steps * 3 * per_pass)


@dataclass(frozen=True)
class Sizes:
    T: int
    C: int
    L: int
    H: int
    B: int

    @classmethod
    def of(cls, workload: Workload) -> Sizes:
        m, t = workload.model, workload.train
        return cls(m.ctx_len, m.d_model, m.n_layer, m.n_head, t.batch_size)

    @property
    def tag(self) -> str:
        return f"T{self.T}-C{self.C}-L{self.L}-H{self.H}-B{self.B}"


def _around(value: int, step: int, low: int) -> list[int]:
    """Multiples of `step` from half to twice `value` (at least `low`), without `value` itself."""
    start = max(low, math.ceil(value / 2 / step) * step)
    return [v for v in range(start, 2 * value + 1, step) if v != value]


def candidates(headline: Sizes) -> dict[str, list[int]]:
    return {
        "T": _around(headline.T, 4, 4),
        "C": _around(headline.C, 8, 8),
        "L": [v for v in (headline.L - 1, headline.L + 1) if v >= 1],
        "H": [v for v in (headline.H // 2, headline.H * 2) if v >= 1 and v != headline.H],
        "B": _around(headline.B, 1, 1),
    }


def with_sizes(headline: Workload, sizes: Sizes, name: str, description: str) -> Workload:
    raw = headline.model_dump(mode="json")
    raw |= {"name": name, "description": description}
    raw["model"] |= {"ctx_len": sizes.T, "d_model": sizes.C, "n_layer": sizes.L, "n_head": sizes.H}
    raw["train"] |= {"batch_size": sizes.B}
    return Workload.model_validate(raw)


def _fits(headline: Workload, sizes: Sizes) -> bool:
    if sizes.C % sizes.H or sizes.C // sizes.H < MIN_HEAD_SIZE:
        return False
    variant = with_sizes(headline, sizes, headline.name, "")
    low, high = COST_RANGE
    cost = reference_cost(variant.task()) / reference_cost(headline.task())
    flops = run_flops(variant.task()) / run_flops(headline.task())
    return low <= cost <= high and low <= flops <= high


def draw_variants(headline: Workload, count: int, seed: int, kind: str = "variant") -> list[Workload]:
    """`count` distinct variants of `headline` drawn from `seed`, named `HEADLINE-KIND-T..-C..-L..-H..-B..`."""
    rng = np.random.default_rng(seed)
    base = Sizes.of(headline)
    options = candidates(base)
    if any(not values for values in options.values()):
        raise ValueError(f"{headline.name} has no variant sizes around it")
    found: dict[Sizes, Workload] = {}
    for _ in range(DRAWS):
        if len(found) == count:
            break
        sizes = Sizes(**{key: int(rng.choice(values)) for key, values in options.items()})
        if sizes in found or not _fits(headline, sizes):
            continue
        description = f"A variant of {headline.name} ({kind}): other sizes of the same model family."
        found[sizes] = with_sizes(headline, sizes, f"{headline.name}-{kind}-{sizes.tag}", description)
    if len(found) < count:
        raise ValueError(f"only {len(found)} of {count} variants of {headline.name} could be drawn")
    return list(found.values())


def workload_toml(workload: Workload) -> str:
    """The workload as a TOML file that `load_workload` reads back equal."""

    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, str | bool) else repr(v)

    raw = workload.model_dump(mode="json")
    lines = [f"{key} = {value(raw[key])}" for key in ("name", "description")]
    for table in ("model", "train", "optim", "budget", "tolerances"):
        if raw.get(table) is not None:
            lines += ["", f"[{table}]"] + [f"{key} = {value(v)}" for key, v in raw[table].items() if v is not None]
    return "\n".join(lines) + "\n"
