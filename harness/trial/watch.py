"""The watch over a trial's process tree while it runs: peak memory (and the kill at the budget), CPU time, affinity."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil

from harness.contract.cores import parse_cpu_list
from harness.contract.spec import Budget
from harness.trial.processes import kill_all, trial_processes

POLL_S = 0.05


class Watch(threading.Thread):
    """Polls the trial's process tree every POLL_S seconds until stopped."""

    def __init__(self, budget: Budget, cpus: list[int]):
        super().__init__(daemon=True)
        self.budget, self.cpus = budget, set(cpus)
        self.peak_mib = 0.0
        self.memory_exceeded = False
        self.widened: str | None = None
        self.pid: int | None = None
        self.stop = threading.Event()

    def cpu_seconds(self) -> float:
        """CPU time of the live tree plus everything this process has reaped: the tree's total so far."""
        total = 0.0
        for p in trial_processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        own = os.times()
        return total + own.children_user + own.children_system

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

    def shm_bytes(self) -> int:
        """RAM held in files of the trial's private /dev/shm, which no process's RSS shows."""
        if self.pid is None:
            return 0
        try:
            st = os.statvfs(f"/proc/{self.pid}/root/dev/shm")
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        except OSError:
            return 0

    def poll(self) -> None:
        rss = self.shm_bytes()
        for p in trial_processes():
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
            if self.widened is None:
                wide = self._affinity_of(p)
                if wide:
                    self.widened = (
                        f"widened its CPU affinity to CPUs {sorted(wide)}, beyond the budget's {sorted(self.cpus)}"
                    )
        mib = rss / 2**20
        self.peak_mib = max(self.peak_mib, mib)
        if mib > self.budget.memory_mib and not self.memory_exceeded:
            self.memory_exceeded = True
            kill_all()

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.poll()
