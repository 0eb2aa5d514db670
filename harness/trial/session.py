"""The trusted parent of one run: spawn the worker under the budget, hold the clock, collect what it logged.

The parent never imports submission code and never unpickles what the worker sends. It alone holds the
clock: from handing over the data to the arrival of the final checkpoint's header. Inside the clock the
parent does nothing on the run's cores but wake for a few headers: the data were written before the clock
into a memory file handed over as it starts; the worker copies steps and checkpoints into the log area,
which the parent reads after the clock with the run frozen; the kernel (a cgroup) watches memory, CPUs and
CPU time, and the parent polls only where there is no cgroup.

A session has three phases, each a method: `setup` (imports and prepare, capped, untimed), `timed_phase`
(the clock) and `after_clock` (train must return, nothing may be left running).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from types import TracebackType

import numpy as np

from harness.contract import protocol
from harness.contract.areas import DataLayout, LogLayout, write_data
from harness.contract.checks import Check
from harness.contract.cores import budget_cpus
from harness.contract.spec import Budget, Task
from harness.contract.submission import Submission
from harness.trial import disturbance
from harness.trial.collect import collect
from harness.trial.folder import isolation_of, prepare_folder, remove_folder
from harness.trial.handle import WorkerHandle
from harness.trial.outcome import TrialOutcome
from harness.trial.processes import burning_leftovers
from harness.trial.reader import Arrived, Ended, Event, OverMemory, TimedOut, Violated

EXIT_GRACE_S = 20.0
CPU_SLACK = 1.05
CPU_SLACK_S = 0.25
DEFAULT_ISOLATION: dict[str, object] = {
    "pid_namespace": False,
    "ipc_namespace": False,
    "network_namespace": False,
    "read_only_filesystem": False,
    "user_namespace": False,
    "cgroup": False,
    "process_cleanup": "the supervisor's tree (and the run's cgroup or PID namespace where there is one) is killed",
}


class TrialSession:
    """One run of `submission` on `task` under `budget`, in a fresh process and folder (a context manager)."""

    def __init__(
        self, submission: Submission, task: Task, budget: Budget, on_step: Callable[[int], None] | None = None
    ):
        self.submission, self.task, self.budget, self.on_step = submission, task, budget, on_step
        self.cpus = budget_cpus(budget.cores)
        self.outcome = TrialOutcome()
        self.log_layout, self.data_layout = LogLayout.of(task), DataLayout.of(task)
        self.messages: list[protocol.CheckpointMessage] = []
        self._shown_steps = 0
        self._worker: WorkerHandle | None = None

    @property
    def worker(self) -> WorkerHandle:
        assert self._worker is not None, "the session has been entered"
        return self._worker

    # ------------------------------------------------------------ the process and its folder

    def __enter__(self) -> TrialSession:
        root = prepare_folder(self.submission)
        try:
            self._worker = WorkerHandle(self.task, self.budget, root, self.cpus, self.log_layout)
            self.worker.spawn()
            order = protocol.Order(
                self.task.model_dump(),
                str(root / "submission"),
                self.submission.entry_file,
                self.submission.entry_function,
                self.log_layout.to_json(),
            )
            self.worker.send(protocol.encode_order(order))
        except BaseException:
            if self._worker is not None:
                self._worker.close()
            remove_folder(root)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        worker = self.worker
        peak = worker.peak_mib()  # before close() removes the cgroup that counted it
        worker.close()
        self.outcome.peak_memory_mib = round(max(peak, worker.peak_mib()), 1)
        try:
            self.outcome.stderr_tail = (worker.root / "worker.log").read_text(errors="replace")[-3000:]
        except OSError:
            pass
        remove_folder(worker.root)
        self.outcome.isolation = {"cpus": self.cpus, **DEFAULT_ISOLATION, **self.outcome.isolation}

    def _show_progress(self) -> None:
        if self.on_step is None:
            return
        done = min(int(self.worker.area.count[0]), self.task.steps)
        while self._shown_steps < done:
            self.on_step(self._shown_steps)
            self._shown_steps += 1

    # ------------------------------------------------------------ how a failure reads

    def _crash(self, phase: str, error: protocol.ErrorMessage | None = None) -> bool:
        """Record why the worker stopped in `phase`; always False (the run is over)."""
        limit = " (the run had hit its limit of processes and threads)" if self.worker.hit_process_limit() else ""
        if self.worker.over_memory():  # the kernel or the watch killed it: that is the reason, not the crash
            self.outcome.fail(Check.MEMORY, self.worker.memory_reason())
        elif error is not None and error.phase == "protocol":
            self.outcome.fail(Check.PROTOCOL, error.message)
        elif error is not None:
            where = _where_in(error.detail, str(self.worker.root / "submission"))
            self.outcome.fail(Check.CRASH, f"crashed during {error.phase}: {error.message}{where}{limit}")
        else:
            self.outcome.fail(Check.CRASH, f"crashed during {phase}: {self.worker.how_it_ended()}{limit}")
        return False

    def _failed(self, event: Event, phase: str) -> bool:
        """Record the failure an event that is not a message means; always False."""
        if isinstance(event, TimedOut):
            limit = (
                f"setup (imports and prepare) took longer than {self.budget.prepare_s:g} s"
                if phase == "setup"
                else f"timed out after {self.budget.timeout_s:g} s"
            )
            self.outcome.fail(Check.TIMEOUT, limit)
        elif isinstance(event, OverMemory):
            self.outcome.fail(Check.MEMORY, self.worker.memory_reason())
        elif isinstance(event, Violated):
            self.outcome.fail(Check.PROTOCOL, event.message)
        else:
            self._crash(phase)
        return False

    # ------------------------------------------------------------ the three phases

    def setup(self) -> bool:
        """Imports and prepare(task), capped, untimed; True when the worker is ready for the clock."""
        event = self.worker.next_event(self.worker.spawned_at + self.budget.prepare_s)
        if not isinstance(event, Arrived):
            return self._failed(event, "setup")
        if not isinstance(event.message, protocol.Ready):
            return self._crash("setup", event.message if isinstance(event.message, protocol.ErrorMessage) else None)
        self.outcome.setup_seconds = event.at - self.worker.spawned_at
        isolation = isolation_of(self.worker.pid, self.worker.root)
        self.outcome.isolation = isolation | {"cgroup": self.worker.cgroup is not None}
        return True

    def timed_phase(self, params: dict[str, np.ndarray], batches: np.ndarray) -> bool:
        """The clock: from handing over the data to the arrival of the final checkpoint; True if it arrived."""
        worker = self.worker
        data_fd = write_data(self.data_layout, params, batches)
        go = protocol.encode_order(protocol.Go(self.data_layout.to_json()))
        cpu_start, sample_start = worker.cpu_seconds(), disturbance.cpu_sample(self.cpus)
        waits_start = disturbance.thread_waits(worker.pid)
        t0 = time.perf_counter()
        worker.send(go)
        worker.send_fd(data_fd)
        os.close(data_fd)
        arrived = self._until_final(t0, self.task.checkpoint_steps()[-1])
        self.outcome.seconds = (time.perf_counter() if arrived is None else arrived) - t0
        self.outcome.cpu_seconds = worker.cpu_seconds() - cpu_start
        self.outcome.lost = disturbance.lost(
            sample_start,
            disturbance.cpu_sample(self.cpus),
            waits_start,
            disturbance.thread_waits(worker.pid),
            self.outcome.seconds,
            len(self.cpus),
            self.outcome.cpu_seconds,
        )
        worker.freeze(True)
        try:
            self._collect()
        finally:
            worker.freeze(False)
        self._show_progress()
        return arrived is not None and self.outcome.completed

    def _collect(self) -> None:
        """The run's steps and checkpoints, read out of the log area (the run is frozen)."""
        messages, problem = protocol.complete_checkpoints(self.messages, self.worker.area.written_slots())
        if problem:
            self.outcome.fail(Check.PROTOCOL, problem)
        collect(self.outcome, self.worker.area, messages)

    def _until_final(self, t0: float, final_step: int) -> float | None:
        """Wait for the final checkpoint's header; its arrival time, or None (the failure recorded)."""
        while True:
            event = self.worker.next_event(t0 + self.budget.timeout_s, self._show_progress if self.on_step else None)
            if not isinstance(event, Arrived):
                self._failed(event, "train")
                return None
            message = event.message
            if isinstance(message, protocol.CheckpointMessage):
                after = self.messages[-1].slot if self.messages else -1
                if not after < message.slot < self.log_layout.slots or message.nbytes > self.log_layout.slot_size:
                    self.outcome.fail(
                        Check.PROTOCOL, f"checkpoint after step {message.s} is not where the log area has it"
                    )
                    return None
                self.messages.append(message)
                if message.s == final_step:
                    return event.at
                continue
            if isinstance(message, protocol.ErrorMessage):
                self._crash("train", message)
            elif isinstance(message, protocol.Done):
                self.outcome.fail(
                    Check.PROTOCOL, f"train returned without a checkpoint after the last step {final_step}"
                )
            else:
                self.outcome.fail(Check.PROTOCOL, f"a {protocol.encode(message)['type']} message during the run")
            return None

    def after_clock(self) -> None:
        """train must return normally, nothing may be left running, and the budget's CPU must have sufficed."""
        event = self.worker.next_event(time.perf_counter() + EXIT_GRACE_S)
        patched: tuple[str, ...] = ()
        leftovers: list[str] = []
        if isinstance(event, Arrived) and isinstance(event.message, protocol.Done):
            patched = event.message.clocks_patched
            leftovers = burning_leftovers(self.worker.pid, self.worker.cgroup_procs())
            self.outcome.leftover_processes = len(leftovers)
        elif isinstance(event, Arrived) and isinstance(event.message, protocol.ErrorMessage):
            self._crash("train", event.message)
        elif isinstance(event, Arrived):
            self.outcome.fail(
                Check.PROTOCOL, f"a {protocol.encode(event.message)['type']} message after the final checkpoint"
            )
        elif isinstance(event, TimedOut):
            self.outcome.fail(Check.TIMEOUT, f"train did not return within {EXIT_GRACE_S:g} s of its final checkpoint")
        elif isinstance(event, Ended):
            self.outcome.fail(Check.PROTOCOL, "the process ended after its final checkpoint without train returning")
        else:
            self._failed(event, "train")
        if self.worker.over_memory():
            self.outcome.fail(Check.MEMORY, self.worker.memory_reason())
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
        widened = self.worker.widened()
        if widened:
            out.fail(Check.CPU, widened)
        if out.cpu_seconds > cores * out.seconds * CPU_SLACK + CPU_SLACK_S:
            out.fail(
                Check.CPU,
                f"used more CPU than its budget: {out.cpu_seconds:.1f} CPU-s in {out.seconds:.1f} s "
                f"on {cores} core{'s' if cores > 1 else ''}",
            )


def _where_in(traceback_text: str, folder: str) -> str:
    """' (at FILE, line N, in FUNCTION)' of the innermost frame of a traceback in the submission's folder."""
    found = ""
    for line in traceback_text.splitlines():
        match = _FRAME.match(line)
        if match and match["file"].startswith(folder + os.sep):
            found = f" (at {match['file'][len(folder) + 1 :]}, line {match['line']}, in {match['function']})"
    return found


_FRAME = re.compile(r'\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')


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
