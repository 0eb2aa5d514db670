"""The workspace side: after `check` or `score` inside a task workspace, the submission folder's state is committed.

A commit per attempt, its message saying the command, the verdict and the time since the export. Nothing of it
is trusted by the evaluator: it only tells `task grade` which states there were. A snapshot never fails the
command that made it: where git cannot commit, one warning line says so.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from harness.task.marker import MARKER, elapsed_text, find_workspace, parse_marker

SNAPSHOT_TRAILER = "Loopbench-Snapshot"
FOLDER_TRAILER = "Loopbench-Folder"
IDENTITY = ("-c", "user.name=loopbench snapshot", "-c", "user.email=snapshot@loopbench.invalid")
GIT_TIMEOUT = 60


def _elapsed(workspace: Path) -> float | None:
    try:
        marker = parse_marker((workspace / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    if marker is None:
        return None
    return (dt.datetime.now(dt.UTC) - marker.started()).total_seconds()


def snapshot_message(command: str, folder: str, verdict: str, summary: str, elapsed: float | None) -> str:
    since = f"{elapsed_text(elapsed)} since export" if elapsed is not None else "time since export unknown"
    return (
        f"{command} {folder}: {verdict} ({since})\n\n{summary}\n\n"
        f"{SNAPSHOT_TRAILER}: {command}\n{FOLDER_TRAILER}: {folder}\nLoopbench-Verdict: {verdict}\n"
        + (f"Loopbench-Elapsed-Seconds: {elapsed:.0f}\n" if elapsed is not None else "")
    )


def _git(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *IDENTITY, *args], cwd=workspace, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False
    )


def commit_snapshot(folder: Path, command: str, verdict: str, summary: str) -> str | None:
    """Commit `folder`'s state to its task workspace's history; the line to show, or None outside a workspace."""
    workspace = find_workspace(folder)
    if workspace is None:
        return None
    relative = folder.resolve().relative_to(workspace).as_posix()
    elapsed = _elapsed(workspace)
    message = snapshot_message(command, relative, verdict, summary, elapsed)
    try:
        for args in (
            ("add", "--all", "--", relative),
            ("commit", "--quiet", "--no-verify", "--allow-empty", "--message", message, "--", relative),
            ("rev-parse", "--short", "HEAD"),
        ):
            done = _git(workspace, *args)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                return f"warning: no snapshot of {relative} in the task's history: git {args[0]}: {last}"
    except (OSError, subprocess.SubprocessError) as err:
        return f"warning: no snapshot of {relative} in the task's history: {err}"
    since = f", {elapsed_text(elapsed)} since export" if elapsed is not None else ""
    return f"snapshot {done.stdout.strip()}: {relative} committed to the task's history ({verdict}{since})"


def snapshot_attempt(folder: Path, command: str, verdict: str, summary: str) -> None:
    """What `check` and `score` call after their verdict: a snapshot where `folder` is in a task workspace."""
    line = commit_snapshot(Path(folder), command, verdict, summary)
    if line:
        print(line, file=sys.stderr)
