"""`loopbench init`: from an empty folder to a submission that `check` accepts, as a submitter would do it."""

import datetime as dt
import json
import tomllib

from harness.contract.submission import REFERENCE_DIR, load_submission
from tests.helpers import assert_one_line_error, assert_trains_the_task, invoke


def manifest(folder) -> dict:
    return tomllib.loads((folder / "submission.toml").read_text())


def test_init_copies_the_reference_with_a_filled_manifest_and_says_what_next(tmp_path):
    into = tmp_path / "submissions"
    result = invoke("init", "mine", "--into", into)
    assert result.exit_code == 0, result.output
    mine = into / "mine"
    assert (mine / "train.py").read_text() == (REFERENCE_DIR / "train.py").read_text()
    assert sorted(p.name for p in mine.iterdir()) == ["submission.toml", "train.py"]
    m = manifest(mine)
    assert m["name"] == "mine" and m["kind"] == "agent" and m["system"] and m["authors"] == []
    assert m["date"] == dt.date.today().isoformat() and m["entrypoint"] == "train.py:train" and m["description"]
    assert load_submission(mine).name == "mine"
    lines = result.stdout.splitlines()
    assert f"loopbench check {mine}" in lines[-2] and f"loopbench score {mine}" in lines[-1]
    assert "AGENT_TASK.md" in result.stdout


def test_init_from_another_submission_with_its_own_manifest(tmp_path):
    into = tmp_path / "submissions"
    assert invoke("init", "first", "--into", into, "--description", 'keeps\nthe "maths"').exit_code == 0
    (into / "first" / "kernels.py").write_text("FAST = True\n")
    result = invoke(
        "init",
        "second",
        "--from",
        "first",
        "--into",
        into,
        "--kind",
        "human",
        "--system",
        "ada",
        "--author",
        "Ada L.",
        "--author",
        "Bo",
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (
        out["name"] == "second"
        and out["kind"] == "human"
        and out["files"] == ["kernels.py", "submission.toml", "train.py"]
    )
    assert out["next"] == [f"loopbench check {into / 'second'}", f"loopbench score {into / 'second'}"]
    m = manifest(into / "second")
    assert (m["kind"], m["system"], m["authors"]) == ("human", "ada", ["Ada L.", "Bo"])
    assert "first" in m["description"] and manifest(into / "first")["description"] == 'keeps\nthe "maths"'


def test_a_submission_made_by_init_passes_the_regression_check(tmp_path, tiny_setting):
    into = tmp_path / "submissions"
    assert invoke("init", "mine", "--into", into).exit_code == 0
    assert assert_trains_the_task(into / "mine", tiny_setting).submission == "mine"


def test_a_name_that_exists_is_one_line_and_leaves_the_folder_alone(tmp_path):
    into = tmp_path / "submissions"
    assert invoke("init", "mine", "--into", into).exit_code == 0
    (into / "mine" / "train.py").write_text("# my work\n")
    assert_one_line_error(invoke("init", "mine", "--into", into), "already exists")
    assert (into / "mine" / "train.py").read_text() == "# my work\n"


def test_a_name_that_is_no_folder_name_is_one_line(tmp_path):
    into = tmp_path / "submissions"
    for bad in ("my entry", "../escape", ".hidden", "a/b", "x" * 81):
        assert_one_line_error(invoke("init", bad, "--into", into), "not a valid submission name")
    assert not into.exists() or not any(into.iterdir())


def test_a_source_that_is_not_a_submission_is_one_line(tmp_path):
    into = tmp_path / "submissions"
    assert_one_line_error(invoke("init", "mine", "--from", "nowhere", "--into", into), "not found")
    assert_one_line_error(invoke("init", "mine", "--from", tmp_path, "--into", into), "has no submission.toml")
    assert not (into / "mine").exists()
