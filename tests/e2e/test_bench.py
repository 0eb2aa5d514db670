"""The step microbenchmarks under bench/ run, and stay out of the default test run."""

import subprocess
import sys
import tomllib

from tests.helpers import PROJECT


def pytest_in_project(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_the_default_run_collects_no_benchmark():
    # what `python -m pytest` collects without arguments: tests/ only (bench/ would time every submission)
    options = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests"]


def test_the_step_benchmark_of_the_reference_runs_on_tiny():
    # --benchmark-disable: the case runs its step once, untimed, which is enough to know that it works
    assert "1 passed" in pytest_in_project("bench", "--benchmark-disable", "-k", "tiny and reference_loop")
