"""What shorter segments cost the audit: one honest run (the torch float32 port) with a checkpoint after every
step, audited twice in this process, once with every checkpoint (audit_every 1) and once with every fifth
(audit_every 5, the same run's checkpoints after steps 4, 9, ...); the same steps are replayed either way.

    python bench/audit_cost.py --workloads tiny standard
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.calibrate_tolerances import _run_folder
from harness.contract.log import MemoryLog
from harness.contract.spec import load_workload
from harness.judge import audit
from harness.scoring import data


def audit_seconds(workload: str, repeats: int) -> dict[int, float]:
    task = load_workload(workload).task().model_copy(update={"audit_every": 1})
    params, batches = data.init_params(task, 0), data.make_batches(data.load_corpus(), task, 0)
    log = MemoryLog()
    _run_folder("tests/honest/torch_float32", None, task, params, batches, log)
    best: dict[int, float] = {}
    for _ in range(repeats):
        for every in (1, 5):
            sub = task.model_copy(update={"audit_every": every})
            due = set(sub.checkpoint_steps())
            checkpoints = [cp for cp in log.checkpoints if cp.step in due]
            start = time.perf_counter()
            verdict = audit.audit_run(sub, params, batches, log.losses, checkpoints)
            best[every] = min(best.get(every, float("inf")), time.perf_counter() - start)
            assert verdict.accepted, verdict.reason
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["tiny", "standard"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'workload':<9} {'audit_every 5: s':>17} {'audit_every 1: s':>17} {'ratio':>6}")
    for wl in args.workloads:
        best = audit_seconds(wl, args.repeats)
        print(f"{wl:<9} {best[5]:>17.2f} {best[1]:>17.2f} {best[1] / best[5]:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
