"""Pure statistics of paired trials: medians, the speedup and its bootstrap interval. No timing here."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 4000
HUMAN_REFERENCE = 4.0
"""The human expert reference speedup (reported to take 4 to 8 hours): "x human" = speedup / 4."""


def median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def speedup(baseline: list[float], submission: list[float]) -> float:
    """Median baseline time over median submission time (SPEC §7)."""
    return median(baseline) / median(submission)


def speedup_interval(baseline: list[float], submission: list[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the speedup, resampling whole trials so that each pair stays together."""
    b, s = np.asarray(baseline, dtype=float), np.asarray(submission, dtype=float)
    if len(b) != len(s) or len(b) == 0:
        raise ValueError("paired trials need the same, non-zero number of times on both sides")
    if len(b) == 1:
        ratio = float(b[0] / s[0])
        return ratio, ratio
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(b), size=(BOOTSTRAP_RESAMPLES, len(b)))
    ratios = np.median(b[picks], axis=1) / np.median(s[picks], axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1.0 - tail))


def x_human(value: float) -> float:
    return value / HUMAN_REFERENCE
