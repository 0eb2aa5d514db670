"""What a run is: workloads and their budget, the frozen task a submission receives (SPEC §5), the parameter shapes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import LoopbenchError

WORKLOAD_DIR = Path(__file__).resolve().parent.parent / "workloads"
"""The shipped workloads, package data of loopbench."""

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelSizes(_Strict):
    """Sizes of the byte-level GPT of SPEC §2."""

    vocab_size: PositiveInt = 256
    """V: bytes, so 256 for the default corpus."""
    ctx_len: PositiveInt
    """T: tokens per window."""
    d_model: PositiveInt
    """C: width of the residual stream."""
    n_layer: PositiveInt
    """L: transformer blocks."""
    n_head: PositiveInt
    """H: attention heads; C must be a multiple of H."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSizes:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        return self


class Optimiser(_Strict):
    """AdamW with warm-up and cosine decay, SPEC §3."""

    lr: PositiveFloat
    lr_min: Annotated[float, Field(ge=0)]
    warmup_steps: Annotated[int, Field(ge=0)]
    beta1: Annotated[float, Field(ge=0, lt=1)]
    beta2: Annotated[float, Field(ge=0, lt=1)]
    eps: PositiveFloat
    weight_decay: Annotated[float, Field(ge=0)]
    grad_clip: PositiveFloat


class Training(_Strict):
    batch_size: PositiveInt
    """B: windows per step."""
    steps: PositiveInt
    """S: optimiser steps in the run."""
    audit_every: PositiveInt
    """A checkpoint after every step s with (s + 1) % audit_every == 0, and after the last."""


class Budget(_Strict):
    """The hardware a trial may use: the same for the baseline and every submission."""

    cores: PositiveInt = 2
    """CPU cores (affinity and every thread-count variable)."""
    memory_mib: PositiveInt = 4096
    """Peak resident memory of the trial's whole process tree."""
    timeout_s: PositiveFloat = 900.0
    """Wall-clock limit of the timed phase; the whole process tree is killed after it."""
    prepare_s: PositiveFloat = 300.0
    """Cap on imports plus the optional prepare(task), which run before the clock."""


class Tolerances(_Strict):
    """The audit's thresholds (SPEC §6): a run whose measure exceeds one in any segment is rejected."""

    distance: PositiveFloat
    """Normalised end-state distance of a whole group, all its tensors together: the params group's, and also m's
    and v's where `moment_group` is None (records from before that field)."""
    moment_group: PositiveFloat | None = None
    """Normalised end-state distance of the m group and of the v group: a loose check of their scale (a common
    scale of the gradient leaves AdamW's steps alone; `moments` checks their direction)."""
    moments: PositiveFloat | None = None
    """Moment-direction distance: m/sqrt(v) against the replay's, in gradient units, relative to the replay's
    movement of m (harness.judge.figures.moment_direction); None in records from before this measure."""
    tensor_distance: PositiveFloat
    """Normalised end-state distance of any single tensor."""
    loss: PositiveFloat
    """Absolute deviation of a logged loss from the float64 replay's."""
    loss_bias: PositiveFloat | None = None
    """Mean signed deviation of the logged losses from the replay's over the whole run; None in records from
    before this measure (they were not audited with it)."""
    decay_share: PositiveFloat | None = None
    """Share of a segment's weight decay missing from (or added to) any decayed tensor, measured along the
    tensor itself; None in records from before this measure."""


def group_measure(group: str, moment_group: float | None) -> str:
    """The tolerance a whole group's distance falls under: params under `distance`, m and v under `moment_group`
    where the tolerances set one (else under `distance` too). The judge and the run page both ask this."""
    return "moment_group" if group in ("m", "v") and moment_group is not None else "distance"


class Workload(_Strict):
    """One TOML file under bench/workloads/: what is trained, and the default budget."""

    name: str
    description: str = ""
    model: ModelSizes
    train: Training
    optim: Optimiser
    budget: Budget = Budget()
    tolerances: Tolerances | None = None
    """The audit's tolerances for this workload (SPEC §6, calibrated per workload); None: the judge's defaults."""

    @model_validator(mode="after")
    def _warmup_fits(self) -> Workload:
        if self.optim.warmup_steps >= self.train.steps:
            raise ValueError("warmup_steps must be smaller than steps")
        return self

    def task(self) -> Task:
        return Task(
            **self.model.model_dump(),
            batch_size=self.train.batch_size,
            steps=self.train.steps,
            audit_every=self.train.audit_every,
            **self.optim.model_dump(),
        )

    def n_params(self) -> int:
        return n_params(self.task())


