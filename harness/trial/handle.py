"""The parent's handle on one worker: its process under the supervisor, its channels, its log area, its cgroup.

Everything the session needs to know about the process goes through here: sending orders (and the data's
descriptor), the next event, what the kernel or the watch counted, freezing, killing, and how it ended.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from harness.contract import wire
from harness.contract.areas import LogArea, LogLayout, memfd
from harness.contract.spec import Budget, Task
from harness.trial.cgroups import TrialCgroup
from harness.trial.folder import clean_env, widen_pipe
from harness.trial.processes import kill_tree, stop_tree
from harness.trial.reader import Event, OverMemory, Reader, TimedOut
from harness.trial.watch import POLL_S, Watch

WORKER_MODULE = "harness.sandbox.worker"


class WorkerHandle:
    def __init__(self, task: Task, budget: Budget, root: Path, cpus: list[int], log_layout: LogLayout):
        self.task, self.budget, self.root, self.cpus = task, budget, root, cpus
        self.log_layout = log_layout
        self.cgroup = TrialCgroup.create(root.name, cpus, budget.memory_mib * 2**20)
        self.watch: Watch | None = None
        self.proc: psutil.Popen | None = None
        self.spawned_at = 0.0
        area_fd = memfd("loopbench-log", log_layout.size)
        os.posix_fallocate(area_fd, 0, log_layout.size)  # its pages are the harness's, not charged to the run
        self.area = LogArea.map(area_fd, log_layout)
        self._area_fd = area_fd
        self._ctl, self._ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._msg, self._msg_w = os.pipe()
        widen_pipe(self._msg_w)
        self.reader = Reader(self._msg, task)

    def spawn(self) -> None:
        child_fds = (self._ctl_child.fileno(), self._msg_w, self._area_fd)
        command = [
            sys.executable,
            "-s",
            "-P",
            "-m",
            WORKER_MODULE,
            "--ctl",
            str(child_fds[0]),
            "--out",
            str(child_fds[1]),
            "--log-area",
            str(child_fds[2]),
            "--cpus",
            ",".join(map(str, self.cpus)),
            "--root",
            str(self.root),
            "--shm-mib",
            str(self.budget.memory_mib),
        ]
        command += [arg for path in (self.cgroup.join_paths if self.cgroup else []) for arg in ("--cgroup", path)]
        with open(self.root / "worker.log", "wb") as log_file, open(os.devnull, "rb") as devnull:
            self.spawned_at = time.perf_counter()
            self.proc = psutil.Popen(
                command,
                cwd=self.root / "submission",
                env=clean_env(self.root, self.budget.cores),
                pass_fds=child_fds,
                stdin=devnull,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        for fd in (self._ctl_child.detach(), self._msg_w, self._area_fd):
            os.close(fd)
        self.reader.start()
        if self.cgroup is None:
            self.watch = Watch(self.budget, self.cpus, self.proc.pid, self.log_layout.size)
            self.watch.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the worker was spawned"
        return int(self.proc.pid)

    # ------------------------------------------------------------ the channel

    def send(self, header: dict[str, object]) -> None:
        """An order to the worker; if it is already gone, the reader reports how it ended."""
        try:
            wire.write_frame(self._ctl.fileno(), header)
        except OSError:
            pass

    def send_fd(self, fd: int) -> None:
        try:
            socket.send_fds(self._ctl, [b"D"], [fd])
        except OSError:
            pass  # the worker is gone: the reader says how

    def next_event(self, deadline: float, on_idle: Callable[[], None] | None = None, idle_s: float = 0.5) -> Event:
        """The next event from the worker, or TimedOut / OverMemory when the clock or the watch says so."""
        while True:
            if self.watch is not None and self.watch.memory_exceeded:
                return OverMemory(time.perf_counter())
            left = deadline - time.perf_counter()
            if left <= 0:
                return TimedOut(time.perf_counter())
            wait = min(left, idle_s if on_idle else left, POLL_S if self.watch else left)
            try:
                event: Event = self.reader.events.get(timeout=wait)
                return event
            except queue.Empty:
                if on_idle:
                    on_idle()

    # ------------------------------------------------------------ what the kernel (or the watch) counted

    def cpu_seconds(self) -> float:
        if self.cgroup is not None:
            return self.cgroup.cpu_seconds()
        return self.watch.cpu_seconds() if self.watch else 0.0

    def peak_mib(self) -> float:
        if self.cgroup is not None:
            return self.cgroup.peak_mib()
        return self.watch.peak_mib if self.watch else 0.0

    def over_memory(self) -> bool:
        return bool((self.watch and self.watch.memory_exceeded) or (self.cgroup and self.cgroup.oom_killed()))

    def memory_reason(self) -> str:
        if self.cgroup is not None:
            return f"memory budget exceeded: the kernel stopped the run at its limit of {self.budget.memory_mib} MiB"
        return f"memory budget exceeded: peak {self.peak_mib():.0f} MiB of {self.budget.memory_mib} MiB"

    def hit_process_limit(self) -> bool:
        return bool(self.cgroup and self.cgroup.pids_limit_hit())

    def widened(self) -> str | None:
        return self.watch.widened if self.watch else None

    def cgroup_procs(self) -> list[int]:
        return self.cgroup.procs() if self.cgroup else []

    # ------------------------------------------------------------ freezing, killing, how it ended

    def freeze(self, frozen: bool) -> None:
        """Stop (or resume) every process of the run: nothing it does after the clock changes what it logged."""
        if self.cgroup is not None:
            try:
                self.cgroup.freeze(frozen)
                return
            except OSError:
                pass
        if self.proc is not None:
            stop_tree(self.proc.pid, frozen)

    def close(self) -> None:
        """Kill every process of the run, close the channels, remove the cgroup (the folder is the session's)."""
        if self.watch is not None:
            self.watch.stop.set()
            if self.watch.is_alive():
                self.watch.join()  # a watch still killing must finish before the next trial's processes exist
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if self.proc is not None:
            kill_tree(self.proc.pid)
            try:
                self.proc.wait(timeout=5)
            except psutil.Error:
                pass
        for close in (self._ctl.close, self._ctl_child.close, lambda: os.close(self._msg)):
            try:
                close()
            except OSError:
                pass
        if self.cgroup is not None:
            self.cgroup.remove()

    def how_it_ended(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=2)
        except psutil.TimeoutExpired:
            return "the process closed its channel to the harness without reporting"
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"the process ended ({how}) without reporting{self._last_words()}"

    def _last_words(self) -> str:
        """The last line the worker wrote to its stderr, where there is one: often the reason itself."""
        try:
            lines = [
                line for line in (self.root / "worker.log").read_text(errors="replace").splitlines() if line.strip()
            ]
        except OSError:
            return ""
        return f"; its last words: {lines[-1].strip()[:300]}" if lines else ""
