"""Pure statistics of paired trials: medians, the speedup and its bootstrap interval. No timing here."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 4000
MIN_TRIALS_FOR_INTERVAL = 2
HUMAN_REFERENCE = 4.0
"""The human expert reference speedup (reported to take 4 to 8 hours): "x human" = speedup / 4."""


def median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def speedup(baseline: list[float], submission: list[float], nodes: list[str] | None = None) -> float:
    """Median baseline time over median submission time (SPEC §7), over the trials of one node.

    Trials timed on several nodes (a cluster) are never pooled across nodes: each node's speedup is its
    own median over median, and the speedup is their geometric mean weighted by each node's trials. On
    one node, which is always the case on one machine, that is exactly median over median.
    """
    b, s = np.asarray(baseline, dtype=float), np.asarray(submission, dtype=float)
    return _within_nodes(b, s, _node_labels(nodes, len(b)))


def _node_labels(nodes: list[str] | None, n: int) -> np.ndarray | None:
    """Node indices of the trials, or None when all were timed on one node."""
    if nodes is None or len(set(nodes)) <= 1:
        return None
    if len(nodes) != n:
        raise ValueError("every trial needs the node it was timed on")
    return np.unique(np.asarray(nodes), return_inverse=True)[1]


def _within_nodes(b: np.ndarray, s: np.ndarray, labels: np.ndarray | None) -> float:
    if labels is None:
        return float(np.median(b) / np.median(s))
    logs, weights = [], []
    for node in np.unique(labels):
        mine = labels == node
        logs.append(np.log(np.median(b[mine]) / np.median(s[mine])))
        weights.append(mine.sum())
    return float(np.exp(np.average(logs, weights=weights)))


def speedup_interval(
    baseline: list[float], submission: list[float], nodes: list[str] | None = None, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of the speedup, resampling whole trials so that each pair (and its node) stays together.

    One trial has no interval: resampling a single pair gives back its own ratio, which is no measure of spread.
    """
    b, s = np.asarray(baseline, dtype=float), np.asarray(submission, dtype=float)
    if len(b) != len(s) or len(b) == 0:
        raise ValueError("paired trials need the same, non-zero number of times on both sides")
    if len(b) < MIN_TRIALS_FOR_INTERVAL:
        raise ValueError(f"an interval needs at least {MIN_TRIALS_FOR_INTERVAL} paired trials, not {len(b)}")
    labels = _node_labels(nodes, len(b))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(b), size=(BOOTSTRAP_RESAMPLES, len(b)))
    if labels is None:
        ratios = np.median(b[picks], axis=1) / np.median(s[picks], axis=1)
    else:
        ratios = np.array([_within_nodes(b[row], s[row], labels[row]) for row in picks])
    tail = (1.0 - level) / 2.0
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1.0 - tail))


def x_human(value: float) -> float:
    return value / HUMAN_REFERENCE
