"""What one more checkpoint costs inside the clock: the copy of params, m and v (float32) into fresh shared memory.

The log area gives every checkpoint its own slot of shared memory, pre-faulted before the clock (MAP_POPULATE),
so inside the clock a checkpoint costs its copy alone, as here; the slots cost memory (float64 room for three
copies of the parameters each) and pre-faulting time before the clock. Best of several repeats (a shared
machine only ever measures slower):

    python bench/checkpoint_cost.py
"""

from __future__ import annotations

import mmap
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from harness.contract.spec import load_workload, n_params


def copy_seconds(n: int, repeats: int = 7) -> float:
    """Best time to copy three float32 arrays of n elements into a fresh, pre-faulted anonymous shared mapping."""
    source = [np.random.default_rng(k).standard_normal(n).astype(np.float32) for k in range(3)]
    best = float("inf")
    for _ in range(repeats):
        area = mmap.mmap(-1, 3 * n * 8, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        target = np.frombuffer(area, np.float32, 3 * n)
        start = time.perf_counter()
        for k, a in enumerate(source):
            target[k * n : (k + 1) * n] = a
        best = min(best, time.perf_counter() - start)
        del target
        area.close()
    return best


def main() -> None:
    print(
        f"{'workload':<9} {'params':>9} {'ms per checkpoint':>18} {'steps':>6} {'every 5: ms':>12} {'every 1: ms':>12}"
    )
    for name in ("tiny", "standard", "large"):
        task = load_workload(name).task()
        ms = copy_seconds(n_params(task)) * 1e3
        every5 = len(task.model_copy(update={"audit_every": 5}).checkpoint_steps())
        print(
            f"{name:<9} {n_params(task):>9,} {ms:>18.3f} {task.steps:>6} {ms * every5:>12.1f} {ms * task.steps:>12.1f} "
            f"{task.steps * 3 * n_params(task) * 8 / 2**20:>19.0f}"
        )


if __name__ == "__main__":
    main()
