"""What the parent measured and received in one run; the judge turns it into a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.contract.checkpoint import Checkpoint
from harness.contract.checks import Check, Failure
from harness.trial.disturbance import Lost


@dataclass
class TrialOutcome:
    failure: Failure | None = None
    """The first failure of the run; None if it completed (the audit is still to come)."""
    setup_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_mib: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    """As logged: float32 or float64 arrays, read-only, copied out of the log area after the clock."""
    isolation: dict[str, object] = field(default_factory=dict)
    leftover_processes: int = 0
    stderr_tail: str = ""
    lost: Lost | None = None
    """What the run lost to the rest of the machine while its clock ran."""

    @property
    def completed(self) -> bool:
        return self.failure is None

    def fail(self, check: Check, message: str) -> TrialOutcome:
        if self.failure is None:  # the first failure is the reason
            self.failure = Failure(check, message)
        return self
