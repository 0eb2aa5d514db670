"""What a run leaves behind is recognisably the harness's and its owner's: folders and cgroups of a scorer
that is gone are removed; those of a live one never are."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from harness.trial import cgroups
from harness.trial.folder import FOLDER_PREFIX, OWNER_FILE, sweep_stale_folders
from harness.trial.processes import owner_alive, owner_token

DEAD = "999999999.1"
"""A token no process can have (no such pid)."""


def test_an_owner_token_names_a_live_process_and_not_a_reused_pid():
    token = owner_token()
    assert owner_alive(token)
    pid, _, ticks = token.partition(".")
    assert not owner_alive(f"{pid}.{int(ticks) + 1}"), "a pid with another start time is another process"
    assert not owner_alive(DEAD) and not owner_alive("garbage")


def make_folder(owner: str | None) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps({"owner": owner}))
    return folder


def test_stale_folders_are_removed_and_live_or_unknown_ones_kept():
    dead, live, unknown = make_folder(DEAD), make_folder(owner_token()), make_folder(None)
    try:
        sweep_stale_folders()
        assert not dead.exists()
        assert live.exists(), "a live scorer's folder was removed"
        assert unknown.exists(), "a folder without an owner file is not recognisably ours"
    finally:
        for folder in (dead, live, unknown):
            if folder.exists():
                for f in folder.iterdir():
                    f.unlink()
                folder.rmdir()


def cgroups_here() -> bool:
    if os.geteuid() != 0:
        return False
    probe = cgroups.TrialCgroup.create("probe", sorted(os.sched_getaffinity(0))[:1], 2**30)
    if probe is not None:
        probe.remove()
    return probe is not None


needs_cgroups = pytest.mark.skipif(not cgroups_here(), reason="no cgroups to make here")


@needs_cgroups
def test_a_cgroup_counts_limits_and_is_swept_only_when_its_owner_is_gone():
    group = cgroups.TrialCgroup.create("unit", sorted(os.sched_getaffinity(0))[:1], 256 * 2**20)
    assert group is not None
    try:
        assert group.procs() == [] and group.cpu_seconds() == 0.0 and not group.oom_killed()
        cgroups.sweep_stale()
        assert all(d.exists() for d in group.dirs.values()), "a live owner's cgroup was swept"
        renamed = {}
        for controller, folder in group.dirs.items():  # pretend its owner died
            target = folder.with_name(f"{cgroups.PREFIX}{DEAD}-unit")
            folder.rename(target)
            renamed[controller] = target
        assert cgroups.sweep_stale() >= 1
        assert not any(d.exists() for d in renamed.values())
    finally:
        group.remove()
