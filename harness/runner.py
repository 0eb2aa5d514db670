"""Parent side of one trial: spawn the worker under the budget, hold the clock, watch it, collect its output.

The parent never imports submission code and never unpickles what the worker sends. It alone holds the
clock: from handing over the data to the arrival of the last checkpoint's final byte. It watches the
whole process tree (memory, CPU time, CPU affinity) and kills every process of the trial at its end;
as a child subreaper it inherits whatever the submission detaches, so nothing outlives a trial.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from harness import wire
from harness.machine import budget_cpus, thread_env
from harness.spec import Budget, Task, param_shapes
from harness.submission import Submission

PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.05
EXIT_GRACE_S = 20.0
LEFTOVER_GRACE_S = 1.0
CPU_SLACK = 1.05
CPU_SLACK_S = 0.25
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASS_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CC", "CXX")
GROUPS = ("params", "m", "v")


@dataclass
class TrialOutcome:
    """What the parent measured and received in one trial; the audit turns it into a verdict."""

    completed: bool
    failure: str | None = None
    failed_check: str | None = None
    setup_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_mib: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, dict[str, dict[str, np.ndarray]]]] = field(default_factory=list)
    isolation: dict = field(default_factory=dict)
    leftover_processes: int = 0
    stderr_tail: str = ""

    def fail(self, check: str, reason: str) -> "TrialOutcome":
        if self.failure is None:  # the first failure is the reason
            self.completed, self.failed_check, self.failure = False, check, reason
        return self


_subreaper_set = False


def _become_subreaper() -> None:
    global _subreaper_set
    if not _subreaper_set:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _subreaper_set = True


def _trial_processes() -> list[psutil.Process]:
    """Every descendant of this process: during a trial, all of them belong to it (we are a subreaper)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _reap_orphans() -> None:
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def _kill_all() -> int:
    """SIGKILL every process of the trial until none is left; returns how many were alive."""
    alive = 0
    for _ in range(50):
        procs = [p for p in _trial_processes() if _running(p)]
        if not procs:
            break
        alive = max(alive, len(procs))
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=0.2)
        _reap_orphans()
    _reap_orphans()
    return alive


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _Monitor(threading.Thread):
    """Polls the trial's process tree: peak memory (and the kill at the budget), CPU time, CPU affinity."""

    def __init__(self, budget: Budget, cpus: list[int]):
        super().__init__(daemon=True)
        self.budget, self.cpus = budget, set(cpus)
        self.peak_mib = 0.0
        self.memory_exceeded = False
        self.widened: str | None = None
        self.pid: int | None = None
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def cpu_seconds(self) -> float:
        """CPU time of the live tree plus everything this process has reaped: the tree's total so far."""
        total = 0.0
        for p in _trial_processes():
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
                        cpus = _parse_cpu_list(line.split(":", 1)[1])
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
        for p in _trial_processes():
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
            if self.widened is None:
                wide = self._affinity_of(p)
                if wide:
                    self.widened = f"widened its CPU affinity to CPUs {sorted(wide)}, beyond the budget's {sorted(self.cpus)}"
        mib = rss / 2**20
        self.peak_mib = max(self.peak_mib, mib)
        if mib > self.budget.memory_mib and not self.memory_exceeded:
            self.memory_exceeded = True
            _kill_all()

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.poll()


def _widen_pipe(fd: int) -> None:
    """Give the worker's message pipe the largest buffer the system allows (checkpoints cross it inside the
    clock: a 64 KiB pipe makes every checkpoint dozens of hand-offs between the worker and the reader)."""
    try:
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as f:
            size = int(f.read())
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError):
        pass  # the default pipe still works, only with more hand-offs


def _parse_cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


