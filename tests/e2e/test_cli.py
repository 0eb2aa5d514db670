"""The command line, used as a person would: exit codes, one-line errors, JSON for programs."""

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from tests.helpers import PROJECT, assert_one_line_error, invoke, make_record


def test_workloads_json_lists_sizes_params_tokens_and_flops():
    result = invoke("workloads", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"tiny", "standard", "large"} <= set(rows)
    for row in rows.values():
        for key in ("ctx_len", "d_model", "n_layer", "n_head", "batch_size", "steps", "params", "tokens", "flops"):
            assert row[key] > 0
    assert rows["large"]["d_model"] > rows["standard"]["d_model"]
    assert rows["large"]["ctx_len"] > rows["standard"]["ctx_len"]


def test_reference_on_tiny_reports_losses_and_time():
    result = invoke("reference", "--workload", "tiny", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["steps"] == 20
    assert out["last_loss"] < out["first_loss"]
    assert 0 < out["final_eval_loss"] < out["first_loss"]
    assert out["seconds"] > 0


def test_reference_text_output_names_the_numbers():
    result = invoke("reference", "--workload", "tiny")
    assert result.exit_code == 0
    assert "held-out loss" in result.stdout and "->" in result.stdout


def test_machine_json_has_the_gemm_rate():
    result = invoke("machine", "--cores", "1", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["gemm_gflops"] > 0 and info["cores"] == 1 and info["cpu_model"]


def test_an_unknown_workload_is_one_line(tmp_path):
    assert_one_line_error(invoke("reference", "--workload", "nope"), "unknown workload 'nope'")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t: t.replace("d_model = 32", "d_model = -4"), "model.d_model"),
        (lambda t: t.replace("steps = 20\n", ""), "missing train.steps"),
        (lambda t: t.replace("n_head = 2", "n_head = 3"), "not a multiple of n_head"),
        (lambda t: t.replace("lr = 3e-3", 'lr = "fast"'), "optim.lr"),
        (lambda t: t + "\nsurprise = 1\n", "surprise"),
        (lambda t: t.replace("[model]", "[model"), "not valid TOML"),
    ],
)
def test_a_bad_workload_file_is_one_line(tmp_path, edit, fragment):
    from harness.contract.spec import WORKLOAD_DIR

    bad = tmp_path / "bad.toml"
    bad.write_text(edit((WORKLOAD_DIR / "tiny.toml").read_text()))
    assert_one_line_error(invoke("reference", "--workload", str(bad)), fragment)


def test_a_missing_workload_file_is_one_line(tmp_path):
    assert_one_line_error(invoke("reference", "--workload", str(tmp_path / "gone.toml")), "not found")


