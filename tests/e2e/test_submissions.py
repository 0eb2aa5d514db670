"""Every submission still computes the task's training: the reference and each folder under submissions/.

A folder under submissions/ with a submission.toml is found here by itself, so a new or changed
submission is checked with no extra line: one trial on the tiny workload through the same path as
`loopbench check` (an isolated worker, then the float64 audit of every segment). The reference is
always among the cases, so the suite never comes up empty.
"""

from __future__ import annotations

import shutil

import pytest

from harness.contract.submission import REFERENCE_DIR
from harness.dev.scaffold import find_submissions
from tests.helpers import PROJECT, assert_trains_the_task

FOLDERS = [REFERENCE_DIR, *find_submissions(PROJECT / "submissions")]
"""assert_trains_the_task uses a fixed seed, 11, so that a failure here can be reproduced with
`loopbench check FOLDER --seed 11`."""


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_submission_computes_the_task(folder, tiny_setting):
    result = assert_trains_the_task(folder, tiny_setting)
    assert result.trials[0].submission.eval_loss > 0


@pytest.mark.parametrize(
    "original, broken",
    [
        pytest.param("lr = learning_rate(task, t)", "lr = 1.02 * learning_rate(task, t)", id="learning-rate-2%-high"),
        pytest.param(
            "decay = task.weight_decay if params[name].ndim == 2 else 0.0", "decay = 0.0", id="no-weight-decay"
        ),
    ],
)
def test_the_regression_check_rejects_a_broken_submission(tmp_path, tiny_setting, original, broken):
    """The reference, copied and changed in one line of its optimiser, no longer passes the suite's check."""
    copy = tmp_path / "broken"
    shutil.copytree(REFERENCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / "train.py").read_text()
    assert source.count(original) == 1, f"the reference no longer has the line this test breaks: {original}"
    (copy / "train.py").write_text(source.replace(original, broken))
    with pytest.raises(AssertionError, match="broken is rejected: segment 0") as failure:
        assert_trains_the_task(copy, tiny_setting)
    assert "hint: " in str(failure.value) and "optimiser" in str(failure.value), "the failure names no likely cause"


def test_the_native_champion_trains_the_task_with_its_avx2_code(tmp_path, tiny_setting):
    """The champion compiles AVX-512 or AVX2 code by the CPU's flags; on a machine with AVX-512 the AVX2 path is
    otherwise never run here, so a copy that ignores the avx512f flag must be accepted too (the records machine
    may have AVX2 only)."""
    copy = tmp_path / "champion-avx2"
    shutil.copytree(PROJECT / "submissions" / "champion", copy, ignore=shutil.ignore_patterns("__pycache__", "build"))
    source = (copy / "train.py").read_text()
    line = "    flags = cpu_flags()\n"
    assert source.count(line) == 1, "the champion no longer picks its code by cpu_flags(): update this test"
    (copy / "train.py").write_text(source.replace(line, '    flags = cpu_flags() - {"avx512f"}\n'))
    assert_trains_the_task(copy, tiny_setting)
