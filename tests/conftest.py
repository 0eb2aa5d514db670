"""Shared fixtures: one tiny setting per session (the GEMM ceiling is measured once) and real records of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.contract.spec import load_workload
from harness.scoring import data
from harness.scoring.setting import Setting, make_setting

SCORED = ("reference_loop", "tests/honest/torch_float32", "tests/adversarial/attacks/lr_change")
"""The baseline itself, an honest float32 port and an attack the audit rejects: every kind of row a leaderboard has."""


@pytest.fixture(scope="session")
def tiny_setting() -> Setting:
    """Under the record policy: these tests judge verdicts, not times, and must pass on a busy machine (the
    refusal of a busy machine has tests of its own)."""
    workload = load_workload("tiny")
    return make_setting(workload, workload.budget, data.load_corpus(), busy="record")


@pytest.fixture(scope="session")
def scored_results(tmp_path_factory: pytest.TempPathFactory, tiny_setting: Setting) -> Path:
    """A results folder of real records from `loopbench score` on tiny (two trials): read it, never write to it."""
    from harness.contract.submission import load_submission
    from harness.scoring.results import score

    root = Path(__file__).resolve().parents[1]
    results = tmp_path_factory.mktemp("scored")
    score([load_submission(root / s) for s in SCORED], tiny_setting, trials=2, results_dir=results, progress=False)
    return results
