"""Checking and scoring through the command line, as a submitter and a maintainer would."""

import dataclasses
import json
import shutil
import subprocess

import pytest

from harness.contract.submission import load_submission, reference_submission
from harness.records.store import load_records
from harness.scoring.results import check
from harness.scoring.trials import local_node
from tests.helpers import HONEST, PROJECT, assert_one_line_error, invoke


def test_check_accepts_the_reference_and_a_float32_port():
    for folder in ("reference_loop", HONEST):
        result = invoke("check", folder, "--json")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        run = out["trials"][0]["submission"]
        assert out["verdict"] == "accepted" and run["seconds"] > 0 and run["cpu_seconds"] >= 0
        assert out["command"] == "check" and "speedup" not in out and out["trials"][0]["baseline"] is None


def test_score_writes_one_record_per_submission(tmp_path):
    result = invoke(
        "score", HONEST, "--workload", "tiny", "--trials", "2", "--results", tmp_path, "--busy", "record", "--json"
    )
    assert result.exit_code == 0, result.output
    [summary] = json.loads(result.stdout)
    for key in ("submission", "verdict", "reason", "speedup", "speedup_ci", "x_human", "ceiling_fraction", "trials"):
        assert key in summary
    assert summary["command"] == "score"
    assert summary["verdict"] == "accepted" and summary["speedup"] > 0
    lo, hi = summary["speedup_ci"]
    assert lo <= summary["speedup"] <= hi
    assert summary["x_human"] == pytest.approx(summary["speedup"] / 4)
    assert len(summary["trials"]) == 2 and summary["trials"][0]["seed"] != summary["trials"][1]["seed"]
    for t in summary["trials"]:
        assert t["baseline"]["seconds"] > 0 and t["submission"]["seconds"] > 0 and t["submission"]["cpu_seconds"] >= 0
    [(path, record)] = load_records(tmp_path)
    assert str(path) == summary["record"]
    assert record.machine.gemm_gflops and record.corpus.sha256 and record.versions.torch
    assert record.submission.file_hashes["train.py"]
    assert all(t.submission.isolation.cpus for t in record.trials)
    # one machine timed every trial: each names it, and the record's machine is that one
    assert {t.node for t in record.trials} == {local_node()} == {t["node"] for t in summary["trials"]}
    assert record.nodes == {} and all(t.retries == [] for t in record.trials)


