"""The one vocabulary of checks: what a rejected run failed, as the trial, the judge, scoring and records name it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Check(StrEnum):
    """A check a run can fail. The values are what records store; never rename one (old records use them)."""

    PROTOCOL = "protocol"
    """The messages: every step logged once in order, every checkpoint present, names, shapes, dtypes, finite."""
    LOSS = "loss"
    """The audit: a logged loss against the float64 replay's."""
    END_STATE = "end-state"
    """The audit: the end state of a segment (a group or a single tensor) against the float64 replay's."""
    IMPLAUSIBLE = "implausible"
    """A time below the physical floor: the run's FLOPs at the machine's measured GEMM rate."""
    CRASH = "crash"
    """The submission raised, exited or was killed during import, prepare or train."""
    TIMEOUT = "timeout"
    """Setup or the timed phase took longer than the budget allows."""
    MEMORY = "memory"
    """The process tree (and its /dev/shm) held more memory than the budget."""
    CPU = "cpu"
    """More CPU time than the budget's cores x wall time, or a CPU affinity wider than the budget's."""
    PROCESSES = "processes"
    """A process of the submission still used CPU after train returned."""
    CLOCK = "clock"
    """The submission replaced a clock function of its process."""


@dataclass(frozen=True)
class Failure:
    """Why a run is rejected: the check and a message; `reason` is how the user reads it."""

    check: Check
    message: str

    @property
    def reason(self) -> str:
        # protocol violations read "protocol: ..." wherever they come from (the worker, the reader, the audit)
        return f"protocol: {self.message}" if self.check is Check.PROTOCOL else self.message
