"""Shared builders for the tests: tiny tasks and data, the command line, records, and the regression check.

This is the one module test modules share; no test module imports another.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import Result
from typer.testing import CliRunner

from harness.cli import app
from harness.contract.spec import Task, load_workload
from harness.records import schema
from harness.records.store import utc_now
from harness.scoring import data

PROJECT = Path(__file__).resolve().parents[1]
HONEST = PROJECT / "tests" / "honest" / "torch_float32"
ATTACKS = PROJECT / "tests" / "adversarial" / "attacks"


# ---------------------------------------------------------------- tiny tasks and data


def tiny_task(**changes: Any) -> Task:
    return load_workload("tiny").task().model_copy(update=changes)


def tiny_run_inputs(seed: int = 0, **changes: Any) -> tuple[Task, dict[str, np.ndarray], np.ndarray]:
    task = tiny_task(**changes)
    corpus = data.load_corpus()
    return task, data.init_params(task, seed), data.make_batches(corpus, task, seed)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of b."""
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) / scale


# ---------------------------------------------------------------- the command line


def invoke(*args: object) -> Result:
    """`loopbench ARGS...` in this process, as a user would type it."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A user error: exit code 2, no traceback, one line on stderr starting with 'error: ' and naming each fragment."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------- records


def make_record(name: str = "demo", n_losses: int = 10, system: str = "s") -> schema.RunRecord:
    """A complete, valid record of one accepted trial on tiny, as `score` would write it (times made up)."""
    workload = load_workload("tiny")
    info = schema.SubmissionInfo(
        name=name,
        kind="agent",
        system=system,
        authors=["a"],
        date="2026-11-23",
        description="d",
        entrypoint="train.py:train",
        path="/x",
        file_hashes={"train.py": "0" * 64},
    )
    run = schema.RunSummary(
        accepted=True,
        reason="ok",
        seconds=1.0,
        setup_seconds=0.5,
        cpu_seconds=1.5,
        peak_memory_mib=300.0,
        eval_loss=4.0,
        losses=[1.0] * n_losses,
    )
    machine = schema.Machine(
        cpu_model="Test CPU",
        hostname="test-host",
        cpus_available=2,
        cores=2,
        cpus=[0, 1],
        python="3.11",
        gemm_gflops=100.0,
    )
    return schema.RunRecord(
        created=utc_now(),
        submission=info,
        baseline=info,
        workload=workload,
        budget=workload.budget,
        machine=machine,
        versions=schema.Versions(),
        corpus=schema.CorpusRef(name="pydoc_data.topics", sha256="f" * 64),
        tolerances=schema.Tolerances(distance=3e-4, tensor_distance=1e-2, loss=1e-3),
        flops=1,
        floor_seconds=0.0,
        trials=[schema.TrialRecord(index=0, seed=1, baseline=run, submission=run, node="test-host")],
        verdict="accepted",
        reason="every trial accepted",
        speedup=1.0,
        speedup_ci=[1.0, 1.0],
        x_human=0.25,
    )


def copy_results(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ---------------------------------------------------------------- the regression check


def assert_trains_the_task(folder: Path, setting: Any, seed: int = 11) -> Any:
    """The regression check of one submission folder: accepted on tiny, or the reason and the hint."""
    from harness.contract.submission import load_submission
    from harness.scoring.results import check

    result = check(load_submission(folder), setting, seed=seed, progress=False)
    hint = f"\n  hint: {result.hint}" if result.hint else ""
    assert result.verdict == "accepted", f"{folder.name} is rejected: {result.reason}{hint}"
    return result
