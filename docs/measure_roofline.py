"""Where the champion's time goes: phase split, FLOPs, bytes and distance from the ceiling (docs/roofline.md).

    python docs/measure_roofline.py [--workloads standard large] [--runs 5] [--json]

Runs submissions/champion (the training step in C) in this process, under the budget's cores and thread
variables, on the real data of seed 1. Each run is timed whole and split into the phases the C step clocks on
its first thread: the forward and backward passes of that thread's share of the batch, the wait for the other
threads at the barrier, and the optimiser (summing the threads' gradients, the norm, AdamW, the transposed
weight copies). One more run, with the step's profile switched on, gives the first thread's CPU seconds per
kind of work (linear layers, attention, element-wise, the tied head). Figures are medians over the runs.
The FLOPs per phase come from harness.scoring.flops.step_flops; the bytes are the compulsory traffic estimated below.
Run it on an idle machine: anything else on the cores distorts every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.contract.cores import budget_cpus, thread_env
from harness.contract.log import discarding_log
from harness.contract.spec import load_workload, n_params
from harness.sandbox.loader import import_entry
from harness.scoring import data
from harness.scoring.flops import step_flops
from harness.scoring.machine import measure_gemm_gflops

CHAMPION = ROOT / "submissions" / "champion"
PHASES = ("passes", "wait", "optimiser")


def traffic_bytes(task) -> dict[str, int]:
    """Compulsory float32 traffic of one step, by phase.

    Forward: every saved activation written once and read once (per layer: residual in and out, two
    LayerNorm outputs, qkv, attention output, fc pre-activation, sigmoid, GELU output = 20 N C elements),
    plus the logits (N V) written, read and overwritten by their gradient. Backward: each activation read
    once more and one gradient of each written and read. Optimiser: parameters, gradients and both moments
    read, and parameters and moments written (7 per parameter), plus the gradient norm (1 more read).
    """
    N, C, V, L = task.batch_size * task.ctx_len, task.d_model, task.vocab_size, task.n_layer
    acts = L * 20 * N * C
    return {
        "passes": 4 * (5 * acts + 5 * N * V),
        "optimiser": 4 * 8 * n_params(task),
    }


def measure(workload: str, runs: int, ceiling: float) -> dict:
    wl = load_workload(workload)
    task = wl.task()
    corpus = data.load_corpus(None)
    batches, params = data.make_batches(corpus, task, 1), data.init_params(task, 1)
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # as the worker does; an earlier run may have changed it
    champion = import_entry(CHAMPION, "train.py")
    champion.prepare(task)
    trainer = champion._trainer[task]
    walls, splits = [], []
    for _ in range(runs):
        trainer.times(reset=True)
        start = time.perf_counter()
        champion.train(task, params, batches, discarding_log())
        walls.append(time.perf_counter() - start)
        splits.append(trainer.times(reset=True))
    wall = statistics.median(walls)
    phases = {p: statistics.median(s[p] for s in splits) for p in PHASES}
    phases["outside the steps"] = max(0.0, wall - sum(phases.values()))
    flops = step_flops(task)
    kinds = ("matmul", "attention", "elementwise")
    per_phase_flops = {
        "passes": task.steps * sum(flops[f"{d}_{k}"] for d in ("forward", "backward") for k in kinds),
        "optimiser": task.steps * flops["optimiser"],
    }
    per_phase_bytes = {k: task.steps * v for k, v in traffic_bytes(task).items()}
    total_flops = sum(per_phase_flops.values())
    return {
        "workload": workload,
        "runs": runs,
        "wall_seconds": wall,
        "wall_seconds_all": walls,
        "phase_seconds": phases,
        "phase_flops": per_phase_flops,
        "phase_bytes": per_phase_bytes,
        "run_flops": total_flops,
        "ceiling_gflops": ceiling,
        "floor_seconds": total_flops / (ceiling * 1e9),
        "ceiling_fraction": total_flops / (ceiling * 1e9) / wall,
        "top_kernels": top_kernels(champion, task, params, batches),
    }


def top_kernels(champion, task, params, batches) -> list[dict]:
    """The first thread's CPU seconds per kind of work over one run, from the C step's own profile."""
    trainer = champion._trainer[task]
    trainer.lib.ctx_profile(trainer.ctx, 1)
    trainer.times(reset=True)
    champion.train(task, params, batches, discarding_log())
    seconds = trainer.times(reset=True)
    trainer.lib.ctx_profile(trainer.ctx, 0)
    total = sum(seconds[k] for k in champion.KERNELS) or 1.0
    rows = [
        {"kernel": k, "calls": task.steps, "self_cpu_ms": 1e3 * seconds[k], "share": seconds[k] / total}
        for k in champion.KERNELS
    ]
    return sorted(rows, key=lambda r: r["self_cpu_ms"], reverse=True)


def markdown(result: dict) -> str:
    r = result
    lines = [
        f"### {r['workload']}: {r['wall_seconds']:.3f} s per run (median of {r['runs']}), "
        f"{100 * r['ceiling_fraction']:.1f}% of the {r['ceiling_gflops']:.0f} GFLOP/s ceiling "
        f"(floor {r['floor_seconds']:.3f} s, {r['wall_seconds'] / r['floor_seconds']:.1f}x above it)",
        "",
        "| phase | seconds | share | GFLOP | GB (est.) | GFLOP/s | share of ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, sec in r["phase_seconds"].items():
        fl = r["phase_flops"].get(phase)
        by = r["phase_bytes"].get(phase)
        rate = fl / sec / 1e9 if fl and sec > 0 else None
        lines.append(
            f"| {phase} | {sec:.3f} | {100 * sec / r['wall_seconds']:.1f}% | "
            + (f"{fl / 1e9:.2f}" if fl else "")
            + " | "
            + (f"{by / 1e9:.2f}" if by else "")
            + " | "
            + (f"{rate:.1f}" if rate else "")
            + " | "
            + (f"{100 * rate / r['ceiling_gflops']:.1f}%" if rate else "")
            + " |"
        )
    lines += [
        "",
        "| kind of work (CPU of the first thread, one run) | steps | ms | share |",
        "|---|---:|---:|---:|",
    ]
    for k in r["top_kernels"]:
        lines.append(f"| `{k['kernel']}` | {k['calls']} | {k['self_cpu_ms']:.1f} | {100 * k['share']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["standard", "large"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ceiling = measure_gemm_gflops(args.cores)
    os.environ.update(thread_env(args.cores))
    os.sched_setaffinity(0, budget_cpus(args.cores))
    import torch

    torch.set_num_threads(args.cores)
    results = [measure(w, args.runs, ceiling) for w in args.workloads]
    print(json.dumps(results, indent=2) if args.json else "\n\n".join(markdown(r) for r in results))


if __name__ == "__main__":
    main()
