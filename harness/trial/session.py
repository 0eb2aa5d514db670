"""The trusted parent of one run: spawn the worker under the budget, hold the clock, watch it, collect its output.

The parent never imports submission code and never unpickles what the worker sends. It alone holds the
clock: from handing over the data to the arrival of the last checkpoint's final byte. It watches the
whole process tree (memory, CPU time, CPU affinity) and kills every process of the trial at its end;
as a child subreaper it inherits whatever the submission detaches, so nothing outlives a trial.

A session has three phases, each a method: `setup` (imports and prepare, capped, untimed), `timed_phase`
(the clock) and `after_clock` (train must return, nothing may be left running).
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np
import psutil

from harness.contract import protocol, wire
from harness.contract.checks import Check
from harness.contract.cores import budget_cpus
from harness.contract.spec import Budget, Task
from harness.contract.submission import Submission
from harness.trial.folder import clean_env, isolation_of, prepare_folder, widen_pipe
from harness.trial.outcome import TrialOutcome
from harness.trial.processes import become_subreaper, burning_leftovers, kill_all
from harness.trial.reader import Arrived, Ended, Event, OverMemory, Reader, TimedOut, Violated
from harness.trial.watch import POLL_S, Watch

EXIT_GRACE_S = 20.0
CPU_SLACK = 1.05
CPU_SLACK_S = 0.25
WORKER_MODULE = "harness.sandbox.worker"
DEFAULT_ISOLATION: dict[str, object] = {
    "pid_namespace": False,
    "ipc_namespace": False,
    "network_namespace": False,
    "read_only_filesystem": False,
    "user_namespace": False,
    "process_cleanup": "child subreaper and PID namespace: the whole tree is killed at the end",
}


class TrialSession:
    """One run of `submission` on `task` under `budget`, in a fresh process and folder (a context manager)."""

    def __init__(
        self, submission: Submission, task: Task, budget: Budget, on_step: Callable[[int], None] | None = None
    ):
        self.submission, self.task, self.budget, self.on_step = submission, task, budget, on_step
        self.cpus = budget_cpus(budget.cores)
        self.outcome = TrialOutcome()
        self.watch = Watch(budget, self.cpus)
        self.proc: psutil.Popen | None = None
        self.root: Path | None = None
        self._fds: list[int] = []

    # ------------------------------------------------------------ the process and its folder

    def __enter__(self) -> TrialSession:
        become_subreaper()
        kill_all()  # nothing of an earlier trial may run beside this one
        self.root = prepare_folder(self.submission)
        try:
            self._spawn()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _spawn(self) -> None:
        assert self.root is not None
        ctl_r, self._ctl = os.pipe()
        self._msg, msg_w = os.pipe()
        self._fds = [self._ctl, self._msg]
        widen_pipe(msg_w)
        command = [
            sys.executable,
            "-s",
            "-P",
            "-m",
            WORKER_MODULE,
            "--ctl",
            str(ctl_r),
            "--out",
            str(msg_w),
            "--cpus",
            ",".join(map(str, self.cpus)),
            "--root",
            str(self.root),
            "--shm-mib",
            str(self.budget.memory_mib),
        ]
        with open(self.root / "worker.log", "wb") as log_file, open(os.devnull, "rb") as devnull:
            self.spawned_at = time.perf_counter()
            self.proc = psutil.Popen(
                command,
                cwd=self.root / "submission",
                env=clean_env(self.root, self.budget.cores),
                pass_fds=(ctl_r, msg_w),
                stdin=devnull,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        os.close(ctl_r)
        os.close(msg_w)
        self.reader = Reader(self._msg, self.task)
        self.reader.start()
        self.watch.pid = self.proc.pid
        self.watch.start()
        order = protocol.Order(
            self.task.model_dump(),
            str(self.root / "submission"),
            self.submission.entry_file,
            self.submission.entry_function,
        )
        self._send(protocol.encode_order(order))

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.watch.stop.set()
        if self.watch.is_alive():
            self.watch.join()  # a watch still killing must finish before the next trial's processes exist
        kill_all()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except psutil.Error:
                pass
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if self.root is not None:
            try:
                self.outcome.stderr_tail = (self.root / "worker.log").read_text(errors="replace")[-3000:]
            except OSError:
                pass
            shutil.rmtree(self.root, ignore_errors=True)
        self.outcome.peak_memory_mib = round(self.watch.peak_mib, 1)
        self.outcome.isolation = {"cpus": self.cpus, **DEFAULT_ISOLATION, **self.outcome.isolation}

    def _send(self, header: dict[str, object]) -> None:
        """An order to the worker; if it is already gone, the reader reports how it ended."""
        try:
            wire.write_frame(self._ctl, header)
        except OSError:
            pass

    def _next(self, deadline: float) -> Event:
        """The next event from the worker, or TimedOut / OverMemory when the clock or the watch says so."""
        while True:
            if self.watch.memory_exceeded:
                return OverMemory(time.perf_counter())
            left = deadline - time.perf_counter()
            if left <= 0:
                return TimedOut(time.perf_counter())
            try:
                return self.reader.events.get(timeout=min(left, POLL_S))
            except queue.Empty:
                continue

    # ------------------------------------------------------------ how a failure reads

    def _memory_reason(self) -> str:
        return f"memory budget exceeded: peak {self.watch.peak_mib:.0f} MiB of {self.budget.memory_mib} MiB"

    def _crash(self, phase: str, error: protocol.ErrorMessage | None = None) -> bool:
        """Record why the worker stopped in `phase`; always False (the run is over)."""
        if self.watch.memory_exceeded:  # the watch killed it: that is the reason, not the crash it caused
            self.outcome.fail(Check.MEMORY, self._memory_reason())
        elif error is not None and error.phase == "protocol":
            self.outcome.fail(Check.PROTOCOL, error.message)
        elif error is not None:
            self.outcome.fail(Check.CRASH, f"crashed during {error.phase}: {error.message}")
        else:
            self.outcome.fail(Check.CRASH, f"crashed during {phase}: {self._how_it_ended()}")
        return False

    def _how_it_ended(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=2)
        except psutil.TimeoutExpired:
            return "the process closed its channel to the harness without reporting"
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"the process ended ({how}) without reporting"

    def _failed(self, event: Event, phase: str) -> bool:
        """Record the failure an event that is not a message means; always False."""
        if isinstance(event, TimedOut):
            limit = (
                f"setup (imports and prepare) took longer than {self.budget.prepare_s:.0f} s"
                if phase == "setup"
                else f"timed out after {self.budget.timeout_s:.0f} s"
            )
            self.outcome.fail(Check.TIMEOUT, limit)
        elif isinstance(event, OverMemory):
            self.outcome.fail(Check.MEMORY, self._memory_reason())
        elif isinstance(event, Violated):
            self.outcome.fail(Check.PROTOCOL, event.message)
        else:
            self._crash(phase)
        return False

    # ------------------------------------------------------------ the three phases

    def setup(self) -> bool:
        """Imports and prepare(task), capped, untimed; True when the worker is ready for the clock."""
        event = self._next(self.spawned_at + self.budget.prepare_s)
        if not isinstance(event, Arrived):
            return self._failed(event, "setup")
        if not isinstance(event.message, protocol.Ready):
            return self._crash("setup", event.message if isinstance(event.message, protocol.ErrorMessage) else None)
        assert self.proc is not None and self.root is not None
        self.outcome.setup_seconds = event.at - self.spawned_at
        self.outcome.isolation = isolation_of(self.proc.pid, self.root)
        return True

    def timed_phase(self, params: dict[str, np.ndarray], batches: np.ndarray) -> bool:
        """The clock: from handing over the data to the arrival of the final checkpoint; True if it arrived."""
        assert self.root is not None
        final_step = self.task.checkpoint_steps()[-1]
        data_dir = self.root / "data"
        cpu_start = self.watch.cpu_seconds()
        t0 = time.perf_counter()
        np.save(data_dir / "batches.npy", np.ascontiguousarray(batches))
        np.savez(data_dir / "params.npz", **params)  # type: ignore[arg-type]  # the stub reads kwargs as options
        for f in data_dir.iterdir():
            f.chmod(0o444)
        self._send(protocol.encode_order(protocol.Go(str(data_dir))))
        while True:
            event = self._next(t0 + self.budget.timeout_s)
            if isinstance(event, TimedOut):
                self.outcome.seconds = event.at - t0
            if not isinstance(event, Arrived):
                return self._failed(event, "train")
            if not self._receive(event, final_step):
                return False
            if event.checkpoint is not None and event.checkpoint.step == final_step:
                break
        self.outcome.seconds = event.at - t0
        self.outcome.cpu_seconds = self.watch.cpu_seconds() - cpu_start
        self.watch.poll()
        return True

    def _receive(self, event: Arrived, final_step: int) -> bool:
        """One message inside the clock; False (and the failure recorded) when it ends the run."""
        message = event.message
        if isinstance(message, protocol.StepMessage):
            self.outcome.losses.append((message.s, message.loss))
            if self.on_step:
                self.on_step(message.s)
            return True
        if event.checkpoint is not None:
            self.outcome.checkpoints.append(event.checkpoint)
            return True
        if isinstance(message, protocol.ErrorMessage):
            return self._crash("train", message)
        if isinstance(message, protocol.Done):
            self.outcome.fail(Check.PROTOCOL, f"train returned without a checkpoint after the last step {final_step}")
        else:
            self.outcome.fail(Check.PROTOCOL, f"a {type(message).__name__} message during the run")
        return False

    def after_clock(self) -> None:
        """train must return normally, nothing may be left running, and the budget's CPU must have sufficed."""
        assert self.proc is not None
        event = self._next(time.perf_counter() + EXIT_GRACE_S)
        patched: tuple[str, ...] = ()
        leftovers: list[str] = []
        if isinstance(event, Arrived) and isinstance(event.message, protocol.Done):
            patched = event.message.clocks_patched
            leftovers = burning_leftovers(self.proc)
            self.outcome.leftover_processes = len(leftovers)
        elif isinstance(event, Arrived) and isinstance(event.message, protocol.ErrorMessage):
            self._crash("train", event.message)
        elif isinstance(event, Arrived):
            self.outcome.fail(
                Check.PROTOCOL, f"a {protocol.encode(event.message)['type']} message after the final checkpoint"
            )
        elif isinstance(event, TimedOut):
            self.outcome.fail(
                Check.TIMEOUT, f"train did not return within {EXIT_GRACE_S:.0f} s of its final checkpoint"
            )
        elif isinstance(event, Ended):
            self.outcome.fail(Check.PROTOCOL, "the process ended after its final checkpoint without train returning")
        else:
            self._failed(event, "train")
        self._check_cpu()
        if leftovers:
            s = "es" if len(leftovers) > 1 else ""
            self.outcome.fail(
                Check.PROCESSES, f"left {len(leftovers)} process{s} running after the run ({leftovers[0]})"
            )
        if patched:
            self.outcome.fail(Check.CLOCK, f"tampered with the clocks of its process ({', '.join(patched)} replaced)")

    def _check_cpu(self) -> None:
        cores, out = len(self.cpus), self.outcome
        if self.watch.widened:
            out.fail(Check.CPU, self.watch.widened)
        if out.cpu_seconds > cores * out.seconds * CPU_SLACK + CPU_SLACK_S:
            out.fail(
                Check.CPU,
                f"used more CPU than its budget: {out.cpu_seconds:.1f} CPU-s in {out.seconds:.1f} s "
                f"on {cores} core{'s' if cores > 1 else ''}",
            )


def run_trial(
    submission: Submission,
    task: Task,
    budget: Budget,
    params: dict[str, np.ndarray],
    batches: np.ndarray,
    on_step: Callable[[int], None] | None = None,
) -> TrialOutcome:
    """One run of `submission` on (task, params, batches) under `budget`, in a fresh process and folder."""
    with TrialSession(submission, task, budget, on_step) as session:
        if session.setup() and session.timed_phase(params, batches):
            session.after_clock()
    return session.outcome
