"""Plain-text and JSON views of what the harness knows: the workloads table."""

from __future__ import annotations

from harness.flops import run_flops
from harness.spec import load_workload, n_params, workload_names


def workload_rows() -> list[dict]:
    rows = []
    for name in workload_names():
        wl = load_workload(name)
        task = wl.task()
        rows.append(
            {
                "name": wl.name,
                "description": wl.description,
                **wl.model.model_dump(),
                "batch_size": task.batch_size,
                "steps": task.steps,
                "audit_every": task.audit_every,
                "params": n_params(task),
                "tokens": task.steps * task.batch_size * task.ctx_len,
                "flops": run_flops(task),
                "budget": wl.budget.model_dump(),
            }
        )
    return rows


def workloads_text(rows: list[dict]) -> str:
    head = f"{'name':<10} {'T':>4} {'C':>4} {'L':>3} {'H':>3} {'B':>3} {'steps':>6} {'params':>9} {'tokens':>9} {'GFLOP':>8}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['name']:<10} {r['ctx_len']:>4} {r['d_model']:>4} {r['n_layer']:>3} {r['n_head']:>3} {r['batch_size']:>3} "
            f"{r['steps']:>6} {r['params']:>9,} {r['tokens']:>9,} {r['flops'] / 1e9:>8.1f}"
        )
    return "\n".join(lines)
