"""The sealed task through the command line: export, work inside the workspace, grade from outside it."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.records import store
from harness.task.history import content_hash
from tests.helpers import PROJECT, assert_one_line_error, copied_answers, invoke, make_record


def git_log(folder: Path) -> list[str]:
    done = subprocess.run(["git", "log", "--format=%s"], cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_check_and_score_work_inside_an_export(tmp_path, monkeypatch):
    workspace = tmp_path / "T"
    assert invoke("task", "export", workspace, "--workload", "tiny").exit_code == 0
    monkeypatch.chdir(workspace)
    checked = invoke("check", "submissions/mine", "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["verdict"] == "accepted", "stdout stays one JSON document"
    assert "committed to the task's history (accepted" in checked.stderr
    scored = invoke("score", "submissions/mine", "--workload", "tiny", "--trials", "1", "--busy", "record")
    assert scored.exit_code == 0, scored.output
    assert len(list((workspace / "results" / "local" / "runs").glob("*.json"))) == 1
    log = git_log(workspace)
    assert len(log) == 3 and log[0].startswith("score submissions/mine: accepted (")
    assert log[1].startswith("check submissions/mine: accepted (") and log[2].startswith("loopbench task export")
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status == "", "the records of score stay out of the history"


def states_of(graded_attempt) -> list[dict]:
    return graded_attempt["grade"]["states"]


def records_of(graded_attempt) -> list:
    return [rec for _, rec in store.load_records(graded_attempt["results"])]


def test_grade_rescores_each_state_on_the_headline_and_held_out_variants(graded_attempt):
    grade, workspace = graded_attempt["grade"], graded_attempt["workspace"]
    workloads = grade["workloads"]
    assert workloads[0]["name"] == "tiny" and len(workloads) == 3
    assert all(w["variant_seed"] is not None and w["name"].startswith("tiny-variant-") for w in workloads[1:])
    snapshot, final = states_of(graded_attempt)
    assert snapshot["state"] != "working-tree" and not snapshot["final"] and snapshot["index"] == 1
    assert (
        final["state"] == "working-tree" and final["final"] and final["elapsed_seconds"] >= snapshot["elapsed_seconds"]
    )
    assert final["content_hash"] == content_hash(workspace / "submissions" / "mine")
    assert set(snapshot["verdicts"].values()) == {"accepted"}
    speedups = list(snapshot["speedups"].values())
    assert snapshot["score"] == pytest.approx(math.exp(sum(map(math.log, speedups)) / 3))
    records = records_of(graded_attempt)
    assert len(records) == 6 == len(grade["records"])
    for rec in records:
        assert rec.submission.kind == "agent" and rec.attempt is not None and rec.attempt.id == grade["attempt"]
        assert rec.attempt.headline == "tiny" and rec.attempt.content_hash in {
            s["content_hash"] for s in grade["states"]
        }
        assert (rec.attempt.variant_seed is None) == (rec.workload.name == "tiny")
    assert Path(grade["timeline"]).is_file()


def test_a_submission_that_hard_codes_the_headlines_sizes_is_rejected_on_the_variants(graded_attempt):
    final = states_of(graded_attempt)[-1]
    assert final["verdicts"]["tiny"] == "accepted", "on the headline's own sizes it trains the task"
    assert [v for name, v in final["verdicts"].items() if name != "tiny"] == ["rejected", "rejected"]
    assert final["score"] is None and graded_attempt["grade"]["score"] is None
    page = Path(graded_attempt["grade"]["timeline"]).read_text()
    rejected = [r for r in records_of(graded_attempt) if r.verdict == "rejected"]
    assert "rejected" in page and any(f"on {r.workload.name}" in page for r in rejected)


def test_the_timeline_is_the_same_bytes_from_the_same_records(graded_attempt, tmp_path):
    attempt = graded_attempt["grade"]["attempt"]
    pages = []
    for name in ("a.html", "b.html"):
        done = invoke("task", "timeline", attempt, "--results", graded_attempt["results"], "--out", tmp_path / name)
        assert done.exit_code == 0, done.output
        pages.append((tmp_path / name).read_bytes())
    assert pages[0] == pages[1] == Path(graded_attempt["grade"]["timeline"]).read_bytes()
    text = pages[0].decode()
    assert "<script" not in text and "human reference 4x (published, different harness)" in text
    assert "no record of the ladder" in text


def test_the_ladder_is_drawn_from_its_records(graded_attempt, tmp_path):
    ladder = tmp_path / "ladder"
    rung = make_record("numpy-vectorised", system="loopbench")
    rung.submission = rung.submission.model_copy(update={"kind": "baseline"})
    rung.baseline = rung.baseline.model_copy(update={"name": "reference", "kind": "baseline"})
    rung.speedup = 6.25
    store.write_record(rung, ladder)
    attempt = graded_attempt["grade"]["attempt"]
    out = tmp_path / "t.html"
    done = invoke("task", "timeline", attempt, "--results", graded_attempt["results"], "--ladder", ladder, "--out", out)
    assert done.exit_code == 0, done.output
    assert "numpy-vectorised 6.2x" in out.read_text() and "no record of the ladder" not in out.read_text()


def test_the_leaderboard_shows_graded_attempts_with_their_elapsed_time(graded_attempt, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(graded_attempt["results"], results)
    done = invoke("leaderboard", "--results", results, "--json")
    assert done.exit_code == 0, done.output
    board = json.loads(done.stdout)
    [row] = board["attempts"]
    final = states_of(graded_attempt)[-1]
    assert row["attempt"] == graded_attempt["grade"]["attempt"] and row["elapsed_seconds"] == final["elapsed_seconds"]
    assert row["accepted"] is False and row["variants"] == 2 and row["states"] == 2
    assert board["sections"] == [], "the attempt's records are not ordinary scores: no group of their own"
    markdown = (results / "LEADERBOARD.md").read_text()
    assert "## The sealed task: graded attempts" in markdown and row["attempt"] in markdown


def test_grading_what_is_not_a_workspace_is_one_line(tmp_path):
    assert_one_line_error(invoke("task", "grade", tmp_path, "--workload", "tiny"), "not a task workspace")
    workspace = tmp_path / "T"
    assert invoke("task", "export", workspace, "--workload", "tiny").exit_code == 0
    shutil.rmtree(workspace / ".git")
    assert_one_line_error(invoke("task", "grade", workspace, "--workload", "tiny"), "cannot read the history")
    assert_one_line_error(invoke("task", "timeline", "0123456789ab", "--results", tmp_path), "no runs/ folder")


def test_an_installed_loopbench_exports_and_checks_from_its_own_files(tmp_path):
    """Not the project's tree: a plain (not editable) install holds the brief, the reference and the workloads,
    and none of the project's answers."""
    pytest.importorskip("setuptools")
    installed = tmp_path / "installed"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            installed,
            PROJECT,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the float64 oracle is a torch GPT, as the ports are: that much the installed judge must hold
    assert [f for f in copied_answers(installed) if not f.startswith("harness/judge/oracle.py shares")] == []
    env = {**os.environ, "PYTHONPATH": str(installed)}
    command = [sys.executable, "-m", "harness.cli"]
    workspace = tmp_path / "T"
    exported = subprocess.run(
        [*command, "task", "export", workspace, "--workload", "tiny"], env=env, capture_output=True
    )
    assert exported.returncode == 0, exported.stderr
    checked = subprocess.run(
        [*command, "check", "submissions/mine"], env=env, cwd=workspace, capture_output=True, text=True
    )
    assert checked.returncode == 0 and "ACCEPTED" in checked.stdout, checked.stdout + checked.stderr
    assert "snapshot " in checked.stderr
