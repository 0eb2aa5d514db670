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


HONEST_EDIT = (
    "    return out, (xhat, rstd)\n",
    "    return out, (xhat, rstd)\n\n\ndef layernorm_forward(x, g, b):  # vectorised over every position\n"
    "    mean = x.mean(axis=-1, keepdims=True)\n"
    "    xhat = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + LN_EPS)\n"
    "    return xhat * g + b, (xhat, 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=-1) + LN_EPS))\n",
)
"""An honest change to the reference: LayerNorm's forward pass without its loops."""
HEADLINE_SIZES_EDIT = ("attention_forward(qkv, task.n_head)", "attention_forward(qkv, 2)")
"""A submission that hard-codes the headline's head count (tiny has 2): right on tiny, wrong on any other H."""


@pytest.fixture(scope="session")
def graded_attempt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An attempt graded by `loopbench task grade` on tiny: an honest snapshot (as `check` inside the workspace
    commits it), then a final state left unchecked that hard-codes tiny's head count. Read it, never write."""
    import json

    from harness.task.snapshot import commit_snapshot
    from tests.helpers import invoke

    root = tmp_path_factory.mktemp("attempt")
    workspace, results = root / "T", root / "results"
    assert invoke("task", "export", workspace, "--workload", "tiny").exit_code == 0
    train = workspace / "submissions" / "mine" / "train.py"
    train.write_text(train.read_text().replace(*HONEST_EDIT))
    line = commit_snapshot(train.parent, "check", "accepted", "mine on tiny: ACCEPTED")
    assert line and line.startswith("snapshot "), line
    train.write_text(train.read_text().replace(*HEADLINE_SIZES_EDIT))
    graded = invoke(
        "task",
        "grade",
        workspace,
        "--workload",
        "tiny",
        "--trials",
        "1",
        "--results",
        results,
        "--busy",
        "record",
        "--json",
    )
    assert graded.exit_code == 1, graded.output  # the final state is rejected on the variants
    return {"workspace": workspace, "results": results, "grade": json.loads(graded.stdout)}
