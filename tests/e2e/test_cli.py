"""The command line, used as a person would: exit codes, one-line errors, JSON for programs."""

import json

import pytest

from tests.helpers import assert_one_line_error, invoke


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
        (lambda t: t.replace("steps = 20\n", ""), "train.steps: Field required"),
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
