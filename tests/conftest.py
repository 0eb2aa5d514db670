"""Shared fixtures: one tiny setting per session (the GEMM ceiling is measured once)."""

import pytest

from harness import data
from harness.score import make_setting
from harness.spec import load_workload


@pytest.fixture(scope="session")
def tiny_setting():
    workload = load_workload("tiny")
    return make_setting(workload, workload.budget, data.load_corpus())


SCORED = ("reference_loop", "tests/honest/torch_float32", "tests/adversarial/attacks/lr_change")
"""The baseline itself, an honest float32 port and an attack the audit rejects: every kind of row a leaderboard has."""


@pytest.fixture(scope="session")
def scored_results(tmp_path_factory, tiny_setting):
    """A results folder of real records from `loopbench score` on tiny (two trials): read it, never write to it."""
    from pathlib import Path

    from harness.score import score
    from harness.submission import load_submission

    root = Path(__file__).resolve().parents[1]
    results = tmp_path_factory.mktemp("scored")
    score([load_submission(root / s) for s in SCORED], tiny_setting, trials=2, results_dir=results, progress=False)
    return results
