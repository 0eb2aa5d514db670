"""The worker confining itself before any submission code runs: its cgroups, its CPUs, namespaces of its own.

After `confine` returns, this process is the worker proper. The process the parent started stays behind as
the trial's supervisor: a trusted process that never runs submission code, is the subreaper of everything
the worker starts, and dies with the parent (and the worker with it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any

from harness.contract.mounts import PRIVATE_TMPFS, is_private, mount_points

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
TMPFS_MIB = 256
"""Size cap of the private /tmp, /var/tmp and /run (the trial's own folder is the place for big files)."""


def join_cgroups(paths: list[str]) -> None:
    """Move this process into the trial's cgroups before it starts anything: all it forks stays in them."""
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w", encoding="ascii") as f:
            f.write(str(os.getpid()))


def confine(cpus: set[int], trial_root: str, shm_mib: int, channel_fds: tuple[int, ...]) -> None:
    """Budget CPUs and, where the kernel allows, namespaces of its own for everything a trial could otherwise
    reach beyond itself: no network (net), no System V IPC shared with later trials (ipc), every mount
    read-only (/proc and /sys included) but the trial's folder, and fresh private tmpfs mounts over /tmp,
    /var/tmp, /run and /dev/shm, so that no socket or file of the machine's is reachable there (mnt); no process
    of the harness or of anyone else to see or signal (pid, with a /proc of its own); and finally, in the
    worker only, a user namespace of its own, so that none of this can be undone.

    Each step that the machine refuses is skipped; the parent checks from outside what took effect
    (/proc/PID/ns and /proc/PID/mountinfo) and records it.
    """
    cwd = os.getcwd()
    os.sched_setaffinity(0, cpus)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)
    root = os.geteuid() == 0
    if root:
        libc.unshare(CLONE_NEWNET)
        libc.unshare(CLONE_NEWIPC)
        if libc.unshare(CLONE_NEWNS) == 0:
            _read_only_but_the_trial(libc, trial_root, shm_mib)
        new_pids = libc.unshare(CLONE_NEWPID) == 0
    else:
        new_pids = False
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the supervisor adopts whatever the worker's processes detach
    _fork_supervisor(libc, channel_fds)
    if new_pids:
        _mount(libc, b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    if root:
        libc.unshare(CLONE_NEWUSER)  # from here on, no capability over the mounts and namespaces above
    os.chdir(cwd)  # the working folder as the new mounts show it (a relative path would reach the old mount)


def _mount(
    libc: Any, source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None = None
) -> bool:
    mount = libc.mount
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return bool(mount(source, target, fstype, flags, data) == 0)


def _read_only_but_the_trial(libc: Any, trial_root: str, shm_mib: int) -> None:
    root = trial_root.encode()
    if not (_mount(libc, None, b"/", None, MS_REC | MS_PRIVATE) and _mount(libc, root, root, None, MS_BIND | MS_REC)):
        return
    for point, _ in mount_points():
        if not is_private(point, trial_root):
            _mount(libc, None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    # what the worker must still see under the folders about to be covered: its trial folder (writable) and
    # the Python it runs, its libraries and the harness (read-only), wherever they are installed
    kept = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in _under_private(trial_root)}
    try:
        for point in PRIVATE_TMPFS:
            if os.path.isdir(point) and not os.path.islink(point):
                size = shm_mib if point == "/dev/shm" else TMPFS_MIB
                _mount(
                    libc, b"tmpfs", point.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}m".encode()
                )
        for path, fd in kept.items():  # shown again at their own paths, as they were
            if not os.path.isdir(path):
                os.makedirs(path, exist_ok=True)
                _mount(libc, f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC)
    finally:
        for fd in kept.values():
            os.close(fd)


def _under_private(trial_root: str) -> list[str]:
    """The trial folder and every folder of this Python (its prefix, its sys.path) that lies under a folder the
    sandbox covers with a fresh tmpfs, shortest first (a folder inside another is shown with it)."""
    candidates = [trial_root, sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), *sys.path]
    found: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates if p and os.path.isdir(p)}, key=len):
        covered = any(path == point or path.startswith(point + "/") for point in PRIVATE_TMPFS)
        if covered and not any(path == f or path.startswith(f + "/") for f in found):
            found.append(path)
    return found


def _fork_supervisor(libc: Any, channel_fds: tuple[int, ...]) -> None:
    """Fork: the child goes on as the worker (PID 1 of its namespace where there is one); this process stays
    behind as the supervisor, waits for it, kills whatever it left, and exits with its status."""
    child = os.fork()
    if child == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    for fd in channel_fds:
        os.close(fd)
    _, status = os.waitpid(child, 0)
    _kill_adopted()
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _kill_adopted() -> None:
    """SIGKILL and reap every child this subreaper still has (what the worker's processes left behind)."""
    me = str(os.getpid())
    for _ in range(100):
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
                if ppid == me:
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                continue
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.01)
