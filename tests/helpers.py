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
    reference = info.model_copy(
        update={"name": "reference", "kind": "baseline", "system": "loopbench", "file_hashes": {"train.py": "1" * 64}}
    )
    return schema.RunRecord(
        created=utc_now(),
        submission=info,
        baseline=reference,
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


# ---------------------------------------------------------------- the sealed task: what a workspace must not hold

ANSWER_FOLDERS = ("submissions", "tests/honest", "tests/adversarial/attacks")
"""Where the project keeps code that solves the task or one change away from it: every file below is an answer."""
NOTES = ("results", "docs", "bench", "AGENT_TASK.md")
"""Records, notes, benchmarks and the project's own brief: they point at answers."""
MIN_LINE = 16
"""Normalised source lines shorter than this (`return x`, `import torch`) say nothing about where code came from."""


def _files(path: Path) -> list[Path]:
    found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc"]


def forbidden_files() -> dict[str, list[Path]]:
    """The project's answers and notes, listed from the tree itself: a new shipped submission is in by itself."""
    answers = [f for folder in ANSWER_FOLDERS for f in _files(PROJECT / folder)]
    notes = [f for name in NOTES if (PROJECT / name).exists() for f in _files(PROJECT / name)]
    return {"answers": answers, "notes": notes}


def source_lines(path: Path) -> set[str]:
    """A file's lines with white space folded, comment lines and short lines left out; none for binary files."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return set()
    lines = {" ".join(line.split()) for line in text.splitlines()}
    return {line for line in lines if len(line) >= MIN_LINE and not line.startswith(("#", "//"))}


def copied_answers(folder: Path, skip: tuple[str, ...] = (".git",)) -> list[str]:
    """Files under `folder` that hold a forbidden file's bytes, or more than two of an answer's own source lines
    (lines the naive reference also has are everyone's); one line per finding, empty when there is none."""
    import hashlib

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    forbidden = forbidden_files()
    reference = set().union(*(source_lines(p) for p in _files(PROJECT / "reference_loop")))
    by_bytes = {digest(p): p for group in forbidden.values() for p in group if p.stat().st_size > 0}
    answers = {p: source_lines(p) - reference for p in forbidden["answers"]}
    findings = []
    for path in _files(folder):
        if set(path.relative_to(folder).parts) & set(skip):
            continue
        where = path.relative_to(folder)
        if path.stat().st_size and digest(path) in by_bytes:
            findings.append(f"{where} is a copy of {by_bytes[digest(path)].relative_to(PROJECT)}")
            continue
        lines = source_lines(path)
        for answer, own in answers.items():
            shared = lines & own
            if len(shared) > 2:
                findings.append(f"{where} shares {len(shared)} lines with {answer.relative_to(PROJECT)}")
    return findings
