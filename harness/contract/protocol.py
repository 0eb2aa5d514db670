"""The messages between a trial's worker and its parent, and the pure checks of what a run reported (SPEC §5, §6.1).

Steps and checkpoint arrays travel through the log area (harness.contract.areas); the pipe carries only
these few headers.

Every header that crosses the pipe is built and read here, so both sides agree by construction. The parent
reads with `parse_message`, which trusts nothing: a header that is not exactly one of these messages raises
ProtocolError. `check_sequence` and `first_non_finite` are the protocol checks of a completed run.
No process, pipe or clock here: everything is a function of its arguments, and tested as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.contract.checkpoint import GROUP_LABEL, GROUPS, Checkpoint
from harness.contract.spec import Task

DTYPES = ("float32", "float64")


class ProtocolError(Exception):
    """What the worker sent breaks the protocol; the message reads after "protocol: "."""


@dataclass(frozen=True)
class Ready:
    """Imports and prepare(task) are done: the clock may start."""


@dataclass(frozen=True)
class TensorSpec:
    group: str
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class CheckpointMessage:
    """A checkpoint's layout: its arrays are in slot `slot` of the log area, packed in this order."""

    s: int
    tensors: tuple[TensorSpec, ...]
    nbytes: int
    slot: int = 0


@dataclass(frozen=True)
class ErrorMessage:
    phase: str
    """import, prepare, train, or protocol (a bad value handed to log)."""
    message: str
    detail: str = ""


@dataclass(frozen=True)
class Done:
    """train() returned; the clocks of the worker that the submission replaced, by name."""

    clocks_patched: tuple[str, ...] = ()


Message = Ready | CheckpointMessage | ErrorMessage | Done


@dataclass(frozen=True)
class Order:
    """The parent's first order: what to load, the task, and the log area's layout (its descriptor was
    inherited at spawn); the worker maps the area, runs prepare, and answers Ready (or an error)."""

    task: dict[str, Any]
    folder: str
    entry_file: str
    entry_function: str
    log_layout: dict[str, Any]


@dataclass(frozen=True)
class Go:
    """The parent's second order, as the clock starts: the data area's layout; its descriptor follows on the
    socket as ancillary data (SCM_RIGHTS), since it must not exist in the worker before the clock."""

    data_layout: dict[str, Any]


def encode_order(order: Order | Go) -> dict[str, Any]:
    if isinstance(order, Go):
        return {"type": "go", "data_layout": order.data_layout}
    return {
        "type": "task",
        "task": order.task,
        "folder": order.folder,
        "entry_file": order.entry_file,
        "entry_function": order.entry_function,
        "log_layout": order.log_layout,
    }


def parse_order(header: dict[str, Any]) -> Order | Go:
    """An order from the parent (the worker trusts its parent: a bad order is a bug, and raises)."""
    if header["type"] == "go":
        return Go(header["data_layout"])
    return Order(header["task"], header["folder"], header["entry_file"], header["entry_function"], header["log_layout"])


# ---------------------------------------------------------------- writing (the worker's side)


def encode(message: Message, same_layout: bool = False) -> dict[str, Any]:
    """The JSON header of a message. A checkpoint laid out as the previous one may say so (`same_layout`)
    instead of listing its tensors again: the parent reads its header during the clock."""
    if isinstance(message, Ready):
        return {"type": "ready"}
    if isinstance(message, CheckpointMessage):
        if same_layout:
            return {"type": "checkpoint", "s": message.s, "slot": message.slot, "same": True}
        tensors = [[t.group, t.name, t.dtype, list(t.shape)] for t in message.tensors]
        return {
            "type": "checkpoint",
            "s": message.s,
            "tensors": tensors,
            "nbytes": message.nbytes,
            "slot": message.slot,
        }
    if isinstance(message, ErrorMessage):
        return {
            "type": "error",
            "phase": message.phase,
            "message": message.message[:2000],
            "detail": message.detail[-4000:],
        }
    return {"type": "done", "clocks_patched": list(message.clocks_patched)}


