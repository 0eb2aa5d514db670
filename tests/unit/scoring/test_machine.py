"""The machine's GEMM probe runs in a child process that the caller's working directory cannot reach into."""

from __future__ import annotations

import pytest

from harness.errors import LoopbenchError
from harness.scoring import machine


def test_a_module_in_the_working_directory_cannot_shadow_what_the_probe_imports(tmp_path, monkeypatch):
    for name in ("timeit", "typing_extensions", "numpy"):
        (tmp_path / f"{name}.py").write_text("raise RuntimeError('a module of the working directory ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert machine.measure_gemm_gflops(1) > 0


def test_a_probe_that_fails_is_one_line_not_a_traceback(monkeypatch):
    monkeypatch.setattr(machine.sys, "executable", "/bin/false")
    with pytest.raises(LoopbenchError, match="the float32 GEMM measurement failed: exit code 1"):
        machine.measure_gemm_gflops(1)


def test_the_ceiling_is_the_best_repeat_so_a_busy_stretch_cannot_lower_it(monkeypatch):
    # one busy stretch slowed three of five repeats: a median would put the ceiling at 173 and every share up
    repeats = [164.57, 167.48, 173.38, 198.33, 201.83]
    monkeypatch.setattr(machine, "_measure_gemm", lambda cores, n: (repeats, 0.0))
    monkeypatch.setattr(machine, "fma_peak_gflops", lambda cores, flags: 232.0)
    info = machine.describe(1)
    assert info["gemm_gflops"] == 201.83
    assert info["gemm_repeats"] == repeats and info["gemm_spread"] == round(machine.spread(repeats), 4)