class Task(_Strict):
    """The frozen task a submission receives (SPEC §5); attribute names are exact."""

    vocab_size: int
    ctx_len: int
    d_model: int
    n_layer: int
    n_head: int
    batch_size: int
    steps: int
    lr: float
    lr_min: float
    warmup_steps: int
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    grad_clip: float
    audit_every: int

    def checkpoint_steps(self) -> list[int]:
        """The steps after whose update a checkpoint is due (SPEC §5)."""
        due = [s for s in range(self.steps) if (s + 1) % self.audit_every == 0]
        if not due or due[-1] != self.steps - 1:
            due.append(self.steps - 1)
        return due


def param_shapes(task: Task) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in SPEC §2's order."""
    V, T, C = task.vocab_size, task.ctx_len, task.d_model
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "wpe": (T, C)}
    for i in range(task.n_layer):
        shapes |= {
            f"h{i}.ln1.g": (C,),
            f"h{i}.ln1.b": (C,),
            f"h{i}.attn.w": (C, 3 * C),
            f"h{i}.attn.b": (3 * C,),
            f"h{i}.proj.w": (C, C),
            f"h{i}.proj.b": (C,),
            f"h{i}.ln2.g": (C,),
            f"h{i}.ln2.b": (C,),
            f"h{i}.fc.w": (C, 4 * C),
            f"h{i}.fc.b": (4 * C,),
            f"h{i}.fcproj.w": (4 * C, C),
            f"h{i}.fcproj.b": (C,),
        }
    shapes |= {"lnf.g": (C,), "lnf.b": (C,)}
    return shapes


def n_params(task: Task) -> int:
    total = 0
    for shape in param_shapes(task).values():
        size = 1
        for d in shape:
            size *= d
        total += size
    return total


def parse_memory_mib(text: str, what: str = "memory size") -> int:
    """'4096' (MiB), '512M', '4G', '4GiB' -> MiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise LoopbenchError(f"{what} '{text}' is not a size like 4G, 512M or 4096 (MiB)")
    number, unit = float(match[1]), match[2].upper() or "M"
    mib = number * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if mib < 1:
        raise LoopbenchError(f"{what} '{text}' is under 1 MiB")
    return int(mib)


def budget_with(
    budget: Budget, cores: int | None = None, memory: str | None = None, timeout: float | None = None
) -> Budget:
    """The workload's budget with the command line's overrides, validated."""
    changes: dict[str, Any] = {}
    if cores is not None:
        if cores < 1:
            raise LoopbenchError(f"--cores must be at least 1, not {cores}")
        changes["cores"] = cores
    if memory is not None:
        changes["memory_mib"] = parse_memory_mib(memory)
    if timeout is not None:
        if timeout <= 0:
            raise LoopbenchError(f"--timeout must be positive, not {timeout}")
        changes["timeout_s"] = timeout
    return budget.model_copy(update=changes)


def validation_line(err: ValidationError, limit: int = 5) -> str:
    """A pydantic error as one line: every missing key by name, then each other fault (where, what), the first
    `limit` of them."""
    faults = err.errors()
    missing = [_where(f) for f in faults if f["type"] == "missing"]
    others = [f"{_where(f)}: {f['msg']}" for f in faults if f["type"] != "missing"]
    parts = [f"missing {_and_list(missing)}"] if missing else []
    parts += others[:limit]
    if len(others) > limit:
        parts.append(f"and {len(others) - limit} more")
    return "; ".join(parts)


def _where(fault: Any) -> str:
    return ".".join(str(p) for p in fault["loc"]) or "(top level)"


def _and_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def load_workload(name_or_path: str | Path) -> Workload:
    """A workload by name (bench/workloads/NAME.toml) or by path, validated."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = WORKLOAD_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise LoopbenchError(f"unknown workload '{name_or_path}' (known: {', '.join(workload_names())})")
    if not path.is_file():
        raise LoopbenchError(f"workload file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LoopbenchError(f"workload file {path} is not valid TOML: {err}") from None
    try:
        return Workload.model_validate(raw)
    except ValidationError as err:
        raise LoopbenchError(f"workload file {path}: {validation_line(err)}") from None


def workload_names() -> list[str]:
    return sorted(p.stem for p in WORKLOAD_DIR.glob("*.toml"))