class _Reader(threading.Thread):
    """Reads the worker's frames; validates checkpoint headers against the task before reading payloads."""

    def __init__(self, fd: int, task: Task):
        super().__init__(daemon=True)
        self.fd = fd
        self.shapes = param_shapes(task)
        self.events: queue.Queue = queue.Queue()

    def run(self) -> None:
        try:
            while True:
                header = wire.read_header(self.fd)
                payload = None
                if header["type"] == "checkpoint":
                    problem, arrays_spec = self._check_checkpoint_header(header)
                    if problem:
                        self.events.put(("protocol", problem, time.perf_counter()))
                        return
                    payload = self._read_arrays(arrays_spec)
                self.events.put(("frame", (header, payload), time.perf_counter()))
        except EOFError:
            self.events.put(("eof", None, time.perf_counter()))
        except wire.WireError as err:
            self.events.put(("protocol", str(err), time.perf_counter()))
        except OSError as err:
            self.events.put(("eof", str(err), time.perf_counter()))
        except Exception as err:  # noqa: BLE001 - whatever the bytes were, they are the worker's fault
            self.events.put(("protocol", f"an unreadable message ({type(err).__name__})", time.perf_counter()))

    def _check_checkpoint_header(self, header: dict) -> tuple[str | None, list]:
        s = header.get("s")
        where = f"checkpoint after step {s}"
        tensors = header.get("tensors")
        if not isinstance(s, int) or not isinstance(tensors, list):
            return "a checkpoint message is malformed", []
        seen: dict[str, set[str]] = {g: set() for g in GROUPS}
        spec = []
        for item in tensors:
            if not (isinstance(item, list) and len(item) == 4):
                return f"{where}: a malformed tensor entry", []
            group, name, dtype, shape = item
            if not all(isinstance(x, str) for x in (group, name, dtype)) or not isinstance(shape, list):
                return f"{where}: a malformed tensor entry", []
            if group not in seen:
                return f"{where}: unknown group {group!r}", []
            if name not in self.shapes:
                return f"{where}: {group} has an unexpected tensor {name!r}", []
            if name in seen[group]:
                return f"{where}: {group}['{name}'] is given twice", []
            if dtype not in ("float32", "float64"):
                return f"{where}: {group}['{name}'] has dtype {dtype}; checkpoints must be float32 or float64", []
            if not isinstance(shape, list) or tuple(shape) != self.shapes[name]:
                return f"{where}: {group}['{name}'] has shape {tuple(shape) if isinstance(shape, list) else shape}, expected {self.shapes[name]}", []
            seen[group].add(name)
            spec.append((group, name, np.dtype(dtype), self.shapes[name]))
        for group in GROUPS:
            missing = [n for n in self.shapes if n not in seen[group]]
            if missing:
                return f"{where}: {group} is missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""), []
        expected = sum(int(np.prod(shape)) * dt.itemsize for _, _, dt, shape in spec)
        if header.get("nbytes") != expected:
            return f"{where}: the message announces {header.get('nbytes')} bytes, its tensors need {expected}", []
        return None, spec

    def _read_arrays(self, spec: list) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
        for group, name, dtype, shape in spec:
            n = int(np.prod(shape)) * dtype.itemsize
            raw = wire.read_exact(self.fd, n) if n else b""
            out[group][name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.float64)
        return out


