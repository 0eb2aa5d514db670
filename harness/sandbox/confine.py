"""The worker confining itself before any submission code runs: its CPUs, and namespaces of its own."""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

from harness.contract.mounts import is_private, mount_points

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1


def confine(cpus: set[int], trial_root: str, shm_mib: int, channel_fds: tuple[int, int]) -> None:
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
        _read_only_but_the_trial(libc, trial_root, shm_mib)
    new_pids = libc.unshare(CLONE_NEWPID) == 0
    libc.unshare(CLONE_NEWUSER)  # from here on, no capability over the mounts and namespaces above
    if new_pids:
        _become_init(libc, channel_fds)


def _read_only_but_the_trial(libc: Any, trial_root: str, shm_mib: int) -> None:
    mount = libc.mount
    mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    root = trial_root.encode()
    ok = mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
    ok = ok and mount(root, root, None, MS_BIND | MS_REC, None) == 0
    if not ok:
        return
    for point, _ in mount_points():
        if not is_private(point, trial_root):
            mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    if os.path.isdir("/dev/shm"):
        mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={shm_mib}m".encode())


def _become_init(libc: Any, channel_fds: tuple[int, int]) -> None:
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
