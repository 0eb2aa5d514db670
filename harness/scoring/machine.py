"""The machine: its CPU, the cores of a budget, and its measured float32 matrix-multiply rate (the ceiling)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from harness.contract.cores import available_cpus, budget_cpus, thread_env

GEMM_SIZES = (256, 512, 1024)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _measure_here(seconds_per_size: float = 0.6) -> float:
    """Best float32 GEMM rate over a few square sizes, in GFLOP/s, in this process's threads and CPUs."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    best = 0.0
    for n in GEMM_SIZES:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        for _ in range(3):
            torch.mm(a, b, out=out)
        deadline = time.perf_counter() + seconds_per_size
        while time.perf_counter() < deadline:
            reps = max(1, int(2e8 / (2 * n**3)))
            start = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            rate = 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
            best = max(best, rate)
    return best


def measure_gemm_gflops(cores: int) -> float:
    """The float32 GEMM rate under a budget of `cores`, measured in a fresh child process."""
    cpus = budget_cpus(cores)
    env = {**os.environ, **thread_env(cores)}
    code = (
        f"import os, sys; os.sched_setaffinity(0, {set(cpus)}); "
        "from harness.scoring.machine import _measure_here; print(_measure_here())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def describe(cores: int, measure: bool = True) -> dict[str, Any]:
    """The machine as a record states it: CPU model, cores in the budget, measured GEMM rate."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "hostname": platform.node(),
        "cpus_available": len(available_cpus()),
        "cores": cores,
        "cpus": budget_cpus(cores),
        "python": platform.python_version(),
    }
    if measure:
        info["gemm_gflops"] = round(measure_gemm_gflops(cores), 2)
    return info


def versions() -> dict[str, Any]:
    """Library versions and the git state of the harness, so a record is a reproducible artifact."""
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("loopbench", "numpy", "torch", "numba", "pydantic"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        out["git_commit"] = head.stdout.strip() if head.returncode == 0 else None
        status = git("status", "--porcelain", "--untracked-files=no")
        out["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"], out["git_dirty"] = None, None
    return out


if __name__ == "__main__":  # pragma: no cover - a debugging aid
    print(json.dumps(describe(int(sys.argv[1]) if len(sys.argv) > 1 else 2)))
