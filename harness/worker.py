"""Child-process entry of one trial: confine itself, pre-import, load the submission, run it, report.

Everything from the submission's import on is untrusted: this process may be patched by the code it
runs, so the parent believes nothing it says without checking. The parent holds the clock, validates
every byte that arrives and replays the training itself; what this module checks (the types of the
checkpoint objects, the clock functions) only makes a failure's reason clearer.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
import traceback

from harness import wire

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
CLOCKS = ("time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns",
          "process_time", "process_time_ns", "thread_time", "thread_time_ns", "clock_gettime", "clock_gettime_ns")
_ORIGINAL_CLOCKS = {name: getattr(time, name) for name in CLOCKS if hasattr(time, name)}


def _confine(cpus: set[int], trial_root: str, shm_mib: int, channel_fds: tuple[int, int]) -> None:
    """Budget CPUs and, where the kernel allows, namespaces of its own for everything a trial could
    otherwise reach beyond itself: no network (net), no System V IPC shared with later trials (ipc),
    every mount read-only (/proc and /sys included, so no sysctl, cgroup or CPU setting can be changed
    for later trials) but the trial's folder and a private, size-capped /dev/shm (mnt), no process of
    the harness or of anyone else to signal (pid: the submission runs as PID 1 of its own namespace,
    and when it exits the kernel kills whatever it left), and finally a user namespace of its own, so
    that none of this can be undone.

    Each step that the machine refuses is skipped; the parent checks from outside what took effect
    (/proc/PID/ns and /proc/PID/mountinfo) and records it.
    """
    os.sched_setaffinity(0, cpus)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)
    if os.geteuid() != 0:
        return
    libc.unshare(CLONE_NEWNET)
    libc.unshare(CLONE_NEWIPC)
    if libc.unshare(CLONE_NEWNS) == 0:
        mount = libc.mount
        mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        root = trial_root.encode()
        ok = mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
        ok = ok and mount(root, root, None, MS_BIND | MS_REC, None) == 0
        if ok:
            for point in _mount_points():
                if not _is_private(point, trial_root):
                    mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
            if os.path.isdir("/dev/shm"):
                mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={shm_mib}m".encode())
    new_pids = libc.unshare(CLONE_NEWPID) == 0
    libc.unshare(CLONE_NEWUSER)  # from here on, no capability over the mounts and namespaces above
    if new_pids:
        _become_init(libc, channel_fds)


def _become_init(libc, channel_fds: tuple[int, int]) -> None:
    """Fork into the new PID namespace: the child goes on as its PID 1; this process only waits for it."""
    child = os.fork()
    if child == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    for fd in channel_fds:
        os.close(fd)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _is_private(point: str, trial_root: str) -> bool:
    """The trial's own folder and its fresh /dev/shm: the only places a worker may write."""
    return point in (trial_root, "/dev/shm") or point.startswith(trial_root + "/")


def mount_points(pid: str = "self") -> list[tuple[str, list[str]]]:
    """Every mount point of a process's mount namespace with its per-mount options, from /proc/PID/mountinfo."""
    found = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \\040
            found.append((point, fields[5].split(",")))
    return found


def _mount_points() -> list[str]:
    return [point for point, _ in mount_points()]


def writable_mounts(pid: str, trial_root: str) -> list[str]:
    """Mount points a process could write to, outside its trial folder and its private /dev/shm."""
    visible = dict(mount_points(pid))  # where mounts are stacked on one point, the last one is the one seen
    return [point for point, options in visible.items() if "rw" in options and not _is_private(point, trial_root)]


class _Protocol:
    def __init__(self, out_fd: int):
        self.out = out_fd

    def send(self, header: dict, payload=None) -> None:
        wire.write_frame(self.out, header, payload)

    def fail(self, phase: str, message: str, detail: str = "") -> None:
        self.send({"type": "error", "phase": phase, "message": message[:2000], "detail": detail[-4000:]})
        os._exit(3)


