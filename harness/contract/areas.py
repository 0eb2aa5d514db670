"""The two shared-memory areas of a run, laid out the same way on both sides of the pipe.

- The **data area** holds the run's batches and initial parameters. The parent writes it before the clock
  into an anonymous memory file that the worker cannot reach, and hands the file over (SCM_RIGHTS) as the
  clock starts; the worker maps it: the batches read-only, the parameters copy-on-write. Nothing is copied
  inside the clock.
- The **log area** receives what the submission logs: every (step, loss) pair, and each checkpoint in a slot
  of its own. The worker maps it before the clock (pre-faulted) and copies into it as `log` is called; the
  parent reads it only after the clock, with the trial's processes frozen, so nothing is converted or
  copied on the submission's cores while it runs.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.contract.checkpoint import GROUPS, Arrays
from harness.contract.spec import Task, param_shapes

PAGE = mmap.PAGESIZE
MAX_ITEMSIZE = 8
"""A checkpoint's tensors may be float32 or float64: a slot has room for float64."""
STEP_HEADROOM = 16
"""Step records beyond the run's steps that the area takes before it refuses more (a repeated step, say,
is then reported by the protocol check rather than lost)."""


def _page_up(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def memfd(name: str, size: int) -> int:
    """An anonymous memory file of `size` bytes (no path: only a holder of the descriptor can reach it)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


# ---------------------------------------------------------------- the data area


@dataclass(frozen=True)
class DataLayout:
    batches_shape: tuple[int, int, int]
    params: tuple[tuple[str, tuple[int, ...], int], ...]
    """(name, shape, byte offset) of each parameter, float64, in SPEC order."""
    params_offset: int
    size: int

    @classmethod
    def of(cls, task: Task) -> DataLayout:
        shape = (task.steps, task.batch_size, task.ctx_len + 1)
        params_offset = _page_up(math.prod(shape) * 8)
        entries, at = [], params_offset
        for name, pshape in param_shapes(task).items():
            entries.append((name, pshape, at))
            at += math.prod(pshape) * 8
        return cls(shape, tuple(entries), params_offset, _page_up(at))

    def to_json(self) -> dict[str, Any]:
        return {
            "batches_shape": list(self.batches_shape),
            "params": [[n, list(s), o] for n, s, o in self.params],
            "params_offset": self.params_offset,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DataLayout:
        params = tuple((str(n), tuple(int(d) for d in s), int(o)) for n, s, o in raw["params"])
        shape = raw["batches_shape"]
        return cls((int(shape[0]), int(shape[1]), int(shape[2])), params, int(raw["params_offset"]), int(raw["size"]))


def write_data(layout: DataLayout, params: Arrays, batches: np.ndarray) -> int:
    """A new memory file holding the run's data as `layout` says; the caller owns (and closes) the descriptor."""
    fd = memfd("loopbench-data", layout.size)
    with mmap.mmap(fd, layout.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as area:
        view = np.frombuffer(area, dtype=np.int64, count=math.prod(layout.batches_shape)).reshape(layout.batches_shape)
        view[...] = batches
        for name, shape, offset in layout.params:
            np.frombuffer(area, np.float64, math.prod(shape), offset).reshape(shape)[...] = params[name]
        del view
    return fd


def map_data(fd: int, layout: DataLayout) -> tuple[Arrays, np.ndarray]:
    """The worker's view of the data: parameters it may write (privately), batches it may only read."""
    read_only = mmap.mmap(fd, layout.params_offset, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ)
    batches = np.frombuffer(read_only, dtype=np.int64, count=math.prod(layout.batches_shape)).reshape(
        layout.batches_shape
    )
    private = mmap.mmap(fd, layout.size, mmap.MAP_PRIVATE | mmap.MAP_POPULATE, mmap.PROT_READ | mmap.PROT_WRITE)
    params = {
        name: np.frombuffer(private, np.float64, math.prod(shape), offset).reshape(shape)
        for name, shape, offset in layout.params
    }
    return params, batches


# ---------------------------------------------------------------- the log area


@dataclass(frozen=True)
class LogLayout:
    step_capacity: int
    slot_size: int
    slots: int
    size: int

    @property
    def steps_offset(self) -> int:
        return PAGE  # the first page holds the step count

    @property
    def losses_offset(self) -> int:
        return self.steps_offset + 8 * self.step_capacity

    @property
    def slot_steps_offset(self) -> int:
        """The step of each checkpoint slot written (int64 each); their count is the first page's second int64."""
        return self.losses_offset + 8 * self.step_capacity

    @property
    def slots_offset(self) -> int:
        return _page_up(self.slot_steps_offset + 8 * self.slots)

    def slot_offset(self, index: int) -> int:
        return self.slots_offset + index * self.slot_size

    @classmethod
    def of(cls, task: Task) -> LogLayout:
        n_params = sum(math.prod(s) for s in param_shapes(task).values())
        capacity = task.steps + STEP_HEADROOM
        slot = _page_up(len(GROUPS) * n_params * MAX_ITEMSIZE)
        slots = len(task.checkpoint_steps())
        probe = cls(capacity, slot, slots, 0)
        return cls(capacity, slot, slots, probe.slots_offset + slots * slot)

    def to_json(self) -> dict[str, Any]:
        return {
            "step_capacity": self.step_capacity,
            "slot_size": self.slot_size,
            "slots": self.slots,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LogLayout:
        return cls(int(raw["step_capacity"]), int(raw["slot_size"]), int(raw["slots"]), int(raw["size"]))


class LogArea:
    """A mapping of the log area: the worker writes steps and checkpoint slots, the parent reads them."""

    def __init__(self, buffer: Any, layout: LogLayout):
        self.layout = layout
        self.buffer = buffer
        self.count = np.frombuffer(buffer, np.int64, 1, 0)
        self.slot_count = np.frombuffer(buffer, np.int64, 1, 8)
        self.slot_steps = np.frombuffer(buffer, np.int64, layout.slots, layout.slot_steps_offset)
        self.steps = np.frombuffer(buffer, np.int64, layout.step_capacity, layout.steps_offset)
        self.losses = np.frombuffer(buffer, np.float64, layout.step_capacity, layout.losses_offset)

    @classmethod
    def map(cls, fd: int, layout: LogLayout) -> LogArea:
        flags = mmap.MAP_SHARED | mmap.MAP_POPULATE  # pre-faulted: no page fault inside the clock
        return cls(mmap.mmap(fd, layout.size, flags, mmap.PROT_READ | mmap.PROT_WRITE), layout)

    def slot(self, index: int, nbytes: int) -> np.ndarray:
        """The bytes of checkpoint slot `index` (its first `nbytes`)."""
        return np.frombuffer(self.buffer, np.uint8, nbytes, self.layout.slot_offset(index))

    def written_slots(self) -> list[int]:
        """The step of every checkpoint slot the worker says it wrote, in slot order (at most the slots)."""
        n = int(min(max(int(self.slot_count[0]), 0), self.layout.slots))
        return [int(s) for s in self.slot_steps[:n].tolist()]

    def logged(self) -> list[tuple[int, float]]:
        """The (step, loss) pairs written so far, in the order they were logged (at most the capacity)."""
        n = int(min(max(int(self.count[0]), 0), self.layout.step_capacity))
        return [
            (int(s), float(loss)) for s, loss in zip(self.steps[:n].tolist(), self.losses[:n].tolist(), strict=True)
        ]
