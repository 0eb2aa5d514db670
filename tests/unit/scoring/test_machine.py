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