class Log:
    """The `log` object of SPEC §5. Checkpoints leave the process at once, inside the clock."""

    def __init__(self, protocol: _Protocol):
        self._protocol = protocol

    def step(self, s, loss) -> None:
        try:
            s, loss = int(s), float(loss)
        except Exception as err:  # noqa: BLE001 - any bad value is the submission's error
            self._protocol.fail("protocol", f"log.step got a step or loss that is not a number: {err}")
        self._protocol.send({"type": "step", "s": s, "loss": loss})

    def checkpoint(self, s, params, m, v) -> None:
        import numpy as np

        tensors, chunks = [], []
        for group, values in (("params", params), ("m", m), ("v", v)):
            if not isinstance(values, dict):
                self._protocol.fail("protocol", f"checkpoint after step {s}: {group} is a {type(values).__name__}, not a dict")
            for name, value in values.items():
                array = _materialise(value)
                if isinstance(array, str):
                    self._protocol.fail("protocol", f"checkpoint after step {s}: {group}['{name}'] {array}")
                tensors.append([group, str(name), array.dtype.name, list(array.shape)])
                chunks.append(np.ascontiguousarray(array))
        nbytes = sum(c.nbytes for c in chunks)
        self._protocol.send({"type": "checkpoint", "s": int(s), "tensors": tensors, "nbytes": nbytes})
        for c in chunks:
            wire._write_all(self._protocol.out, c.data if c.nbytes else b"")


def _materialise(value):
    """A plain float array copy of a checkpoint value, or a string saying what is wrong with it."""
    import numpy as np

    torch = sys.modules.get("torch")
    if type(value) is np.ndarray:
        array = value
    elif torch is not None and type(value) in (torch.Tensor, torch.nn.Parameter):
        if value.dtype not in (torch.float32, torch.float64):
            return f"has dtype {str(value.dtype).removeprefix('torch.')}; checkpoints must be float32 or float64"
        array = value.detach().to("cpu").contiguous().numpy()
    else:
        return f"is a {type(value).__module__}.{type(value).__qualname__}, not a numpy array or a torch tensor"
    if array.dtype not in (np.float32, np.float64):
        return f"has dtype {array.dtype}; checkpoints must be float32 or float64"
    return np.array(array, copy=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctl", type=int, required=True)
    parser.add_argument("--out", type=int, required=True)
    parser.add_argument("--cpus", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--shm-mib", type=int, required=True)
    args = parser.parse_args()
    cpus = {int(c) for c in args.cpus.split(",")}
    _confine(cpus, args.root, args.shm_mib, (args.ctl, args.out))
    protocol = _Protocol(args.out)

    import numpy  # noqa: F401 - pre-imports: their cost is setup, never the clock
    import torch

    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001 - numba is optional for a submission; its absence is not ours to fail
        pass
    torch.set_num_threads(len(cpus))

    from harness.spec import Task
    from harness.submission import import_entry

    order = wire.read_header(args.ctl)
    task = Task.model_validate(order["task"])
    phase = "import"
    try:
        module = import_entry(order["folder"], order["entry_file"])
        train = getattr(module, order["entry_function"], None)
        if not callable(train):
            protocol.fail("import", f"{order['entry_file']} has no function {order['entry_function']}")
        prepare = getattr(module, "prepare", None)
        if callable(prepare):
            phase = "prepare"
            prepare(task)
    except SystemExit as err:
        protocol.fail(phase, f"exited during {phase} (SystemExit {err.code})")
    except BaseException as err:  # noqa: BLE001 - report whatever the submission raised
        protocol.fail(phase, f"{type(err).__name__}: {err}", traceback.format_exc())
    protocol.send({"type": "ready"})

    go = wire.read_header(args.ctl)
    import numpy as np

    params = {k: np.array(a) for k, a in np.load(os.path.join(go["data"], "params.npz"), allow_pickle=False).items()}
    batches = np.load(os.path.join(go["data"], "batches.npy"), mmap_mode="r", allow_pickle=False)
    try:
        train(task, params, batches, Log(protocol))
    except SystemExit as err:
        protocol.fail("train", f"exited during train (SystemExit {err.code})")
    except BaseException as err:  # noqa: BLE001
        protocol.fail("train", f"{type(err).__name__}: {err}", traceback.format_exc())
    patched = [f"time.{n}" for n, f in _ORIGINAL_CLOCKS.items() if getattr(time, n, None) is not f]
    protocol.send({"type": "done", "clocks_patched": patched})
    sys.stdout.flush()
    os.read(args.ctl, 1)  # stay until the parent has looked at what is left running, then it ends the trial
    os._exit(0)


if __name__ == "__main__":
    main()
