"""The worker's end of the pipe: the sink behind the submission's `log`, and the worker's own reports."""

from __future__ import annotations

import os
from typing import NoReturn

from harness.contract import protocol, wire
from harness.contract.checkpoint import Checkpoint


class Channel:
    """Frames to the parent. A checkpoint leaves the process at once, inside the clock (SPEC §5)."""

    def __init__(self, out_fd: int):
        self.out = out_fd

    def send(self, message: protocol.Message) -> None:
        wire.write_frame(self.out, protocol.encode(message))

    def fail(self, phase: str, message: str, detail: str = "") -> NoReturn:
        """Report a failure and end the process: nothing the submission does can catch it."""
        self.send(protocol.ErrorMessage(phase, message, detail))
        os._exit(3)

    # the LogSink of harness.contract.log

    def step(self, s: int, loss: float) -> None:
        self.send(protocol.StepMessage(s, loss))

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        message, chunks = protocol.checkpoint_message(checkpoint)
        self.send(message)
        for chunk in chunks:
            if chunk.nbytes:
                wire.write_all(self.out, chunk.data)

    def reject(self, message: str) -> NoReturn:
        self.fail("protocol", message)
