"""`loopbench task export`: a fresh git repository for one attempt, built from an allow-list of what it may hold.

Nothing is copied from the project's tree: every file comes from the installed package (the brief, the
reference, the workloads) or is written here (the workspace's README, the starting submission's manifest,
the public variants, the marker), so no shipped submission, honest port, attack, record or note can get in.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.contract.spec import WORKLOAD_DIR, Workload, load_workload
from harness.contract.submission import MANIFEST, REFERENCE_DIR
from harness.dev.scaffold import init_submission
from harness.errors import LoopbenchError
from harness.scoring.machine import versions
from harness.task.marker import MARKER, SUBMISSION, Marker
from harness.task.snapshot import IDENTITY
from harness.task.variants import draw_variants, workload_toml

DEFAULT_CHECK_WORKLOAD = "tiny"
"""The workload `loopbench check` runs by default (its `--workload`): its file is in every workspace."""

PACKAGE = Path(__file__).resolve().parent
REFERENCE_FILES = ("train.py", "submission.toml")
GITIGNORE = "__pycache__/\n*.pyc\n/results/\n.benchmarks/\n"
"""`loopbench score` inside the workspace writes its records under results/: the attempt's own, never snapshotted."""


@dataclass
class Exported:
    path: Path
    marker: Marker
    commit: str
    files: list[str]
    warnings: list[str] = field(default_factory=list)


def _fill(template: str, marker: Marker) -> str:
    headline = ", ".join(f"`{name}`" for name in marker.headline)
    variants = (
        "\n".join(f"- `{path}`" for path in marker.public_variants)
        or "- no public variant in this workspace: make your own by changing the sizes in a copy of the headline's file"
    )
    return (
        template.replace("{{headline}}", headline)
        .replace("{{first_headline}}", marker.headline[0])
        .replace("{{public_variants}}", variants)
        .replace("{{submission}}", marker.submission)
    )


def _workload_file(workload: Workload) -> str:
    """The shipped file's own text for a shipped workload; otherwise the workload written out."""
    shipped = WORKLOAD_DIR / f"{workload.name}.toml"
    if shipped.is_file() and load_workload(shipped) == workload:
        return shipped.read_text(encoding="utf-8")
    return workload_toml(workload)


def _write_files(root: Path, headlines: list[Workload], variants: list[Workload], marker: Marker) -> None:
    (root / "BRIEF.md").write_text(_fill((PACKAGE / "BRIEF.md").read_text(encoding="utf-8"), marker), "utf-8")
    (root / "README.md").write_text(_fill((PACKAGE / "WORKSPACE.md").read_text(encoding="utf-8"), marker), "utf-8")
    (root / "reference_loop").mkdir()
    for name in REFERENCE_FILES:
        shutil.copyfile(REFERENCE_DIR / name, root / "reference_loop" / name)
    new = init_submission(
        Path(SUBMISSION).name,
        root=root / Path(SUBMISSION).parent,
        kind="agent",
        system="unknown",
        description="Started from the naive reference: say what this submission changes and why it is faster.",
    )
    manifest = new.path / MANIFEST
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("AGENT_TASK.md", "BRIEF.md"), "utf-8")
    (root / "workloads").mkdir()
    for workload in [load_workload(DEFAULT_CHECK_WORKLOAD), *headlines]:  # check's default, then the headlines
        (root / "workloads" / f"{workload.name}.toml").write_text(_workload_file(workload), "utf-8")
    for workload in variants:
        (root / "workloads" / f"{workload.name}.toml").write_text(workload_toml(workload), "utf-8")
    (root / ".gitignore").write_text(GITIGNORE, "utf-8")
    (root / MARKER).write_text(marker.text(), "utf-8")


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *IDENTITY, *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise LoopbenchError(f"git is needed to export a task workspace: {err}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise LoopbenchError(f"git {args[0]} failed in the new workspace: {last}")
    return done.stdout.strip()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _check_target(target: Path) -> list[str]:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LoopbenchError(f"{target} already exists and is not an empty folder: choose another")
    around = next((p for p in target.resolve().parents if (p / ".git").exists()), None)
    if around is None:
        return []
    return [
        f"{target} is inside the git work tree {around}: an attempt working in it can read everything around "
        "it; give the attempt a folder of its own"
    ]


def export_workspace(target: Path, headlines: list[Workload], public_variants: int = 0) -> Exported:
    """A new workspace at `target` (absent or an empty folder), committed; nothing is left behind on failure."""
    if not headlines:
        raise LoopbenchError("a task needs at least one headline workload")
    warnings = _check_target(target)
    version = versions()
    variants = [v for w in headlines for v in draw_variants(w, public_variants, secrets.randbits(63), "public")]
    marker = Marker(
        exported=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        headline=[w.name for w in headlines],
        public_variants=[f"workloads/{v.name}.toml" for v in variants],
        loopbench_version=version.get("loopbench"),
        loopbench_commit=version.get("git_commit"),
        loopbench_dirty=version.get("git_dirty"),
    )
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.resolve().parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a workspace is an ordinary folder
        _write_files(staging, headlines, variants, marker)
        _git(staging, "init", "--quiet", "--initial-branch", "main")
        _git(staging, "add", "--all")
        _git(staging, "commit", "--quiet", "--no-verify", "--message", f"loopbench task export ({marker.exported})")
        commit = _git(staging, "rev-parse", "HEAD")
        files = _git(staging, "ls-files").splitlines()
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(target, marker, commit, files, warnings)
