"""The processes of one run: its tree under the supervisor, stopping and killing it, and finding any left running.

The caller of a trial is never a subreaper and never touches processes that are not the trial's: the trial's
processes are the supervisor the parent started and its descendants (the supervisor adopts whatever they
detach), and, where there is one, everything in the run's cgroup.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

LEFTOVER_GRACE_S = 1.0


def _start_ticks(pid: int | str) -> str:
    """When a process started, in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, its identity."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def owner_token() -> str:
    """This process, named so that a later process can tell whether it is still alive: PID.STARTTICKS."""
    return f"{os.getpid()}.{_start_ticks('self')}"


def owner_alive(token: str) -> bool:
    """Whether the process a token names is still running (a reused pid has another start time)."""
    pid, _, ticks = token.partition(".")
    try:
        return _start_ticks(int(pid)) == ticks
    except (OSError, ValueError, IndexError):
        return False


def tree(root: int) -> list[psutil.Process]:
    """A process and all its descendants (an empty list once it is gone)."""
    try:
        top = psutil.Process(root)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def kill_tree(root: int) -> int:
    """SIGKILL a process tree until none of it is left; how many processes were alive at most."""
    alive = 0
    for _ in range(50):
        procs = [p for p in tree(root) if running(p)]
        if not procs:
            break
        alive = max(alive, len(procs))
        signal_all([p.pid for p in procs], signal.SIGCONT)  # a stopped process dies only once it runs
        signal_all([p.pid for p in procs], signal.SIGKILL)
        psutil.wait_procs(procs, timeout=0.2)
    return alive


def stop_tree(root: int, stopped: bool) -> None:
    """SIGSTOP (or SIGCONT) every process of a tree: the fallback of a cgroup freezer."""
    procs = tree(root)
    signal_all([p.pid for p in procs], signal.SIGSTOP if stopped else signal.SIGCONT)
    if stopped:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(_status(p) not in (psutil.STATUS_STOPPED, None) for p in procs):
            time.sleep(0.002)


def _status(p: psutil.Process) -> str | None:
    try:
        return str(p.status())
    except psutil.Error:
        return None


def burning_leftovers(supervisor: int, extra: list[int]) -> list[str]:
    """Processes the submission started that still use CPU after train returned (the supervisor and the worker
    excluded); named here, killed by the caller with the rest of the trial. `extra`: pids of the run's cgroup."""
    own = {supervisor}
    try:
        kids = psutil.Process(supervisor).children()
        own |= {k.pid for k in kids[:1]}  # the worker: the supervisor's first child
    except psutil.Error:
        pass
    pids = {p.pid for p in tree(supervisor)} | set(extra)
    procs = [psutil.Process(pid) for pid in sorted(pids - own) if psutil.pid_exists(pid)]
    procs = [p for p in procs if running(p)]
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
            if running(p) and sum(p.cpu_times()[:2]) - before.get(p.pid, 0.0) > 0.05 * LEFTOVER_GRACE_S:
                burning.append(f"pid {p.pid}: {' '.join(p.cmdline())[:240] or p.name()}")
        except psutil.Error:
            pass
    return burning
