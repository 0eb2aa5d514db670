"""The worker's end of the channel: the sink behind the submission's `log`, and the worker's own reports.

Steps and checkpoints go into the log area (shared memory the parent owns, read after the clock); only a
small header per checkpoint crosses the pipe, so that the parent learns when the final one is complete.
"""

from __future__ import annotations

import os
from typing import NoReturn

import numpy as np

from harness.contract import protocol, wire
from harness.contract.areas import LogArea
from harness.contract.checkpoint import Checkpoint

STEP_LIMIT = 2**62


class Channel:
    def __init__(self, out_fd: int, area: LogArea | None = None):
        self.out = out_fd
        self.area = area
        self.sent_checkpoints = 0

    def send(self, message: protocol.Message) -> None:
        wire.write_frame(self.out, protocol.encode(message))

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

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        assert self.area is not None, "checkpoints are logged only once the log area is mapped"
        index = self.sent_checkpoints
        if index >= self.area.layout.slots:
            self.fail("protocol", f"more checkpoints than the run has ({self.area.layout.slots})")
        message, chunks = protocol.checkpoint_message(checkpoint, slot=index)
        if message.nbytes > self.area.layout.slot_size:
            self.fail("protocol", f"checkpoint after step {checkpoint.step} does not fit its slot (wrong shapes?)")
        slot = self.area.slot(index, message.nbytes)
        at = 0
        for chunk in chunks:
            slot[at : at + chunk.nbytes] = chunk.reshape(-1).view(np.uint8)
            at += chunk.nbytes
        self.sent_checkpoints = index + 1
        self.send(message)

    def reject(self, message: str) -> NoReturn:
        self.fail("protocol", message)
