"""Where a trial's worker may write: its own folder and the private in-memory folders it mounts for itself.

The worker makes every other mount read-only and hides the machine's temporary and runtime folders (and the
sockets in them) under fresh tmpfs mounts of its own; the parent checks from outside, in /proc/PID/mountinfo,
that it did.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
"""Mounted afresh (tmpfs, size-capped) in the worker's mount namespace: nothing of the machine's shows there."""


@dataclass(frozen=True)
class Mount:
    point: str
    options: tuple[str, ...]
    device: str
    """major:minor of the file system: a fresh tmpfs has a device number no other mount namespace has."""
    fstype: str


def mounts(pid: str = "self") -> list[Mount]:
    """Every mount of a process's mount namespace, from /proc/PID/mountinfo, in mount order."""
    found = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \\040
            fstype = fields[fields.index("-") + 1]
            found.append(Mount(point, tuple(fields[5].split(",")), fields[2], fstype))
    return found


def mount_points(pid: str = "self") -> list[tuple[str, list[str]]]:
    return [(m.point, list(m.options)) for m in mounts(pid)]


def is_private(point: str, trial_root: str) -> bool:
    """The trial's own folder: the only place of the machine's file systems a worker may write."""
    return point == trial_root or point.startswith(trial_root + "/")


def writable_mounts(pid: str, trial_root: str, host_pid: str = "self") -> list[str]:
    """Mount points a process could write to beyond its trial folder and its own fresh tmpfs mounts.

    A tmpfs at one of PRIVATE_TMPFS counts as the worker's own only if its device appears in no mount of
    `host_pid`'s namespace (so a machine whose /tmp is itself a tmpfs is not mistaken for a private one).
    """
    host_devices = {m.device for m in mounts(host_pid)}
    visible = {m.point: m for m in mounts(pid)}  # where mounts are stacked on one point, the last one is seen
    writable = []
    for point, m in visible.items():
        if "rw" not in m.options or is_private(point, trial_root):
            continue
        if point in PRIVATE_TMPFS and m.fstype == "tmpfs" and m.device not in host_devices:
            continue
        writable.append(point)
    return writable
