"""Shared builders for the tests: tiny tasks, corpora, seeded data."""

from __future__ import annotations

import numpy as np

from harness import data
from harness.spec import Task, load_workload


def tiny_task(**changes) -> Task:
    return load_workload("tiny").task().model_copy(update=changes)


def tiny_run_inputs(seed: int = 0, **changes) -> tuple[Task, dict[str, np.ndarray], np.ndarray]:
    task = tiny_task(**changes)
    corpus = data.load_corpus()
    return task, data.init_params(task, seed), data.make_batches(corpus, task, seed)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of b."""
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) / scale
