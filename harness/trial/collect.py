"""Reading what a run logged out of its log area, into the parent's own memory, after the clock."""

from __future__ import annotations

import math

import numpy as np

from harness.contract import protocol
from harness.contract.areas import LogArea
from harness.contract.checkpoint import GROUPS, Arrays, Checkpoint
from harness.trial.outcome import TrialOutcome


def collect(outcome: TrialOutcome, area: LogArea, messages: list[protocol.CheckpointMessage]) -> None:
    """The (step, loss) pairs and the arrays of every checkpoint whose header arrived, copied once (the caller
    has frozen the run, so nothing changes while this reads)."""
    used = area.layout.slot_offset(len(messages))
    snapshot = bytes(area.buffer[:used])
    private = LogArea(snapshot, area.layout)
    outcome.losses = private.logged()
    for index, message in enumerate(messages):
        groups: dict[str, Arrays] = {g: {} for g in GROUPS}
        at = area.layout.slot_offset(index)
        for spec in message.tensors:
            count = math.prod(spec.shape)
            groups[spec.group][spec.name] = np.frombuffer(snapshot, spec.dtype, count, at).reshape(spec.shape)
            at += spec.nbytes
        outcome.checkpoints.append(Checkpoint.of(message.s, groups))
