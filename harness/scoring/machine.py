"""The machine: its CPU, and its measured float32 matrix-multiply rate (the ceiling), with the spread of repeats.

The ceiling is measured in a fresh child process under the budget's CPUs and threads, isolated from the
caller's working folder (`python -I`, so that no local file can shadow a library module). It is the best of
several repeats, each the best rate of short runs over a few square sizes: the ceiling is what the machine can
do, and another job on the machine only ever makes a repeat slower (a median let one busy stretch lower the
ceiling and so raise every share of it: 173 instead of 202-207 GFLOP/s, a champion's 68% read as 82%). The
spread of the repeats says whether the machine was busy while it measured. The GEMM probe is a short
measurement of one size, taken in this process around each trial.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from harness.contract.cores import available_cpus, budget_cpus, thread_env
from harness.errors import LoopbenchError
from harness.scoring.peak import fma_peak_gflops

GEMM_SIZES = (256, 512, 1024)
REPEATS = 5
SECONDS_PER_SIZE = 0.15
PROBE_SIZE = 512
PROBE_SECONDS = 0.15
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTOR_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in VECTOR_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _rate(n: int, seconds: float) -> float:
    """The best float32 GEMM rate of size n over `seconds` of short runs, in GFLOP/s, in this process's threads."""
    import torch

    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best, reps = 0.0, max(1, int(2e8 / (2 * n**3)))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def _measure_here(repeats: int = REPEATS) -> list[float]:
    """Each repeat's best rate over the sizes, in this process's CPUs (what the child process prints)."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return [max(_rate(n, SECONDS_PER_SIZE) for n in GEMM_SIZES) for _ in range(repeats)]


def measure_gemm(cores: int, repeats: int = REPEATS) -> list[float]:
    """The float32 GEMM rate of each repeat under a budget of `cores`, measured in a fresh, isolated process."""
    return _measure_gemm(cores, repeats)[0]


def _measure_gemm(cores: int, repeats: int) -> tuple[list[float], float]:
    """Each repeat's rate, and the share of the budget's core-seconds other processes took meanwhile."""
    from harness.trial.disturbance import cpu_sample

    cpus = budget_cpus(cores)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # no variable of the caller's steers it
    env |= {**thread_env(cores), "PYTHONPATH": PROJECT_ROOT}
    code = (
        f"import os, json; os.sched_setaffinity(0, {set(cpus)}); "
        f"from harness.scoring.machine import _measure_here; print(json.dumps(_measure_here({repeats})))"
    )
    # -s -P and cwd /: neither the caller's folder nor a user site can shadow a module the measurement imports
    command = [sys.executable, "-s", "-P", "-c", code]
    before, children, start = cpu_sample(cpus), _children_cpu(), time.perf_counter()
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd="/")
    except subprocess.CalledProcessError as err:
        last = ((err.stderr or "").strip().splitlines() or [f"exit code {err.returncode}"])[-1]
        raise LoopbenchError(f"the float32 GEMM measurement failed: {last}") from None
    after, wall = cpu_sample(cpus), time.perf_counter() - start
    others = (after.busy_s - before.busy_s) - (_children_cpu() - children) - (after.own_s - before.own_s)
    return [float(v) for v in json.loads(out.stdout.strip().splitlines()[-1])], max(others, 0.0) / (cores * wall)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def measure_gemm_gflops(cores: int) -> float:
    return max(measure_gemm(cores))


def spread(repeats: list[float]) -> float:
    median = statistics.median(repeats)
    return (max(repeats) - min(repeats)) / median if median > 0 else float("inf")


def probe_gflops(cores: int) -> float:
    """A short GEMM in this process, under the budget's CPUs and threads: is the machine still as fast?"""
    import torch

    before_cpus, before_threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, budget_cpus(cores))
    torch.set_num_threads(cores)
    try:
        return _rate(PROBE_SIZE, PROBE_SECONDS)
    finally:
        torch.set_num_threads(before_threads)
        os.sched_setaffinity(0, before_cpus)


def describe(cores: int, measure: bool = True) -> dict[str, Any]:
    """The machine as a record states it: CPU model and flags, cores in the budget, the measured GEMM rate."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "hostname": platform.node(),
        "cpus_available": len(available_cpus()),
        "cores": cores,
        "cpus": budget_cpus(cores),
        "python": platform.python_version(),
        "cpu_flags": cpu_flags(),
    }
    if measure:
        repeats, others_share = _measure_gemm(cores, REPEATS)
        info["gemm_gflops"] = round(max(repeats), 2)
        info["gemm_repeats"] = [round(r, 2) for r in repeats]
        info["gemm_spread"] = round(spread(repeats), 4)
        info["gemm_others_share"] = round(others_share, 4)
        info["fma_peak_gflops"] = fma_peak_gflops(cores, info["cpu_flags"])
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

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", PROJECT_ROOT, *args], capture_output=True, text=True, timeout=10)

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