def test_a_short_corpus_is_one_line(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abc")
    assert_one_line_error(invoke("reference", "--workload", "tiny", "--corpus", str(short)), "too short")


def test_a_binary_corpus_is_one_line(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\xfe" * 500)
    assert_one_line_error(invoke("reference", "--workload", "tiny", "--corpus", str(blob)), "not UTF-8")


def test_any_text_file_can_be_the_corpus(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    result = invoke("reference", "--workload", "tiny", "--corpus", str(text), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["last_loss"] > 0


# ---------------------------------------------------------------- mistakes: one line, at once, never a traceback

BAD_INVOCATIONS = [
    ("reference", "--seed", "-1"),
    ("reference", "--seed", "many"),
    ("reference", "--workload", "tiny", "--corpus", "."),
    ("check", "reference_loop", "--seed", "-1"),
    ("check", "reference_loop", "--cores", "0"),
    ("check", "reference_loop", "--cores", "-1"),
    ("check", "reference_loop", "--cores", "4096"),
    ("check", "reference_loop", "--memory", "0.5M"),
    ("check", "reference_loop", "--timeout", "0"),
    ("check", "reference_loop", "--timeout", "-3"),
    ("check", "reference_loop", "--max-size", "huge"),
    ("check", "reference_loop", "--executor", "slurm"),
    ("check", "reference_loop", "--address", "head:6379"),
    ("check", "reference_loop", "--workload", "nope"),
    ("check", "reference_loop", "--bogus"),
    ("check",),
    ("check", "pyproject.toml"),
    ("score",),
    ("score", "reference_loop", "--trials", "0"),
    ("score", "reference_loop", "--results", "pyproject.toml"),
    ("machine", "--cores", "0"),
    ("machine", "--cores", "-1"),
    ("machine", "--cores", "4096"),
    ("init", "../escape"),
    ("init", "x", "--kind", "robot"),
    ("leaderboard", "--results", "pyproject.toml"),
    ("report", "pyproject.toml"),
    ("schema", "everything"),
    ("no-such-command",),
]


@pytest.mark.parametrize("args", BAD_INVOCATIONS, ids=" ".join)
def test_every_mistake_is_one_line_and_exit_code_2(args):
    assert_one_line_error(invoke(*args))


@pytest.mark.parametrize(
    "args",
    [
        ("reference", "--seed", "-1"),
        ("check", "reference_loop", "--seed", "-1"),
        ("check", "reference_loop", "--cores", "0"),
        ("check", "nowhere"),
        ("check", "reference_loop", "--workload", "nope"),
        ("score", "reference_loop", "--trials", "0"),
        ("score", "reference_loop", "--memory", "lots"),
        ("machine", "--cores", "-1"),
    ],
    ids=" ".join,
)
def test_a_mistake_is_reported_before_torch_is_imported(args):
    code = (
        "import sys\n"
        "from harness.cli import app\n"
        f"try:\n    app({list(args)!r})\nexcept SystemExit as end:\n    code = end.code\n"
        "print('torch' in sys.modules, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, check=True)
    assert out.stdout.split() == ["False", "2"], out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")


def test_messages_say_what_is_wrong(tmp_path):
    assert_one_line_error(invoke("reference", "--workload", "tiny", "--corpus", tmp_path), "is a folder")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(invoke("leaderboard", "--results", tmp_path / "file"), "is a file, not a folder")
    assert_one_line_error(invoke("score", "reference_loop", "--results", tmp_path / "file"), "is a file, not a folder")
    (tmp_path / "train.py").write_text("def train(task, params, batches, log):\n    pass\n")
    (tmp_path / "submission.toml").write_text('name = "x"\nkind = "agent"\n')
    assert_one_line_error(invoke("check", tmp_path), "missing system, authors, date and description")


def test_a_truncated_and_a_binary_record_say_different_things(tmp_path):
    from harness.records.store import record_bytes

    body = record_bytes(make_record())
    (tmp_path / "truncated.json").write_bytes(body[: len(body) // 2])
    (tmp_path / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "bare.json").write_text('{"version": 1}')
    assert_one_line_error(invoke("report", tmp_path / "truncated.json"), "is not JSON")
    assert_one_line_error(invoke("report", tmp_path / "binary.json"), "is not text")
    assert_one_line_error(invoke("report", tmp_path / "bare.json"), "missing created, submission, baseline")
    for name in ("truncated", "binary", "bare"):
        assert "validation error" not in invoke("report", tmp_path / f"{name}.json").stderr


def test_help_names_each_value_and_no_flag_takes_one():
    commands = ["check", "score", "init", "reference", "machine", "leaderboard", "report", "workloads", "schema"]
    for command in [[name] for name in commands] + [["task", "export"], ["task", "grade"], ["task", "timeline"]]:
        result = invoke(*command, "--help")
        assert result.exit_code == 0, result.output
        options = result.stdout.partition("Options:")[2]  # an argument shows its type (<path>); an option its metavar
        assert not re.search(r"<[a-z]", options) and "list[" not in result.stdout, result.stdout
    init_help = invoke("init", "--help").stdout
    assert "--author NAME" in init_help and "--json  " in init_help
    assert "SUBMISSION <path>..." in invoke("score", "--help").stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"loopbench {importlib.metadata.version('loopbench')}"


def test_no_command_prints_the_help():
    result = invoke()
    assert result.exit_code == 0 and "Commands:" in result.stdout and "check" in result.stdout
