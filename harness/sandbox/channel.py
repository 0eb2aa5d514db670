"""The worker's end of the channel: the sink behind the submission's `log`, and the worker's own reports.

Steps and checkpoints go into the log area (shared memory the parent owns, read after the clock); only small
headers cross the pipe, so that the parent learns a checkpoint's layout and when the final one is complete.

Every checkpoint's step is written beside its slot. A checkpoint handed over as the same arrays as the previous
one (the usual case: a loop checkpoints its own buffers) is copied by the plan the previous one left, one
memmove per run of adjacent memory, and sends no header unless it is the run's final one: the parent learns its
layout from the last header before it, after the clock, and is not woken on the run's cores meanwhile.
"""

from __future__ import annotations

import ctypes
import os
from typing import NoReturn

import numpy as np

from harness.contract import protocol, wire
from harness.contract.areas import LogArea
from harness.contract.checkpoint import Checkpoint

STEP_LIMIT = 2**62


class CopyPlan:
    """How a checkpoint's arrays were laid into their slot: its layout, and its source ranges (address, offset
    in the slot, bytes), adjacent ones merged. It holds the source arrays, so their memory outlives it."""

    def __init__(self, message: protocol.CheckpointMessage, chunks: list[np.ndarray]):
        self.tensors, self.nbytes = message.tensors, message.nbytes
        self.sources = chunks
        self.ranges: list[tuple[int, int, int]] = []
        at = 0
        for chunk in chunks:
            address = int(chunk.__array_interface__["data"][0])
            if self.ranges and self.ranges[-1][0] + self.ranges[-1][2] == address:
                first, offset, n = self.ranges[-1]
                self.ranges[-1] = (first, offset, n + chunk.nbytes)
            else:
                self.ranges.append((address, at, chunk.nbytes))
            at += chunk.nbytes

    @staticmethod
    def of(checkpoint: Checkpoint, message: protocol.CheckpointMessage, chunks: list[np.ndarray]) -> CopyPlan | None:
        """The plan, if every chunk is the checkpoint's own memory (not a contiguous copy of a strided view)."""
        arrays = [a for group in checkpoint.groups().values() for a in group.values()]
        for array, chunk in zip(arrays, chunks, strict=True):
            if array.__array_interface__["data"][0] != chunk.__array_interface__["data"][0]:
                return None
        return CopyPlan(message, chunks)


class Channel:
    def __init__(self, out_fd: int, area: LogArea | None = None, final_step: int | None = None):
        self.out = out_fd
        self.area = area
        self.final_step = final_step
        """The step of the run's last checkpoint, whose header stops the clock (None: every one sends its own)."""
        self.sent_checkpoints = 0
        self.plan: CopyPlan | None = None
        self._base = 0

    def send(self, message: protocol.Message, same_layout: bool = False) -> None:
        wire.write_frame(self.out, protocol.encode(message, same_layout))

    def fail(self, phase: str, message: str, detail: str = "") -> NoReturn:
        """Report a failure and end the process: nothing the submission does can catch it."""
        self.send(protocol.ErrorMessage(phase, message, detail))
        os._exit(3)

    # the LogSink of harness.contract.log

    def step(self, s: int, loss: float) -> None:
        assert self.area is not None, "steps are logged only once the log area is mapped"
        n = int(self.area.count[0])
        if n >= self.area.layout.step_capacity:
            self.fail("protocol", f"more than {self.area.layout.step_capacity} steps were logged")
        if not -STEP_LIMIT < s < STEP_LIMIT:
            self.fail("protocol", f"log.step got step {s}, far outside the run's steps")
        self.area.steps[n], self.area.losses[n] = s, loss
        self.area.count[0] = n + 1

    def _next_slot(self) -> int:
        assert self.area is not None, "checkpoints are logged only once the log area is mapped"
        index = self.sent_checkpoints
        if index >= self.area.layout.slots:
            self.fail("protocol", f"more checkpoints than the run has ({self.area.layout.slots})")
        return index

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        index = self._next_slot()
        assert self.area is not None
        message, chunks = protocol.checkpoint_message(checkpoint, slot=index)
        if message.nbytes > self.area.layout.slot_size:
            self.fail("protocol", f"checkpoint after step {checkpoint.step} does not fit its slot (wrong shapes?)")
        slot = self.area.slot(index, message.nbytes)
        at = 0
        for chunk in chunks:
            slot[at : at + chunk.nbytes] = chunk.reshape(-1).view(np.uint8)
            at += chunk.nbytes
        self.plan = CopyPlan.of(checkpoint, message, chunks)
        self._written(index, checkpoint.step)
        self.send(message)

    def repeat_checkpoint(self, s: int) -> bool:
        """Checkpoint after step s made of the very arrays of the previous one: copied by its plan. False if there
        is no plan (the caller then hands the checkpoint over as a new one)."""
        plan = self.plan
        if plan is None:
            return False
        index = self._next_slot()
        assert self.area is not None
        if not self._base:
            self._base = int(np.frombuffer(self.area.buffer, np.uint8).__array_interface__["data"][0])
        start = self._base + self.area.layout.slot_offset(index)
        for address, offset, n in plan.ranges:
            ctypes.memmove(start + offset, address, n)
        self._written(index, s)
        if self.final_step is None or s == self.final_step:
            self.send(protocol.CheckpointMessage(s, plan.tensors, plan.nbytes, index), same_layout=True)
        return True

    def _written(self, index: int, s: int) -> None:
        assert self.area is not None
        if not -STEP_LIMIT < s < STEP_LIMIT:
            self.fail("protocol", f"log.checkpoint got step {s}, far outside the run's steps")
        self.area.slot_steps[index] = s
        self.area.slot_count[0] = index + 1
        self.sent_checkpoints = index + 1

    def reject(self, message: str) -> NoReturn:
        self.fail("protocol", message)
