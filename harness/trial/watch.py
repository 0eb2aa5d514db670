"""The watch over a run where the kernel cannot do it (no cgroups): polling memory, CPU time and affinity.

With a cgroup (harness.trial.cgroups) the kernel enforces the memory limit and the CPUs and counts the CPU
time, and nothing polls. Without one, this thread polls the supervisor's process tree every POLL_S seconds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil

from harness.contract.cores import parse_cpu_list
from harness.contract.mounts import PRIVATE_TMPFS
from harness.contract.spec import Budget
from harness.trial.processes import kill_tree, tree

POLL_S = 0.05


def _rss_shmem(pid: int) -> int:
    """Resident shared memory of a process (its mapping of the log area shows there)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Watch(threading.Thread):
    def __init__(self, budget: Budget, cpus: list[int], supervisor: int, log_area_bytes: int):
        super().__init__(daemon=True)
        self.budget, self.cpus = budget, set(cpus)
        self.supervisor, self.log_area_bytes = supervisor, log_area_bytes
        self.peak_mib = 0.0
        self.memory_exceeded = False
        self.widened: str | None = None
        self.stop = threading.Event()

    def cpu_seconds(self) -> float:
        """CPU time of the live tree, the exited ones the tree reaped included (not those reaped elsewhere)."""
        total = 0.0
        for p in tree(self.supervisor):
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def _affinity_of(self, p: psutil.Process) -> set[int] | None:
        try:
            for task_dir in Path(f"/proc/{p.pid}/task").iterdir():
                for line in (task_dir / "status").read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        cpus = parse_cpu_list(line.split(":", 1)[1])
                        if not cpus <= self.cpus:
                            return cpus
        except OSError:
            pass
        return None

    def tmpfs_bytes(self) -> int:
        """RAM held in files of the run's private tmpfs mounts, which no process's RSS shows."""
        held = 0
        for point in PRIVATE_TMPFS:
            try:
                st = os.statvfs(f"/proc/{self.supervisor}/root{point}")
                held += (st.f_blocks - st.f_bfree) * st.f_frsize
            except OSError:
                continue
        return held

    def poll(self) -> None:
        used = self.tmpfs_bytes()
        for p in tree(self.supervisor):
            try:
                used += p.memory_info().rss - min(_rss_shmem(p.pid), self.log_area_bytes)
            except psutil.Error:
                continue
            if self.widened is None:
                wide = self._affinity_of(p)
                if wide:
                    self.widened = (
                        f"widened its CPU affinity to CPUs {sorted(wide)}, beyond the budget's {sorted(self.cpus)}"
                    )
        mib = used / 2**20
        self.peak_mib = max(self.peak_mib, mib)
        if mib > self.budget.memory_mib and not self.memory_exceeded:
            self.memory_exceeded = True
            kill_tree(self.supervisor)

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.poll()
