"""Where a trial's worker may write: its own folder and its private /dev/shm, read from /proc/PID/mountinfo.

The worker makes every other mount read-only; the parent checks from outside that it did.
"""

from __future__ import annotations


def mount_points(pid: str = "self") -> list[tuple[str, list[str]]]:
    """Every mount point of a process's mount namespace with its per-mount options, from /proc/PID/mountinfo."""
    found = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \\040
            found.append((point, fields[5].split(",")))
    return found


def is_private(point: str, trial_root: str) -> bool:
    """The trial's own folder and its fresh /dev/shm: the only places a worker may write."""
    return point in (trial_root, "/dev/shm") or point.startswith(trial_root + "/")


def writable_mounts(pid: str, trial_root: str) -> list[str]:
    """Mount points a process could write to, outside its trial folder and its private /dev/shm."""
    visible = dict(mount_points(pid))  # where mounts are stacked on one point, the last one is the one seen
    return [point for point, options in visible.items() if "rw" in options and not is_private(point, trial_root)]
