"""The run record: one (submission, workload) of `loopbench score`, typed to the last field and versioned.

Version policy: an added optional field keeps RECORD_VERSION; a change that an old file would not satisfy
bumps it and adds an upgrade step in harness.records.upgrade, so that every record ever written still loads.
A file whose version is newer than this code is refused in one line. tests/golden/ holds records of every
version, and the committed records under results/runs/ load too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.contract.checks import Check
from harness.contract.spec import Budget, Tolerances, Workload

RECORD_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SegmentRecord(_Model):
    """The audit of one segment between two checkpoints, against the float64 replay."""

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
    loss_bias: float = 0.0
    """Mean signed deviation (logged - replay) of the segment's losses; 0 in records from before this field."""
    decay_share: float = 0.0
    """Largest share of the segment's weight decay a decayed tensor missed or gained; 0 in older records."""
    worst_decay_tensor: str = ""
    moment_distance: float = 0.0
    """How far the submission's m/sqrt(v) points from the replay's, in gradient units, relative to the replay's
    movement of m (harness.judge.figures.moment_direction); 0 in older records."""
    group_distances: dict[str, float] = Field(default_factory=dict)
    """The normalised end-state distance of each group (params, m, v); empty in older records."""
    float32_noise: dict[str, float] = Field(default_factory=dict)
    """Only where the segment exceeded a tolerance: the trusted implementation's own float32 replay of it,
    measured against the float64 replay (distance_params, distance_m, distance_v, tensor_distance, moments,
    loss). The segment was then judged against 10x these, at most 10x the tolerances
    (harness.judge.second_opinion); empty otherwise."""
    limits: dict[str, float] = Field(default_factory=dict)
    """The tolerances this segment was judged by where the second opinion set them (keyed as the record's
    tolerances); empty where the record's own tolerances applied."""


class Isolation(_Model):
    """What confinement took effect in a run, as the parent read it from outside the worker."""

    cpus: list[int] = Field(default_factory=list)
    """The CPUs the run was pinned to."""
    pid_namespace: bool = False
    ipc_namespace: bool = False
    network_namespace: bool = False
    read_only_filesystem: bool = False
    """Every mount read-only but the trial's folder and its private /dev/shm."""
    writable_mounts: list[str] = Field(default_factory=list)
    """Mounts the worker could write to beyond its own folder (none when confined)."""
    user_namespace: bool = False
    cgroup: bool = False
    """The run had a cgroup of its own: the kernel enforced its memory, CPUs and processes and counted its CPU."""
    process_cleanup: str = ""


class Disturbance(_Model):
    """What a run lost to the rest of the machine while its clock ran (SPEC §7), and whether that made it
    no measurement."""

    others_cpu_seconds: float
    """CPU time other processes took on the budget's cores (their busy time less the run's and the harness's)."""
    steal_seconds: float
    """Time the hypervisor gave the budget's cores to someone else."""
    wait_seconds: float
    """Time the run's threads were runnable but waited for a core (their own contention included)."""
    granted: float
    """The run's CPU time over cores x wall time."""
    disturbed: bool = False
    """True when the figures (or the trial's GEMM probes) say the machine took CPU from the run."""
    why: str | None = None
    attempts: int = 1
    """Runs of this trial that were made; the earlier ones were disturbed and run again."""


class RunSummary(_Model):
    """One run of one loop in one trial, as the parent measured and audited it."""

    accepted: bool
    reason: str
    check: Check | None = None
    """The check that failed, if any."""
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
    isolation: Isolation = Field(default_factory=Isolation)
    disturbance: Disturbance | None = None
    """None in records older than this field."""


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
    probes: list[float] = Field(default_factory=list)
    """The GEMM probe's rate (GFLOP/s) before and after the trial's runs; empty in older records."""


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


