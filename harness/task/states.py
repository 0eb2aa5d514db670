"""Which states of an attempt are graded: every K-th distinct snapshot and the final state, each copied out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.contract.submission import Submission, load_submission
from harness.errors import LoopbenchError
from harness.task.history import Clone, Snapshot, StateError, content_hash, copy_folder, newest_change

WORKING_TREE = "working-tree"


@dataclass
class State:
    """One graded state of the attempt's submission folder, copied into a folder of the evaluator's."""

    index: int
    state: str
    """The snapshot commit, or WORKING_TREE for the folder as the attempt left it."""
    elapsed: float
    final: bool
    folder: Path
    content_hash: str
    submission: Submission | None
    error: str | None
    """Why the state cannot be run, where it cannot (then `submission` is None)."""


def _distinct(clone: Clone, snapshots: list[Snapshot], folder: str) -> list[Snapshot]:
    """Snapshots whose folder differs from the one before (a check run twice on the same files is one state)."""
    kept: list[Snapshot] = []
    last: str | None = None
    for snap in snapshots:
        tree = (clone.text("rev-parse", "--verify", "--quiet", f"{snap.commit}:{folder}") or "").strip()
        if tree != last or not tree:
            kept.append(snap)
        last = tree
    return kept


def _elapsed(snapshots: list[Snapshot], started: float) -> list[float]:
    """Each snapshot's time since the export, never earlier than the snapshot before it."""
    out, latest = [], 0.0
    for snap in snapshots:
        latest = max(latest, snap.time - started)
        out.append(latest)
    return out


def _loaded(folder: Path) -> tuple[Submission | None, str | None]:
    try:
        return load_submission(folder), None
    except LoopbenchError as err:
        return None, f"not a submission: {err}"


def _materialise(folder: Path, fill: Callable[[Path], None], state: str, elapsed: float, final: bool) -> State:
    """`fill` writes the state's files into `folder`; a state that cannot be written or loaded says why."""
    try:
        fill(folder)
    except StateError as err:
        folder.mkdir(parents=True, exist_ok=True)
        return State(0, state, elapsed, final, folder, content_hash(folder), None, str(err))
    submission, error = _loaded(folder)
    return State(0, state, elapsed, final, folder, content_hash(folder), submission, error)


def graded_states(
    clone: Clone, workspace: Path, folder: str, started: dt.datetime, every: int, where: Path
) -> list[State]:
    """Every `every`-th distinct snapshot (none when 0) and the final state, oldest first, numbered from 1.

    The final state is the folder as the working tree holds it. Where its files are those of the last
    snapshot, that snapshot is the final state and keeps its time; otherwise the final state's time is that
    of its newest file, never earlier than the last snapshot's.
    """
    origin = started.timestamp()
    snapshots = _distinct(clone, clone.snapshots(folder), folder)
    times = _elapsed(snapshots, origin)

    def snapshot(i: int) -> State:
        commit = snapshots[i].commit
        return _materialise(
            where / f"snapshot-{i + 1}", lambda f: clone.extract(commit, folder, f), commit, times[i], False
        )

    final = _materialise(where / "final", lambda f: copy_folder(workspace / folder, f, folder), WORKING_TREE, 0, True)
    chosen = {i for i in range(len(snapshots)) if every and (i + 1) % every == 0}
    last = snapshot(len(snapshots) - 1) if snapshots else None
    last_is_final = last is not None and (last.content_hash, last.error) == (final.content_hash, final.error)
    if last_is_final:
        chosen.add(len(snapshots) - 1)
    states = [last if last is not None and i == len(snapshots) - 1 else snapshot(i) for i in sorted(chosen)]
    if last_is_final:
        states[-1].final = True
    else:
        final.elapsed = max(times[-1] if times else 0.0, newest_change(workspace / folder) - origin, 0.0)
        states.append(final)
    for index, state in enumerate(states, start=1):
        state.index = index
    return states
