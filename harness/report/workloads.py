"""The workloads table, as text and as JSON rows: sizes, parameters, tokens and FLOPs of a whole run."""

from __future__ import annotations

from typing import Any

from harness.contract.spec import load_workload, n_params, workload_names
from harness.scoring.flops import run_flops


def workload_rows() -> list[dict[str, Any]]:
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


def workloads_text(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'name':<10} {'T':>4} {'C':>4} {'L':>3} {'H':>3} {'B':>3} "
        f"{'steps':>6} {'params':>9} {'tokens':>9} {'GFLOP':>8}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['name']:<10} {r['ctx_len']:>4} {r['d_model']:>4} {r['n_layer']:>3} {r['n_head']:>3} "
            f"{r['batch_size']:>3} "
            f"{r['steps']:>6} {r['params']:>9,} {r['tokens']:>9,} {r['flops'] / 1e9:>8.1f}"
        )
    return "\n".join(lines)
