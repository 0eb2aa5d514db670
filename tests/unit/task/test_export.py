"""`loopbench task export`: a workspace holds the allow-list and nothing of the project's answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib

import pytest

from harness.contract.spec import load_workload
from harness.contract.submission import MANIFEST, load_submission
from harness.task.export import export_workspace
from harness.task.marker import MARKER, parse_marker
from tests.helpers import PROJECT, assert_one_line_error, copied_answers, forbidden_files, invoke

ALLOWED = {
    ".gitignore",
    MARKER,
    "BRIEF.md",
    "README.md",
    "reference_loop/submission.toml",
    "reference_loop/train.py",
    "submissions/mine/submission.toml",
    "submissions/mine/train.py",
}
POINTERS = (
    "tests/",
    "docs/",
    "bench/",
    "pytest bench",
    "LEADERBOARD",
    "leaderboard",
    "roofline",
    "AGENT_TASK",
    "ladder",
    "champion",
)
"""What the workspace's texts must not point at: the project's answers, notes and records."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    target = tmp_path_factory.mktemp("export") / "T"
    result = invoke("task", "export", target, "--workload", "standard", "--variants", "2", "--json")
    assert result.exit_code == 0, result.output
    return target, json.loads(result.stdout)


def tracked(folder) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=folder, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def test_the_workspace_holds_exactly_the_allow_list(workspace):
    target, payload = workspace
    marker = parse_marker((target / MARKER).read_text())
    assert marker is not None and marker.headline == ["standard"] and len(marker.public_variants) == 2
    expected = ALLOWED | {"workloads/tiny.toml", "workloads/standard.toml"} | set(marker.public_variants)
    on_disk = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert on_disk == expected == tracked(target) == set(payload["files"])
    log = subprocess.run(["git", "log", "--format=%H"], cwd=target, capture_output=True, text=True, check=True)
    assert log.stdout.split() == [payload["commit"]], "one commit: the export"


def test_nothing_in_the_workspace_comes_from_an_answer_or_a_note(workspace):
    target, _ = workspace
    forbidden = forbidden_files()
    shipped = {p.parent.name for p in (PROJECT / "submissions").glob("*/submission.toml")}
    assert shipped and forbidden["answers"] and forbidden["notes"], "the project's answers were not found"
    assert copied_answers(target) == []
    for text in ("BRIEF.md", "README.md", "submissions/mine/submission.toml"):
        body = (target / text).read_text()
        assert not [p for p in POINTERS + tuple(shipped) if p in body], f"{text} points at the project's answers"


def test_the_check_finds_a_copied_answer_even_reformatted(workspace, tmp_path):
    """The content check can fail: an answer's file, copied whole or with its white space changed, is found."""
    target, _ = workspace
    copy = tmp_path / "T"
    shutil.copytree(target, copy)
    answer = next(p for p in forbidden_files()["answers"] if p.name == "train.py")
    shutil.copyfile(answer, copy / "submissions" / "mine" / "helper.py")
    (copy / "notes.py").write_text("\n".join("    " + line.strip() for line in answer.read_text().splitlines()))
    findings = copied_answers(copy)
    assert any("helper.py is a copy of" in f for f in findings), findings
    assert any(f.startswith("notes.py shares") for f in findings), findings


def test_the_starting_submission_is_the_reference_with_a_filled_manifest(workspace):
    target, _ = workspace
    mine = load_submission(target / "submissions" / "mine")
    assert mine.manifest.kind == "agent" and mine.manifest.entrypoint == "train.py:train"
    assert (target / "submissions/mine/train.py").read_bytes() == (PROJECT / "reference_loop/train.py").read_bytes()
    assert "BRIEF.md" in (target / "submissions/mine" / MANIFEST).read_text()


def test_the_workloads_load_and_the_variants_differ_in_every_size(workspace):
    target, _ = workspace
    standard = load_workload(target / "workloads" / "standard.toml")
    assert standard == load_workload("standard")
    marker = parse_marker((target / MARKER).read_text())
    assert marker is not None
    for path in marker.public_variants:
        variant = load_workload(target / path)
        raw = tomllib.loads((target / path).read_text())
        assert raw["name"] == variant.name and variant.optim == standard.optim
        sizes = lambda w: (w.model.ctx_len, w.model.d_model, w.model.n_layer, w.model.n_head, w.train.batch_size)  # noqa: E731
        assert all(a != b for a, b in zip(sizes(variant), sizes(standard), strict=True))


def test_a_taken_folder_is_one_line_and_nothing_is_left_behind(tmp_path):
    taken = tmp_path / "T"
    taken.mkdir()
    (taken / "x").write_text("mine")
    assert_one_line_error(invoke("task", "export", taken), "already exists")
    assert [p.name for p in tmp_path.iterdir()] == ["T"] and [p.name for p in taken.iterdir()] == ["x"]
    assert_one_line_error(invoke("task", "export", tmp_path / "U", "--workload", "nope"), "unknown workload")
    assert_one_line_error(invoke("task", "export", tmp_path / "U", "--workload", "a/b.toml"), "shipped workload")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T"]


def test_an_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    import harness.task.export as export

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_git", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_workspace(tmp_path / "T", [load_workload("tiny")])
    assert list(tmp_path.iterdir()) == []