_DTYPE_NAMES = {np.dtype(name): name for name in DTYPES}


def checkpoint_message(checkpoint: Checkpoint, slot: int = 0) -> tuple[CheckpointMessage, list[np.ndarray]]:
    """A checkpoint's header and its arrays in the order of the header (C-contiguous, as the parent reads them)."""
    specs, chunks = [], []
    for group, arrays in checkpoint.groups().items():
        for name, array in arrays.items():
            chunk = np.ascontiguousarray(array)
            dtype = _DTYPE_NAMES.get(chunk.dtype) or chunk.dtype.name
            specs.append(TensorSpec(group, name, dtype, tuple(chunk.shape)))
            chunks.append(chunk)
    return CheckpointMessage(checkpoint.step, tuple(specs), sum(c.nbytes for c in chunks), slot), chunks


# ---------------------------------------------------------------- reading (the parent's side)


def parse_message(
    header: dict[str, Any], shapes: dict[str, tuple[int, ...]], previous: CheckpointMessage | None = None
) -> Message:
    """One header from the worker as a message, checked against the task's parameter shapes; `previous` is the
    last checkpoint message read, whose layout a checkpoint may repeat."""
    kind = header.get("type")
    if kind == "ready":
        return Ready()
    if kind == "checkpoint":
        if "same" in header:
            return _repeated_layout(header, previous)
        return _checkpoint_layout(header, shapes)
    if kind == "error":
        phase, message, detail = header.get("phase"), header.get("message"), header.get("detail", "")
        if not (isinstance(phase, str) and isinstance(message, str) and isinstance(detail, str)):
            raise ProtocolError("an error message is malformed")
        return ErrorMessage(phase, message, detail)
    if kind == "done":
        patched = header.get("clocks_patched") or []
        if not isinstance(patched, list) or not all(isinstance(x, str) for x in patched):
            raise ProtocolError("a done message is malformed")
        return Done(tuple(patched))
    raise ProtocolError(f"unknown message type {kind!r}")


def _repeated_layout(header: dict[str, Any], previous: CheckpointMessage | None) -> CheckpointMessage:
    s, slot = header.get("s"), header.get("slot")
    if header.get("same") is not True or type(s) is not int or type(slot) is not int or slot < 0 or len(header) != 4:
        raise ProtocolError("a checkpoint message is malformed")
    if previous is None:
        raise ProtocolError(f"checkpoint after step {s}: it repeats the layout of a checkpoint that never came")
    return CheckpointMessage(s, previous.tensors, previous.nbytes, slot)