def test_score_exits_1_when_a_submission_is_rejected(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(HONEST, broken)
    (broken / "train.py").write_text("def train(task, params, batches, log):\n    raise RuntimeError('boom')\n")
    result = invoke(
        "score",
        broken,
        "--workload",
        "tiny",
        "--trials",
        "1",
        "--results",
        tmp_path / "res",
        "--busy",
        "record",
        "--json",
    )
    assert result.exit_code == 1
    [summary] = json.loads(result.stdout)
    assert summary["verdict"] == "rejected" and "boom" in summary["reason"] and summary["speedup"] is None


def test_a_time_below_the_physical_floor_is_implausible(tiny_setting):
    # pretend the machine multiplies a million times slower: an honest time is then "too fast"
    slow_machine = dataclasses.replace(
        tiny_setting, machine={**tiny_setting.machine, "gemm_gflops": 1e-6, "fma_peak_gflops": 1e-6}
    )
    result = check(reference_submission(), slow_machine)
    assert result.verdict == "rejected" and result.check == "implausible"
    assert "physical floor" in result.reason


def test_the_record_says_what_isolation_took_effect(tiny_setting):
    iso = check(load_submission(HONEST), tiny_setting).isolation
    assert iso.cpus and iso.process_cleanup


@pytest.mark.parametrize(
    "manifest, fragment",
    [
        ('name = "x"\nkind = "robot"\nsystem = "s"\nauthors = []\ndate = "2026-01-01"\ndescription = ""\n', "kind"),
        (
            'name = "x"\nkind = "agent"\nsystem = "s"\nauthors = []\ndate = "2026-01-01"\ndescription = ""\n'
            'entrypoint = "gone.py:train"\n',
            "gone.py not found",
        ),
        (
            'name = "x"\nkind = "agent"\nsystem = "s"\nauthors = []\ndate = "2026-01-01"\ndescription = ""\n'
            'entrypoint = "train"\n',
            "entrypoint",
        ),
        ('name = "x"\nkind = "agent"\n', "missing system, authors, date and description"),
        ('name = "x" kind', "not valid TOML"),
    ],
)
def test_a_bad_manifest_is_one_line(tmp_path, manifest, fragment):
    (tmp_path / "train.py").write_text("def train(task, params, batches, log):\n    pass\n")
    (tmp_path / "submission.toml").write_text(manifest)
    assert_one_line_error(invoke("check", tmp_path), fragment)


def test_a_missing_folder_or_manifest_is_one_line(tmp_path):
    assert_one_line_error(invoke("check", tmp_path / "nowhere"), "not found")
    assert_one_line_error(invoke("check", tmp_path), "has no submission.toml")


def test_bad_budget_flags_are_one_line():
    assert_one_line_error(invoke("check", "reference_loop", "--memory", "lots"), "not a size")
    assert_one_line_error(invoke("check", "reference_loop", "--cores", "64"), "offers")


def test_schema_prints_the_record_schema_and_those_of_check_and_score():
    result = invoke("schema")
    assert result.exit_code == 0
    found = json.loads(result.stdout)
    assert [found[k]["title"] for k in ("record", "check", "score")] == ["RunRecord", "CheckOutput", "ScoreOutput"]
    one = invoke("schema", "record")
    assert one.exit_code == 0 and json.loads(one.stdout) == found["record"]


def test_check_and_score_print_the_same_shape_of_trial(tmp_path):
    """`check --json` and `score --json` share their parts: a trial's submission run reads the same in both."""
    checked = json.loads(invoke("check", HONEST, "--json").stdout)
    scored = json.loads(
        invoke(
            "score", HONEST, "--workload", "tiny", "--trials", "1", "--results", tmp_path, "--busy", "record", "--json"
        ).stdout
    )[0]
    assert set(checked["trials"][0]) == set(scored["trials"][0])
    assert (
        set(checked["trials"][0]["submission"])
        == set(scored["trials"][0]["submission"])
        == set(scored["trials"][0]["baseline"])
    )
    shared = set(checked) & set(scored)
    assert {"submission", "workload", "verdict", "reason", "check", "hint", "ceiling_fraction", "trials"} <= shared


def test_score_writes_into_an_untracked_folder_by_default_and_names_every_record(tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(HONEST, broken)
    (broken / "train.py").write_text("def train(task, params, batches, log):\n    raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("score", broken, "--workload", "tiny", "--trials", "1", "--busy", "record")
    assert result.exit_code == 1, result.output
    [(path, _)] = load_records(tmp_path / "results" / "local")
    assert "REJECTED" in result.stdout and f"record {path.relative_to(tmp_path)}" in result.stdout
    assert "\r" not in result.stderr and len(result.stderr.splitlines()) <= 6, result.stderr


def test_the_default_results_folder_is_ignored_by_git():
    if not (PROJECT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "check-ignore", "-q", "results/local/runs/x.json"], cwd=PROJECT, capture_output=True, check=False
    )
    assert out.returncode == 0, "results/local/ is not ignored: a personal record could be committed"


def test_one_trial_gives_no_interval(tmp_path):
    result = invoke("score", HONEST, "--workload", "tiny", "--trials", "1", "--results", tmp_path, "--busy", "record")
    assert result.exit_code == 0, result.output
    assert "no interval" in result.stdout and "95% CI" not in result.stdout
    [(_, record)] = load_records(tmp_path)
    assert record.speedup and record.speedup_ci is None


def test_check_shows_its_phases_in_a_log_without_carriage_returns():
    result = invoke("check", HONEST)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("measuring this machine's float32 GEMM rate") and len(lines) <= 3, lines
    assert any("setup" in line and "steps" in line for line in lines), lines
