"""Snapshots on the workspace side, and the evaluator's reading of them: safe, from the contents alone."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from harness.contract.spec import load_workload
from harness.task.export import export_workspace
from harness.task.history import Clone, StateError, content_hash, copy_folder
from harness.task.marker import SUBMISSION
from harness.task.snapshot import commit_snapshot
from harness.task.states import WORKING_TREE, graded_states
from tests.helpers import PROJECT


@pytest.fixture
def workspace(tmp_path) -> Path:
    return export_workspace(tmp_path / "T", [load_workload("tiny")]).path


def git(folder: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, env=env, check=True)
    return done.stdout


def edit(workspace: Path, text: str) -> None:
    with open(workspace / SUBMISSION / "train.py", "a") as f:
        f.write(f"\n# {text}\n")


def snapshot(workspace: Path, verdict: str = "accepted") -> str:
    line = commit_snapshot(workspace / SUBMISSION, "check", verdict, f"mine on tiny: {verdict.upper()}")
    assert line is not None and line.startswith("snapshot "), line
    return git(workspace, "rev-parse", "HEAD").strip()


def states(workspace: Path, tmp_path: Path, every: int = 1):
    where = tmp_path / f"grade-{len(list(tmp_path.iterdir()))}"
    where.mkdir()
    clone = Clone(workspace, where)
    started = dt.datetime.fromisoformat((clone.text("log", "-1", "--format=%cI", clone.first_commit()) or "").strip())
    return graded_states(clone, workspace, SUBMISSION, started, every, where / "states")


def test_a_snapshot_commits_the_folder_alone_with_its_verdict(workspace):
    edit(workspace, "one")
    (workspace / "README.md").write_text("staged, not the submission's")
    git(workspace, "add", "README.md")
    commit = snapshot(workspace, "rejected")
    message = git(workspace, "log", "-1", "--format=%B", commit)
    assert "Loopbench-Snapshot: check" in message and "Loopbench-Folder: submissions/mine" in message
    assert "rejected" in message and "since export" in message
    assert git(workspace, "show", "--name-only", "--format=", commit).split() == [f"{SUBMISSION}/train.py"]
    assert "README.md" in git(workspace, "diff", "--cached", "--name-only"), "other staged work stays staged"
    snapshot(workspace)  # nothing changed: still a commit per attempt
    assert len(git(workspace, "log", "--format=%H").split()) == 3


def test_outside_a_workspace_no_snapshot_and_a_broken_git_is_one_warning(workspace, tmp_path):
    assert commit_snapshot(PROJECT / "reference_loop", "check", "accepted", "") is None
    (workspace / ".git" / "HEAD").write_text("garbage\n")
    line = commit_snapshot(workspace / SUBMISSION, "check", "accepted", "")
    assert line is not None and line.startswith("warning: no snapshot") and "\n" not in line


def test_the_graded_states_are_every_kth_distinct_snapshot_and_the_final_state(workspace, tmp_path):
    first = (edit(workspace, "a"), snapshot(workspace))[1]
    snapshot(workspace)  # the same files again: one state
    edit(workspace, "b")
    second = snapshot(workspace)
    edit(workspace, "c")
    third = snapshot(workspace)
    found = states(workspace, tmp_path)
    assert [s.state for s in found] == [first, second, third] and [s.final for s in found] == [False, False, True]
    assert [s.index for s in found] == [1, 2, 3] and all(s.submission is not None for s in found)
    assert len({s.content_hash for s in found}) == 3
    assert found[0].elapsed <= found[1].elapsed <= found[2].elapsed
    assert [s.state for s in states(workspace, tmp_path, every=2)] == [second, third]
    assert [s.state for s in states(workspace, tmp_path, every=0)] == [third], "the last snapshot is the final"
    edit(workspace, "d, never checked")
    later = states(workspace, tmp_path, every=0)
    assert [s.state for s in later] == [WORKING_TREE] and later[0].final
    assert later[0].elapsed >= found[2].elapsed
    assert "never checked" in (later[0].folder / "train.py").read_text()


def test_a_commit_dated_into_the_past_cannot_move_a_state_before_its_predecessor(workspace, tmp_path):
    edit(workspace, "a")
    snapshot(workspace)
    edit(workspace, "b")
    env = {**os.environ, "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+00:00"}
    git(workspace, "add", "-A")
    git(
        workspace,
        "-c",
        "user.name=x",
        "-c",
        "user.email=x@y",
        "commit",
        "-q",
        "-m",
        "forged\n\nLoopbench-Snapshot: check\nLoopbench-Folder: submissions/mine\n",
        env=env,
    )
    first, forged = states(workspace, tmp_path)
    assert forged.elapsed >= first.elapsed >= 0


def test_links_and_broken_manifests_make_a_state_ungradable_saying_why(workspace, tmp_path):
    (workspace / SUBMISSION / "data.txt").symlink_to("/etc/passwd")
    snapshot(workspace)
    (workspace / SUBMISSION / "data.txt").unlink()
    (workspace / SUBMISSION / "submission.toml").write_text("name = ")
    [linked, broken] = states(workspace, tmp_path)
    assert linked.submission is None and "symbolic link: data.txt" in (linked.error or "")
    assert broken.submission is None and broken.state == WORKING_TREE and "not valid TOML" in (broken.error or "")
    (workspace / SUBMISSION / "data.txt").symlink_to("/etc/passwd")
    with pytest.raises(StateError, match="symbolic link"):
        copy_folder(workspace / SUBMISSION, tmp_path / "copy", SUBMISSION)


def test_reading_a_hostile_workspace_runs_none_of_its_commands(workspace, tmp_path):
    """A workspace's git config and hooks run commands for whoever runs git in it: the grade reads a clone."""
    trap = tmp_path / "trap-sprung"
    git(workspace, "config", "core.fsmonitor", f"touch {trap}; false")
    hooks = workspace / ".git" / "hooks"
    for hook in ("post-checkout", "reference-transaction", "pre-auto-gc"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {trap}\n")
        (hooks / hook).chmod(0o755)
    edit(workspace, "a")
    subprocess.run(["git", "status"], cwd=workspace, capture_output=True)
    assert trap.exists(), "the trap does not work: this test would prove nothing"
    trap.unlink()
    assert [s.submission is not None for s in states(workspace, tmp_path, every=0)] == [True]
    assert not trap.exists()


def test_the_content_hash_is_of_the_files_alone(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "__pycache__").mkdir(parents=True)
        (tmp_path / name / "train.py").write_text("x = 1\n")
        (tmp_path / name / "__pycache__" / "train.pyc").write_bytes(os.urandom(8))
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b")
    (tmp_path / "b" / "train.py").write_text("x = 2\n")
    assert content_hash(tmp_path / "a") != content_hash(tmp_path / "b")


def test_a_crafted_tree_cannot_write_outside_the_states_folder(workspace, tmp_path):
    """git's plumbing accepts a tree entry named '..'; the grade refuses the state instead of following it."""

    def plumbing(*args: str, stdin: str = "") -> str:
        done = subprocess.run(["git", *args], cwd=workspace, input=stdin, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    mine = plumbing("ls-tree", "HEAD:submissions/mine")
    escape = plumbing("hash-object", "-w", "--stdin", stdin="written outside\n")
    tree = plumbing("mktree", stdin=f"{mine}\n100644 blob {escape}\t..\n")
    submissions = plumbing("mktree", stdin=f"040000 tree {tree}\tmine\n")
    root = "\n".join(line for line in plumbing("ls-tree", "HEAD").splitlines() if not line.endswith("\tsubmissions"))
    top = plumbing("mktree", stdin=f"{root}\n040000 tree {submissions}\tsubmissions\n")
    message = "crafted\n\nLoopbench-Snapshot: check\nLoopbench-Folder: submissions/mine\n"
    commit = plumbing("-c", "user.name=x", "-c", "user.email=x@y", "commit-tree", top, "-p", "HEAD", "-m", message)
    plumbing("update-ref", "HEAD", commit)
    found = states(workspace, tmp_path, every=1)
    crafted = next(s for s in found if s.state == commit)
    assert crafted.submission is None and "leads outside" in (crafted.error or "")
    assert not any(p.name == ".." or p.read_bytes() == b"written outside\n" for p in tmp_path.rglob("*") if p.is_file())
