"""The processes of a trial: this process as their subreaper, killing them all, and finding any left running."""

from __future__ import annotations

import ctypes
import os
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_S = 1.0

_subreaper_set = False


def become_subreaper() -> None:
    """Whatever a trial's processes detach is re-parented to this process, so it stays in the tree we watch."""
    global _subreaper_set
    if not _subreaper_set:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _subreaper_set = True


def trial_processes() -> list[psutil.Process]:
    """Every descendant of this process: during a trial, all of them belong to it (we are a subreaper)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap_orphans() -> None:
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def kill_all() -> int:
    """SIGKILL every process of the trial until none is left; returns how many were alive."""
    alive = 0
    for _ in range(50):
        procs = [p for p in trial_processes() if running(p)]
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


def burning_leftovers(proc: psutil.Popen) -> list[str]:
    """Processes the submission started that still use CPU after train returned (the worker itself and
    the process waiting on it excluded); named here, killed by the caller with the rest of the trial."""
    own = {proc.pid}
    try:
        kids = proc.children()
        if len(kids) == 1 and kids[0].ppid() == proc.pid:  # the PID-namespace init, which is the worker
            own.add(kids[0].pid)
    except psutil.Error:
        pass
    procs = [p for p in trial_processes() if p.pid not in own and running(p)]
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