def _prepare_folder(submission: Submission) -> Path:
    root = Path(tempfile.mkdtemp(prefix="loopbench-trial-"))
    shutil.copytree(submission.path, root / "submission", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for sub in ("home", "tmp", "cache", "data"):
        (root / sub).mkdir()
    return root


def _clean_env(root: Path, cores: int) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
    cache = root / "cache"
    env |= {
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "XDG_CACHE_HOME": str(cache),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "NUMBA_CACHE_DIR": str(cache / "numba"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "TORCH_HOME": str(cache / "torch"),
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **thread_env(cores),
    }
    return env


def _namespace(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _isolation_of(pid: int, root: Path) -> dict:
    """What confinement took effect, seen from outside the worker."""
    from harness.worker import writable_mounts

    own = os.getpid()
    differs = lambda kind: _namespace(pid, kind) not in (None, _namespace(own, kind))  # noqa: E731
    try:
        writable = writable_mounts(str(pid), str(root))
    except (OSError, IndexError):
        writable = ["(unknown)"]
    return {
        "pid_namespace": _namespace(pid, "pid_for_children") not in (None, _namespace(own, "pid")),
        "ipc_namespace": differs("ipc"),
        "network_namespace": differs("net"),
        "read_only_filesystem": differs("mnt") and not writable,
        "writable_mounts": writable,
        "user_namespace": differs("user"),
    }


def run_trial(
    submission: Submission,
    task: Task,
    budget: Budget,
    params: dict[str, np.ndarray],
    batches: np.ndarray,
    on_step=None,
) -> TrialOutcome:
    """One trial of `submission` on (task, params, batches) under `budget`, in a fresh process and folder."""
    _become_subreaper()
    _kill_all()  # nothing of an earlier trial may run beside this one
    cpus = budget_cpus(budget.cores)
    root = _prepare_folder(submission)
    out = TrialOutcome(completed=True)
    ctl_r, ctl_w = os.pipe()
    msg_r, msg_w = os.pipe()
    _widen_pipe(msg_w)
    stderr_path = root / "worker.log"
    monitor = _Monitor(budget, cpus)
    proc = None
    try:
        with open(stderr_path, "wb") as log_file:
            spawn_t = time.perf_counter()
            proc = psutil.Popen(
                [sys.executable, "-s", "-P", "-m", "harness.worker", "--ctl", str(ctl_r), "--out", str(msg_w),
                 "--cpus", ",".join(map(str, cpus)), "--root", str(root), "--shm-mib", str(budget.memory_mib)],
                cwd=root / "submission", env=_clean_env(root, budget.cores), pass_fds=(ctl_r, msg_w),
                stdin=open(os.devnull, "rb"), stdout=log_file, stderr=log_file, start_new_session=True,
            )
        os.close(ctl_r)
        os.close(msg_w)
        reader = _Reader(msg_r, task)
        reader.start()
        monitor.pid = proc.pid
        monitor.start()
        _send(ctl_w, {"type": "task", "task": task.model_dump(), "folder": str(root / "submission"),
                      "entry_file": submission.entry_file, "entry_function": submission.entry_function})
        _run_phases(out, proc, reader, monitor, ctl_w, root, task, budget, params, batches, spawn_t, on_step)
        out.isolation = {
            "cpus": cpus,
            "pid_namespace": False,
            "ipc_namespace": False,
            "network_namespace": False,
            "read_only_filesystem": False,
            "user_namespace": False,
            "process_cleanup": "child subreaper and PID namespace: the whole tree is killed at the end",
        } | out.isolation
    finally:
        monitor.stop.set()
        if monitor.is_alive():
            monitor.join()  # a watch still killing must finish before the next trial's processes exist
        _kill_all()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - already killed above
                pass
        for fd in (ctl_w, msg_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            out.stderr_tail = stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            pass
        shutil.rmtree(root, ignore_errors=True)
    out.peak_memory_mib = round(monitor.peak_mib, 1)
    return out


def _send(fd: int, header: dict) -> None:
    """An order to the worker; if it is already gone, the reader reports how it ended."""
    try:
        wire.write_frame(fd, header)
    except OSError:
        pass


def _wait_event(reader: _Reader, monitor: _Monitor, proc, deadline: float):
    """The next event from the worker, or ('timeout' | 'memory', ...) when the watch says so."""
    while True:
        if monitor.memory_exceeded:
            return ("memory", None, time.perf_counter())
        left = deadline - time.perf_counter()
        if left <= 0:
            return ("timeout", None, time.perf_counter())
        try:
            return reader.events.get(timeout=min(left, POLL_S))
        except queue.Empty:
            continue


def _run_phases(out, proc, reader, monitor, ctl_w, root, task, budget, params, batches, spawn_t, on_step) -> None:
    memory_reason = lambda: f"memory budget exceeded: peak {monitor.peak_mib:.0f} MiB of {budget.memory_mib} MiB"  # noqa: E731

    def crash_reason(phase: str, header: dict | None) -> tuple[str, str]:
        if monitor.memory_exceeded:  # the watch killed it: that is the reason, not the crash it caused
            return "memory", memory_reason()
        if header is not None:
            check = "protocol" if header.get("phase") == "protocol" else "crash"
            if check == "protocol":
                return check, f"protocol: {header.get('message')}"
            return check, f"crashed during {header.get('phase')}: {header.get('message')}"
        code = proc.poll()
        if code is None:
            try:
                code = proc.wait(timeout=2)
            except Exception:  # noqa: BLE001
                code = None
        if code is None:
            return "crash", f"crashed during {phase}: the process closed its channel to the harness without reporting"
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return "crash", f"crashed during {phase}: the process ended ({how}) without reporting"

    # setup: imports and prepare(task), capped, untimed
    event, value, at = _wait_event(reader, monitor, proc, spawn_t + budget.prepare_s)
    if event == "timeout":
        out.fail("timeout", f"setup (imports and prepare) took longer than {budget.prepare_s:.0f} s")
        return
    if event == "memory":
        out.fail("memory", memory_reason())
        return
    if event == "protocol":
        out.fail("protocol", f"protocol: {value}")
        return
    header = value[0] if event == "frame" else None
    if header is None or header["type"] != "ready":
        out.fail(*crash_reason("setup", header if header and header["type"] == "error" else None))
        return
    out.setup_seconds = at - spawn_t
    out.isolation = _isolation_of(proc.pid, root)

    # the clock: from handing over the data to the arrival of the final checkpoint
    final_step = task.checkpoint_steps()[-1]
    data_dir = root / "data"
    cpu_start = monitor.cpu_seconds()
    t0 = time.perf_counter()
    np.save(data_dir / "batches.npy", np.ascontiguousarray(batches))
    np.savez(data_dir / "params.npz", **params)
    for f in data_dir.iterdir():
        f.chmod(0o444)
    _send(ctl_w, {"type": "go", "data": str(data_dir)})
    t1 = None
    while t1 is None:
        event, value, at = _wait_event(reader, monitor, proc, t0 + budget.timeout_s)
        if event == "timeout":
            out.seconds = at - t0
            out.fail("timeout", f"timed out after {budget.timeout_s:.0f} s")
            return
        if event == "memory":
            out.fail("memory", memory_reason())
            return
        if event == "protocol":
            out.fail("protocol", f"protocol: {value}")
            return
        if event == "eof":
            out.fail(*crash_reason("train", None))
            return
        header, payload = value
        kind = header["type"]
        if kind == "step":
            s, loss = header.get("s"), header.get("loss")
            if not isinstance(s, int) or not isinstance(loss, (int, float)):
                out.fail("protocol", "protocol: a step message is malformed")
                return
            out.losses.append((s, float(loss)))
            if on_step:
                on_step(s)
        elif kind == "checkpoint":
            out.checkpoints.append((header["s"], payload))
            if header["s"] == final_step:
                t1 = at
        elif kind == "error":
            out.fail(*crash_reason("train", header))
            return
        elif kind == "done":
            out.fail("protocol", f"protocol: train returned without a checkpoint after the last step {final_step}")
            return
        else:
            out.fail("protocol", f"protocol: unknown message type {kind!r}")
            return
    out.seconds = t1 - t0
    out.cpu_seconds = monitor.cpu_seconds() - cpu_start
    monitor.poll()

    # after the clock: train must return normally, and nothing may be left running
    event, value, at = _wait_event(reader, monitor, proc, time.perf_counter() + EXIT_GRACE_S)
    patched: list[str] = []
    leftovers: list[str] = []
    if event == "frame" and value[0]["type"] == "done":
        patched = value[0].get("clocks_patched") or []
        leftovers = _burning_leftovers(proc)
        out.leftover_processes = len(leftovers)
    elif event == "frame" and value[0]["type"] == "error":
        out.fail(*crash_reason("train", value[0]))
    elif event == "frame":
        out.fail("protocol", f"protocol: a {value[0]['type']} message after the final checkpoint")
    elif event == "memory":
        out.fail("memory", memory_reason())
    elif event == "timeout":
        out.fail("timeout", f"train did not return within {EXIT_GRACE_S:.0f} s of its final checkpoint")
    elif event == "protocol":
        out.fail("protocol", f"protocol: {value}")
    else:
        out.fail("protocol", "protocol: the process ended after its final checkpoint without train returning")
    cores = len(monitor.cpus)
    if monitor.widened:
        out.fail("cpu", monitor.widened)
    if out.cpu_seconds > cores * out.seconds * CPU_SLACK + CPU_SLACK_S:
        out.fail("cpu", f"used more CPU than its budget: {out.cpu_seconds:.1f} CPU-s in {out.seconds:.1f} s on {cores} core{'s' if cores > 1 else ''}")
    if leftovers:
        out.fail("processes", f"left {len(leftovers)} process{'es' if len(leftovers) > 1 else ''} running after the run ({leftovers[0]})")
    if patched:
        out.fail("clock", f"tampered with the clocks of its process ({', '.join(patched)} replaced)")


def _burning_leftovers(proc) -> list[str]:
    """Processes the submission started that still use CPU after train returned (the worker itself and
    the process waiting on it excluded); named here, killed by the caller with the rest of the trial."""
    own = {proc.pid}
    try:
        kids = proc.children()
        if len(kids) == 1 and kids[0].ppid() == proc.pid:  # the PID-namespace init, which is the worker
            own.add(kids[0].pid)
    except psutil.Error:
        pass
    procs = [p for p in _trial_processes() if p.pid not in own and _running(p)]
    if not procs:
        return []
    before = {}
    for p in procs:
        try:
            before[p.pid] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    time.sleep(LEFTOVER_GRACE_S)
    burning = []
    for p in procs:
        try:
            if _running(p) and sum(p.cpu_times()[:2]) - before.get(p.pid, 0.0) > 0.05 * LEFTOVER_GRACE_S:
                burning.append(f"pid {p.pid}: {' '.join(p.cmdline())[:240] or p.name()}")
        except psutil.Error:
            pass
    return burning
