"""Run records: the pydantic schema, atomic non-clobbering writes, and loading that skips bad files."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RECORD_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SegmentRecord(_Model):
    index: int
    first_step: int
    last_step: int
    distance: float
    """Largest normalised end-state distance of a whole group (params, m or v)."""
    worst_group: str
    tensor_distance: float
    """Largest normalised end-state distance of a single tensor."""
    worst_tensor: str
    loss_deviation: float
    """Largest absolute deviation of a logged loss from the float64 replay's."""
    worst_step: int
    first_loss_deviation: float = 0.0
    """Deviation of the loss of the segment's first step."""


class RunSummary(_Model):
    """One run of one loop in one trial, as the parent measured and audited it."""

    accepted: bool
    reason: str
    check: str | None = None
    """The check that failed, if any: protocol, loss, end-state, implausible, crash, timeout, memory, cpu, processes, clock."""
    hint: str | None = None
    """The likely cause of a rejection, where the pattern of the failure points at one."""
    seconds: float | None = None
    """Wall-clock seconds from handing over the data to the arrival of the final checkpoint."""
    setup_seconds: float | None = None
    """Imports and prepare(task), before the clock."""
    cpu_seconds: float | None = None
    """CPU time of the whole process tree while the clock ran."""
    peak_memory_mib: float | None = None
    eval_loss: float | None = None
    """Held-out loss of the final parameters, evaluated by the harness."""
    losses: list[float] = Field(default_factory=list)
    segments: list[SegmentRecord] = Field(default_factory=list)
    isolation: dict = Field(default_factory=dict)


class TrialRecord(_Model):
    index: int
    seed: int
    baseline: RunSummary | None
    submission: RunSummary
    node: str | None = None
    """The node that timed the trial (the baseline and every submission back to back): the host name, and on a
    Ray cluster the host name and the node's id after a slash. None in records older than this field."""
    retries: list[str] = Field(default_factory=list)
    """Attempts of this trial that were lost with their node (it died or left mid-trial), each run again whole,
    on the same seed, on another node; the runs above are the attempt that completed."""


class SubmissionInfo(_Model):
    name: str
    kind: str
    system: str
    authors: list[str] | str
    date: str
    description: str
    entrypoint: str
    path: str
    file_hashes: dict[str, str]
    """SHA-256 of every file of the submission that ran."""


class RunRecord(_Model):
    """One (submission, workload, run) of `loopbench score`: every trial and the verdict over them."""

    version: Literal[1] = RECORD_VERSION
    """Schema version of this file."""
    created: str
    """UTC time the record was written, ISO 8601."""
    submission: SubmissionInfo
    baseline: SubmissionInfo
    workload: dict
    """The workload as loaded (sizes, optimiser, steps, audit interval)."""
    budget: dict
    """The budget every run of the record ran under (cores, memory, time limits)."""
    machine: dict
    """CPU model, host, cores in the budget and the measured float32 GEMM rate (gemm_gflops); of the node that
    timed the most trials when they were timed on several."""
    nodes: dict[str, dict] = Field(default_factory=dict)
    """The machine of every node that timed a trial, by node name, when the trials were timed on more than one
    node; empty when one node timed them all (then `machine` is that node)."""
    versions: dict
    """loopbench, Python, NumPy, torch, numba and the git commit with its dirty flag."""
    corpus: dict
    """The corpus's name and SHA-256."""
    tolerances: dict
    flops: int
    """Floating-point operations of one whole run, counted from the sizes."""
    floor_seconds: float
    """The run's FLOPs at the measured GEMM rate: no honest time can be shorter."""
    trials: list[TrialRecord]
    verdict: Literal["accepted", "rejected"]
    reason: str
    speedup: float | None = None
    """Median baseline time / median submission time; None when rejected. Trials timed on several nodes are
    paired within their node: the geometric mean of each node's speedup, weighted by its trials."""
    speedup_ci: list[float] | None = None
    """Bootstrap 95% interval of the speedup over paired trials."""
    x_human: float | None = None
    """Speedup / 4, the human expert reference."""
    baseline_median_seconds: float | None = None
    submission_median_seconds: float | None = None
    achieved_gflops: float | None = None
    ceiling_fraction: float | None = None
    """Achieved FLOP rate of the submission over the measured GEMM rate."""


def schema() -> dict:
    return RunRecord.model_json_schema()


def record_filename(record: RunRecord) -> str:
    stamp = record.created.replace(":", "").replace("-", "").split(".")[0]
    return f"{record.submission.name}--{record.workload['name']}--{stamp}--{secrets.token_hex(3)}.json"


def write_record(record: RunRecord, results_dir: str | Path) -> Path:
    """Write atomically and never over another file: a hidden temporary file, then a hard link to the final name.

    A crash or kill at any moment leaves either no record or the whole record (plus, at worst, a hidden
    `.partial` file that loading ignores); two writers at once get different names.
    """
    runs = Path(results_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    body = json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True).encode("utf-8") + b"\n"
    fd, tmp = tempfile.mkstemp(dir=runs, prefix=".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        while True:
            final = runs / record_filename(record)
            try:
                os.link(tmp, final)
                break
            except FileExistsError:
                continue
        dir_fd = os.open(runs, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final
    finally:
        os.unlink(tmp)


def load_records(results_dir: str | Path) -> list[tuple[Path, RunRecord]]:
    """Every valid record under results_dir/runs; a corrupt or foreign file is skipped with a warning naming it."""
    runs = Path(results_dir) / "runs"
    found = []
    for path in sorted(runs.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            found.append((path, RunRecord.model_validate_json(path.read_bytes())))
        except (ValidationError, ValueError, OSError) as err:
            first = str(err).splitlines()[0][:160]
            warnings.warn(f"skipping {path}: not a loopbench record ({first})", stacklevel=2)
    return found


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