class Machine(_Model):
    """The machine that timed the runs, under the budget's cores."""

    cpu_model: str
    hostname: str
    cpus_available: int
    cores: int
    """Cores in the budget."""
    cpus: list[int]
    python: str
    gemm_gflops: float | None = None
    """The measured float32 GEMM rate under the budget (the ceiling): the median of its repeats; None where it
    was not measured."""
    gemm_repeats: list[float] = Field(default_factory=list)
    """Each repeat's best rate, GFLOP/s (empty in older records, which kept the best of one repeat)."""
    gemm_spread: float | None = None
    """(highest - lowest repeat) / median: a machine that is busy now and then spreads them."""
    gemm_others_share: float | None = None
    """The share of the budget's core-seconds other processes took while the ceiling was measured."""
    fma_peak_gflops: float | None = None
    """The cores' float32 multiply-add peak under the budget (harness/scoring/peak.py), which the physical floor
    uses; None where it was not measured (no C compiler, or an older record)."""
    cpu_flags: list[str] = Field(default_factory=list)
    """The CPU's vector extensions that native code chooses between (avx2, fma, avx512f, ...)."""


class Versions(_Model):
    """Library versions and the git state of the harness that wrote the record."""

    python: str | None = None
    platform: str | None = None
    loopbench: str | None = None
    numpy: str | None = None
    torch: str | None = None
    numba: str | None = None
    pydantic: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None


class CorpusRef(_Model):
    name: str
    sha256: str


class AttemptInfo(_Model):
    """Where a record of `loopbench task grade` comes from: one state of a sealed-task attempt (SPEC §9).

    Everything here but the content hash and the scores comes from the attempt's workspace, which the
    evaluator does not trust: it only says which states to grade and when the workspace claims it reached
    them. What ran is the state's files (hashed in `content_hash`), re-scored on fresh seeds."""

    id: str
    """The attempt: the first 12 hex digits of the workspace's first commit (the export)."""
    graded: str
    """UTC time of the `task grade` that wrote this record, ISO 8601; the records of one grade share it."""
    state: str
    """The snapshot commit whose submission folder was graded, or "working-tree" for the folder as left."""
    index: int
    """Position of the state among the graded states of the attempt, from 1, in the order reached."""
    final: bool
    """The attempt's final state: the submission folder as the attempt left it."""
    elapsed_seconds: float
    """Seconds from the export to the state, as the workspace's history states them (the snapshot commit's
    time; for a final state edited after its last snapshot, its files' modification time)."""
    content_hash: str
    """SHA-256 over the state's files (each path and the SHA-256 of its bytes): the code that was graded."""
    headline: str
    """The headline workload this record's workload is, or is a held-out variant of."""
    variant_seed: int | None = None
    """The seed the held-out variant was drawn from at grade time (never seen by the workspace); None on the
    headline itself."""
    score: float | None = None
    """The state's score: the geometric mean of its speedups over the headline and every variant of this grade;
    None when any of them is rejected. The same in every record of the state."""


class RunRecord(_Model):
    """One (submission, workload, run) of `loopbench score`: every trial and the verdict over them."""

    version: int = RECORD_VERSION
    """Schema version of this file (see the module's version policy)."""
    created: str
    """UTC time the record was written, ISO 8601."""
    submission: SubmissionInfo
    baseline: SubmissionInfo
    workload: Workload
    """The workload as loaded (sizes, optimiser, steps, audit interval, default budget)."""
    budget: Budget
    """The budget every run of the record ran under (cores, memory, time limits)."""
    machine: Machine
    """The machine of the node that timed the most trials."""
    nodes: dict[str, Machine] = Field(default_factory=dict)
    """The machine of every node that timed a trial, by node name, when the trials were timed on more than one
    node; empty when one node timed them all (then `machine` is that node)."""
    versions: Versions
    corpus: CorpusRef
    tolerances: Tolerances
    """The tolerances every run was audited with."""
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
    disturbed_runs: int = 0
    """Runs kept although the machine disturbed them (`score --busy record`): a record with any is no score."""
    attempt: AttemptInfo | None = None
    """Set on the records of `loopbench task grade`: the attempt, its state and the state's elapsed time."""
