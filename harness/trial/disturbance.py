"""What a run lost to the rest of the machine while its clock ran, measured from outside it (SPEC §7).

- **others' CPU**: how busy the budget's CPUs were (from /proc/stat), minus the run's own CPU time and this
  process's: the CPU time that other processes took on the run's cores;
- **steal**: time the hypervisor gave the budget's CPUs to someone else (/proc/stat);
- **runqueue wait**: how long the run's threads were runnable but not running (/proc/PID/task/TID/schedstat),
  which also counts a run's own threads waiting for each other;
- **granted**: the run's CPU time over cores x wall time.

Nothing here decides: the figures go into the record, and scoring's policy (harness.scoring.disturbance)
reads them.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.trial.processes import tree

TICK_S = 0.01
"""/proc/stat counts in USER_HZ ticks (1/100 s on Linux)."""


@dataclass(frozen=True)
class CpuSample:
    busy_s: float
    """Non-idle, non-steal time of the budget's CPUs since boot."""
    steal_s: float
    own_s: float
    """This process's CPU time (every thread)."""


def cpu_sample(cpus: list[int]) -> CpuSample:
    busy = steal = 0.0
    wanted = {f"cpu{c}" for c in cpus}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in wanted:
                user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(v) for v in fields[1:9])
                busy += (user + nice + system + irq + softirq) * TICK_S
                steal += stolen * TICK_S
    own = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSample(busy, steal, own.ru_utime + own.ru_stime)


def thread_waits(root: int) -> dict[tuple[int, int], float]:
    """(pid, tid) -> seconds each thread of a process tree has waited in a runqueue since it started."""
    waits = {}
    for p in tree(root):
        try:
            for task in Path(f"/proc/{p.pid}/task").iterdir():
                fields = (task / "schedstat").read_text().split()
                waits[(p.pid, int(task.name))] = int(fields[1]) / 1e9
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
    return waits


@dataclass(frozen=True)
class Lost:
    """The figures of one run; every figure in seconds over the run's wall time."""

    wall_s: float
    cores: int
    others_cpu_s: float
    steal_s: float
    wait_s: float
    cpu_s: float

    @property
    def capacity_s(self) -> float:
        return self.cores * self.wall_s

    @property
    def granted(self) -> float:
        return self.cpu_s / self.capacity_s if self.capacity_s else 0.0


def lost(
    before: CpuSample,
    after: CpuSample,
    waits_before: dict[tuple[int, int], float],
    waits_after: dict[tuple[int, int], float],
    wall_s: float,
    cores: int,
    run_cpu_s: float,
) -> Lost:
    """What the run lost between two samples, given its own CPU time over the same interval."""
    others = (after.busy_s - before.busy_s) - run_cpu_s - (after.own_s - before.own_s)
    wait = sum(w - waits_before.get(key, 0.0) for key, w in waits_after.items())
    return Lost(wall_s, cores, max(others, 0.0), max(after.steal_s - before.steal_s, 0.0), max(wait, 0.0), run_cpu_s)