def _checkpoint_layout(header: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> CheckpointMessage:
    s, tensors, slot = header.get("s"), header.get("tensors"), header.get("slot")
    if type(s) is not int or not isinstance(tensors, list) or type(slot) is not int or slot < 0:
        raise ProtocolError("a checkpoint message is malformed")
    where = f"checkpoint after step {s}"
    seen: dict[str, set[str]] = {g: set() for g in GROUPS}
    specs = [_tensor_spec(item, where, shapes, seen) for item in tensors]
    for group in GROUPS:
        missing = [n for n in shapes if n not in seen[group]]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ProtocolError(f"{where}: {group} is missing {missing[0]}{more}")
    expected = sum(t.nbytes for t in specs)
    if header.get("nbytes") != expected:
        raise ProtocolError(f"{where}: the message announces {header.get('nbytes')} bytes, its tensors need {expected}")
    return CheckpointMessage(s, tuple(specs), expected, slot)


def _tensor_spec(item: Any, where: str, shapes: dict[str, tuple[int, ...]], seen: dict[str, set[str]]) -> TensorSpec:
    if not (isinstance(item, list) and len(item) == 4):
        raise ProtocolError(f"{where}: a malformed tensor entry")
    group, name, dtype, shape = item
    if not all(isinstance(x, str) for x in (group, name, dtype)) or not isinstance(shape, list):
        raise ProtocolError(f"{where}: a malformed tensor entry")
    if group not in seen:
        raise ProtocolError(f"{where}: unknown group {group!r}")
    if name not in shapes:
        raise ProtocolError(f"{where}: {group} has an unexpected tensor {name!r}")
    if name in seen[group]:
        raise ProtocolError(f"{where}: {group}['{name}'] is given twice")
    if dtype not in DTYPES:
        raise ProtocolError(f"{where}: {group}['{name}'] has dtype {dtype}; checkpoints must be float32 or float64")
    if tuple(shape) != shapes[name]:
        raise ProtocolError(f"{where}: {group}['{name}'] has shape {tuple(shape)}, expected {shapes[name]}")
    seen[group].add(name)
    return TensorSpec(group, name, dtype, shapes[name])


# ---------------------------------------------------------------- the run as a whole


def complete_checkpoints(
    sent: list[CheckpointMessage], written: list[int]
) -> tuple[list[CheckpointMessage], str | None]:
    """Every checkpoint of a run in slot order, and the first problem (or None): those whose header came (`sent`)
    and those the log area lists (`written`, the step of each slot) without one, which have the layout of the
    last header before them (the worker sends a header only for a new layout and for the final checkpoint)."""
    by_slot = {m.slot: m for m in sent}
    count = max(len(written), max(by_slot, default=-1) + 1)
    out: list[CheckpointMessage] = []
    layout: CheckpointMessage | None = None
    for index in range(count):
        message = by_slot.get(index)
        step = written[index] if index < len(written) else None
        if message is not None:
            if step is not None and step != message.s:
                return out, f"checkpoint slot {index}: its header says step {message.s}, the log area step {step}"
            layout = message
        elif step is None:
            return out, f"checkpoint slot {index} was never written"
        elif layout is None:
            return out, f"checkpoint after step {step} came without any header to give its layout"
        else:
            message = CheckpointMessage(step, layout.tensors, layout.nbytes, index)
        out.append(message)
    return out, None


def check_sequence(task: Task, losses: list[tuple[int, float]], checkpoint_steps: list[int]) -> str | None:
    """The first protocol violation of a completed run's steps and checkpoints, or None.

    Every step logged once, in order, with a finite loss; every due checkpoint present once, in order, and
    no other.
    """
    seen: set[int] = set()
    expected_next = 0
    for s, loss in losses:
        if s in seen:
            return f"step {s} was logged twice"
        if not 0 <= s < task.steps:
            return f"step {s} is outside the run's steps 0-{task.steps - 1}"
        if s != expected_next:
            if s > expected_next:
                return f"step {expected_next} was never logged (the next logged step is {s})"
            return f"step {s} was logged out of order"
        if not math.isfinite(loss):
            return f"the loss of step {s} is not finite ({loss})"
        seen.add(s)
        expected_next = s + 1
    if expected_next != task.steps:
        return f"step {expected_next} was never logged"
    due = task.checkpoint_steps()
    for s in checkpoint_steps:
        if s not in due:
            return f"an unexpected checkpoint after step {s} (due after steps {_short(due)})"
    for s in due:
        count = checkpoint_steps.count(s)
        if count != 1:
            return f"no checkpoint after step {s}" if count == 0 else f"two checkpoints after step {s}"
    if checkpoint_steps != sorted(checkpoint_steps):
        return "checkpoints arrived out of order"
    return None


def first_non_finite(checkpoints: list[Checkpoint]) -> str | None:
    """The first checkpoint tensor holding a NaN or an infinity, or None."""
    for cp in checkpoints:
        for group, arrays in cp.groups().items():
            for name, array in arrays.items():
                if not np.isfinite(array).all():
                    return (
                        f"checkpoint after step {cp.step}: {GROUP_LABEL[group]}{name} holds values that are not finite"
                    )
    return None


def _short(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"
